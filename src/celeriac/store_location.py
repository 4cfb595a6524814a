"""Where the embedded SQLite broker and result store live when no URL is configured.

A worker and its clients must find the same file without being told where it is, from
whatever directory each was started in. So the file is placed beside the module that
creates the app, in a hidden ``.celeriac`` folder (``proj/.celeriac/celeriac.sqlite3``)
that also holds SQLite's ``-wal`` and ``-shm`` files and the wake-up folders, and that
tells git to ignore it. An app made where there is no source file (an interactive
session, ``python -c``) takes the current directory in place of the module's. When that
folder cannot be written (a package installed read-only), a per-user data folder is
used, with one file per app name: ``$XDG_DATA_HOME/celeriac/<main>.sqlite3``
(``~/.local/share`` by default; ``~/Library/Application Support`` on macOS,
``%LOCALAPPDATA%`` on Windows).

Reading a frame and touching the file system happen once per app, when its broker URL is
first needed without a configured one.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from types import FrameType
from typing import Final

__all__ = ["FILE_NAME", "FOLDER_NAME", "default_sqlite_url", "defining_file", "user_data_folder"]

FOLDER_NAME: Final = ".celeriac"
FILE_NAME: Final = "celeriac.sqlite3"
_GITIGNORE: Final = "# Made by celeriac: the files of the embedded broker and result store.\n*\n"
_PACKAGE_FOLDER: Final = os.path.dirname(os.path.abspath(__file__)) + os.sep


def defining_file(app: object) -> str | None:
    """Return the source file whose code created ``app``, None if it has none.

    That is the first caller outside celeriac and outside the ``__init__`` of ``app``
    itself (a subclass of the app class defined elsewhere); a frame whose file does not
    exist (``<stdin>``, ``<string>``) gives None.
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        # Absolute now: a relative name (``python tasks.py``) is relative to today's cwd.
        path = os.path.abspath(code.co_filename)
        is_app_init = code.co_name == "__init__" and frame.f_locals.get("self") is app
        if not path.startswith(_PACKAGE_FOLDER) and not is_app_init:
            return path if os.path.isfile(path) else None
        frame = frame.f_back
    return None


def default_sqlite_url(main: str | None, source_file: str | None) -> str:
    """Return the ``sqlite:///`` URL (an absolute path) of the app's embedded store.

    ``source_file`` is where the app was created (``defining_file``); ``main`` is the
    app's name, which keys the per-user fallback.
    """
    folder = Path(source_file).resolve().parent if source_file else Path.cwd()
    hidden = folder / FOLDER_NAME
    if _is_usable(hidden):
        return f"sqlite:///{hidden / FILE_NAME}"
    fallback = user_data_folder()
    fallback.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", main or "celeriac")
    return f"sqlite:///{fallback / f'{name}.sqlite3'}"


def user_data_folder() -> Path:
    """Return this user's data folder for celeriac, as the platform lays such folders out."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "celeriac"


def _is_usable(folder: Path) -> bool:
    """Make ``folder`` (and its ``.gitignore``) if needed; tell whether files can go in it."""
    try:
        folder.mkdir(exist_ok=True)
        ignore = folder / ".gitignore"
        if not ignore.exists():
            ignore.write_text(_GITIGNORE, encoding="utf-8")
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)
