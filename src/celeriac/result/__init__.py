"""Task results (core layer): what ``delay()``, ``apply()`` and groups hand back.

``AsyncResult`` reads one task's outcome from the result backend, ``EagerResult`` holds
one computed in this process, ``ResultSet`` and ``GroupResult`` wait for many together,
and ``result_from_tuple`` rebuilds any of them from the tuple form that result metas and
saved groups store (wire protocol §7.1). Split in two modules: single results, and sets.
"""

from celeriac.result.async_result import (
    AsyncResult,
    EagerResult,
    ResultBase,
    assert_will_not_block,
)
from celeriac.result.result_set import GroupResult, ResultSet, result_from_tuple

__all__ = [
    "AsyncResult",
    "EagerResult",
    "GroupResult",
    "ResultBase",
    "ResultSet",
    "assert_will_not_block",
    "result_from_tuple",
]
