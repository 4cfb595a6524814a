"""Crontab fields: ``*/15``, ``1,13,30-45``, ``mon-fri``, ``jan-mar`` and the rest (core).

Kept apart from ``schedules.py``, whose ``crontab`` uses them and re-exports Celery's
names (``crontab_parser``, ``ParseException``).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from typing import Final

__all__ = ["Cronspec", "ParseException", "crontab_parser", "expand_cronspec"]

WEEKDAYS: Final = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}
MONTHS: Final = {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}


class ParseException(Exception):
    """A crontab field that cannot be parsed."""


Cronspec = int | str | Iterable[int]


class crontab_parser:
    """Expand one crontab field (``*/15``, ``1,13,30-45``, ``mon-fri``, ``jan-mar``...)
    into the numbers it names, from ``min_`` to ``min_ + max_ - 1``.

    A range whose end comes before its start wraps around (``fri-mon``).
    """

    ParseException = ParseException
    PART = re.compile(r"^(?:(?P<star>\*)|(?P<first>\w+)(?:-(?P<last>\w+))?)(?:/(?P<step>\w*))?$")

    def __init__(self, max_: int = 60, min_: int = 0) -> None:
        self.max_ = max_
        self.min_ = min_

    def parse(self, spec: str) -> set[int]:
        """Return the numbers ``spec`` names."""
        numbers: set[int] = set()
        for part in spec.split(","):
            numbers.update(self._parse_part(part.strip()))
        return numbers

    def _parse_part(self, part: str) -> list[int]:
        match = self.PART.match(part)
        if match is None:
            raise ParseException(f"cannot parse crontab field part {part!r}")
        step_text = match["step"]
        if step_text is not None and not step_text.isdigit():
            raise ParseException(f"{part!r}: the step after '/' must be a number")
        if match["star"]:
            values = list(range(self.min_, self.min_ + self.max_))
        else:
            first = self._number(match["first"])
            if match["last"] is None and step_text is not None:
                raise ParseException(f"{part!r}: a step needs '*' or a range before it")
            last = first if match["last"] is None else self._number(match["last"])
            if last >= first:
                values = list(range(first, last + 1))
            else:
                values = [*range(first, self.min_ + self.max_), *range(self.min_, last + 1)]
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ParseException(f"{part!r}: the step must be at least 1")
        return values[::step]

    def _number(self, text: str) -> int:
        if text.isdigit():
            number = int(text)
        elif text[:3].lower() in MONTHS and self.min_ == 1 and self.max_ == 12:
            number = MONTHS[text[:3].lower()]
        elif text[:3].lower() in WEEKDAYS and self.min_ == 0 and self.max_ == 7:
            number = WEEKDAYS[text[:3].lower()]
        else:
            raise ValueError(f"invalid crontab value {text!r}")
        highest = self.min_ + self.max_ - 1
        if not self.min_ <= number <= highest:
            raise ValueError(f"crontab value {number} is outside {self.min_}-{highest}")
        return number


def expand_cronspec(spec: Cronspec, max_: int, min_: int = 0) -> frozenset[int]:
    """The numbers a crontab field names: an int, a pattern string or an iterable of ints."""
    if isinstance(spec, int):
        numbers = {spec}
    elif isinstance(spec, str):
        numbers = crontab_parser(max_, min_).parse(spec)
    elif isinstance(spec, Iterable):
        numbers = set(spec)
    else:
        raise TypeError(f"a crontab field is an int, a str or numbers, not {type(spec)!r}")
    for number in numbers:
        if not min_ <= number < min_ + max_:
            raise ValueError(f"crontab value {number} is outside {min_}-{min_ + max_ - 1}")
    if not numbers:
        raise ValueError("a crontab field names no value")
    return frozenset(numbers)
