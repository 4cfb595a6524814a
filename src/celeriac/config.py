"""Settings: ``app.conf``, with Celery's names, attribute and mapping access, and checks.

Values for known settings are checked against the table in ``defaults.py`` when they
are set, so a typo'd type fails at configuration time with the setting's name rather
than deep inside a worker. Unknown names are kept as given.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from celeriac._imports import import_from_string
from celeriac.defaults import DEFAULTS
from celeriac.exceptions import ImproperlyConfigured

_DELIVERY_MODES = {"persistent": 2, "transient": 1}
MUTABLE = (dict, list, set)
_BROKER_URLS = ("broker_url", "broker_read_url", "broker_write_url")


def _check(name: str, value: Any) -> Any:
    setting = DEFAULTS.get(name)
    if setting is None or setting.type is None:
        return value
    if name in ("accept_content", "result_accept_content") and isinstance(value, str):
        value = [value]
    if name in _BROKER_URLS and isinstance(value, list | tuple):
        # Celery takes a list of broker URLs for failover; kombu's string form joins them.
        value = ";".join(value)
    expected = setting.type if isinstance(setting.type, tuple) else (setting.type,)
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        names = " or ".join(kind.__name__ for kind in expected)
        raise ImproperlyConfigured(
            f"setting {name!r} takes {names}, not {type(value).__name__} ({value!r})"
        )
    if name == "task_default_delivery_mode" and isinstance(value, str):
        if value not in _DELIVERY_MODES:
            raise ImproperlyConfigured(f"task_default_delivery_mode: unknown mode {value!r}")
        value = _DELIVERY_MODES[value]
    return value


class Settings(MutableMapping[str, Any]):
    """The app's configuration: defaults overlaid by what the user set."""

    def __init__(self, changes: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_changes", {})
        object.__setattr__(self, "_own_defaults", {})
        if changes:
            self.update(changes)

    def __getitem__(self, name: str) -> Any:
        changes: dict[str, Any] = self._changes
        if name in changes:
            return changes[name]
        setting = DEFAULTS.get(name)
        if setting is None:
            raise KeyError(name)
        default = setting.default
        if not isinstance(default, MUTABLE):
            return default
        # This app's own copy, kept so that conf.beat_schedule["x"] = ... sticks.
        own_defaults: dict[str, Any] = self._own_defaults
        if name not in own_defaults:
            own_defaults[name] = copy.deepcopy(default)
        return own_defaults[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._changes[name] = _check(name, value)

    def __delitem__(self, name: str) -> None:
        """Forget what was set or mutated: the setting reads as its default again."""
        found = self._changes.pop(name, None) is not None
        found = self._own_defaults.pop(name, None) is not None or found
        if not found:
            raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        yield from DEFAULTS
        yield from (name for name in self._changes if name not in DEFAULTS)

    def __len__(self) -> int:
        return len(DEFAULTS) + sum(1 for name in self._changes if name not in DEFAULTS)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no setting named {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __repr__(self) -> str:
        return f"<Settings: {len(self._changes)} changed>"

    def changes(self) -> dict[str, Any]:
        """Return the settings that differ from the defaults, mutated defaults included."""
        mutated = {
            name: value
            for name, value in self._own_defaults.items()
            if value != DEFAULTS[name].default
        }
        return {**mutated, **self._changes}

    def without_defaults(self) -> dict[str, Any]:
        """Celery's name for ``changes``, used by ``inspect conf``."""
        return self.changes()

    def setdefault(self, name: str, default: Any = None) -> Any:
        if name not in self._changes and name not in DEFAULTS:
            self[name] = default
        return self[name]

    def load(self, source: Any, *, namespace: str | None = None) -> None:
        """Take settings from a module, class or mapping; with a namespace, ``NS_NAME`` keys."""
        items = source.items() if isinstance(source, Mapping) else vars(source).items()
        prefix = f"{namespace}_" if namespace else ""
        for key, value in items:
            if prefix:
                if not key.startswith(prefix):
                    continue
                key = key[len(prefix) :].lower()
            elif not key.islower() or key.startswith("_"):
                continue
            self[key] = value


def settings_source(obj: Any) -> Any:
    """Resolve ``config_from_object``'s argument: a dotted path, a module, a class or a mapping."""
    if isinstance(obj, str):
        try:
            return import_from_string(obj)
        except ImportError as exc:
            raise ImproperlyConfigured(f"cannot load settings from {obj!r}: {exc}") from exc
    return obj


def settings_module_from_envvar(variable: str) -> str:
    """Return the module path held in an environment variable, or a clear error."""
    value = os.environ.get(variable)
    if not value:
        raise ImproperlyConfigured(
            f"the environment variable {variable!r} is not set: it should name a settings module"
        )
    return value
