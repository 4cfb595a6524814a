"""Celery's ``celery.utils`` import paths, kept for code ported from Celery (compat shim).

``from celeriac.utils import uuid, cached_property`` works as ``from celery.utils import
...`` does; the submodules mirror ``celery.utils.imports`` and ``celery.utils.log``.
"""

from __future__ import annotations

import uuid as _uuid
from functools import cached_property

__all__ = ["cached_property", "uuid"]


def uuid() -> str:
    """Return a new random id as a string, the form task ids take (Celery's ``uuid()``)."""
    return str(_uuid.uuid4())
