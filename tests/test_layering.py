"""The layers of docs/architecture.md, checked: the core imports no edge module.

The core and the services may import the core, the interface modules and the services;
brokers, result stores, the worker, beat and the command line are edges. A scheme table
(``transports/__init__.py``, ``backends/__init__.py``) imports an implementation only
inside the function that builds it, when its URL is used.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "celeriac"
EDGE_PACKAGES = ("celeriac.worker", "celeriac.cli", "celeriac.beat")
# The null result store (no backend configured) counts as part of the backend interface.
INTERFACES = {
    "celeriac.transports",
    "celeriac.transports.base",
    "celeriac.backends",
    "celeriac.backends.base",
    "celeriac.backends.disabled",
}
CORE_PACKAGES = ("celeriac.canvas", "celeriac.result", "celeriac.protocol", "celeriac.events")
EDGE_TOP_LEVEL = {"__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_edge(name: str) -> bool:
    if name in INTERFACES:
        return False
    if name.startswith(("celeriac.transports.", "celeriac.backends.")):
        return True
    return name.startswith(EDGE_PACKAGES) or name.split(".")[-1] in EDGE_TOP_LEVEL


def core_modules() -> list[Path]:
    modules = []
    for path in sorted(SOURCE.rglob("*.py")):
        name = module_name(path)
        top_level = name.count(".") == 1
        if name in INTERFACES:
            continue
        if (top_level and not is_edge(name)) or name.startswith(CORE_PACKAGES):
            modules.append(path)
    return modules


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if is_module(f"{node.module}.{alias.name}")
            )
    return {name for name in names if name.startswith("celeriac")}


def is_module(name: str) -> bool:
    """Tell whether ``celeriac.x.y`` names a module or package of the source tree."""
    path = SOURCE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


@pytest.mark.parametrize("path", core_modules(), ids=module_name)
def test_core_module_imports_no_edge_module(path: Path) -> None:
    edges = sorted(name for name in imported_modules(path) if is_edge(name))

    assert edges == [], f"{module_name(path)} imports edge modules {edges}"


def test_import_celeriac_loads_no_optional_dependency_and_starts_no_thread() -> None:
    program = (
        "import sys, threading, celeriac\n"
        "optional = ['redis', 'amqp', 'psycopg', 'msgpack', 'yaml', 'gevent', 'rich',"
        " 'cryptography']\n"
        "print(sorted(name for name in optional if name in sys.modules))\n"
        "print(threading.active_count())\n"
    )

    completed = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )

    loaded, threads = completed.stdout.splitlines()
    assert loaded == "[]"
    assert threads == "1"
