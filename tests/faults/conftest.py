"""Prints the fault battery's table at the end of a run (see ``tests/faults/battery.py``)."""

from __future__ import annotations

import pytest

from tests.faults.battery import forget_rows, table


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        forget_rows()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = table()
    if lines:
        terminalreporter.section("fault battery")
        for line in lines:
            terminalreporter.write_line(line)
