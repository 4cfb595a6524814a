"""The fault battery's table: each scenario records its row, the session prints them all.

Rows go to a JSON-lines file so that every pytest-xdist worker can add to it; the
controller empties it when the session starts and prints it as a Markdown table at the end
(``tests/faults/conftest.py``), the table the note on the reliability issue repeats.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TABLE = Path(os.environ.get("CELERIAC_BATTERY_TABLE", ".pytest_cache/fault-battery.jsonl"))


def record_row(scenario: str, broker: str, outcome: str, figures: str) -> None:
    """Add one row: the scenario, the broker it ran on, ``ok``/``FAILED`` and what it measured."""
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    row = {"scenario": scenario, "broker": broker, "outcome": outcome, "figures": figures}
    with TABLE.open("a") as sink:
        sink.write(json.dumps(row) + "\n")


def forget_rows() -> None:
    """Start an empty table."""
    TABLE.unlink(missing_ok=True)


def table() -> list[str]:
    """The rows recorded so far as Markdown lines, sorted by scenario then broker."""
    if not TABLE.exists():
        return []
    rows = [json.loads(line) for line in TABLE.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda row: (row["scenario"], row["broker"]))
    lines = ["| scenario | broker | outcome | measured |", "|---|---|---|---|"]
    lines += [
        f"| {row['scenario']} | {row['broker']} | {row['outcome']} | {row['figures']} |"
        for row in rows
    ]
    return lines
