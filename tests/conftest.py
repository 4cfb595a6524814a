"""Fixtures shared by every test directory."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.transports import connect
from celeriac.transports.base import Transport


@pytest.fixture(params=["memory", "sqlite"])
def transport(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Transport]:
    """A real transport of each kind that needs no server: in-process and an SQLite file."""
    if request.param == "memory":
        url = f"memory://{uuid.uuid4().hex}"
    else:
        url = f"sqlite:///{tmp_path}/b.db"
    opened = connect(url)
    yield opened
    opened.close()
