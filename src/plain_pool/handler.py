"""``ConnectionHandler``: thread-local wrappers per alias, plus request hooks.

Why: a wrapper holds one connection and its transaction state, so it must
never be shared between threads; but every thread's wrapper of an alias
must see the same settings (a time-zone change reaches all of them) and
share the same pool. The handler owns one ``SettingsRef`` per alias and a
``threading.local`` of wrappers.

``request_started`` / ``request_finished`` only give back this thread's
connections (``close_if_unusable_or_obsolete``); they never close a pool,
which other threads are using: closing it at one request's end would break
every other thread's checkout in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from plain_pool import pools
from plain_pool.exceptions import ImproperlyConfigured
from plain_pool.replacing import POOL_CLOSE_TIMEOUT
from plain_pool.settings import DatabaseSettings
from plain_pool.wrapper import DatabaseWrapper, SettingsRef


class ConnectionHandler:
    """``handler["default"]`` is this thread's wrapper for the alias."""

    def __init__(
        self,
        databases: Mapping[str, DatabaseSettings | Mapping[str, Any] | str] | None = None,
        *,
        wrapper_class: type[DatabaseWrapper] = DatabaseWrapper,
    ) -> None:
        self.wrapper_class = wrapper_class
        self._refs: dict[str, SettingsRef] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        if databases:
            self.configure(databases)

    def configure(
        self, databases: Mapping[str, DatabaseSettings | Mapping[str, Any] | str]
    ) -> None:
        """Set (or add) aliases; settings are validated now."""
        refs = {alias: SettingsRef(DatabaseSettings.coerce(s)) for alias, s in databases.items()}
        with self._lock:
            for alias, ref in refs.items():
                if alias in self._refs:
                    self._refs[alias].current = ref.current
                else:
                    self._refs[alias] = ref

    def _wrappers(self) -> dict[str, DatabaseWrapper]:
        wrappers = getattr(self._local, "wrappers", None)
        if wrappers is None:
            wrappers = self._local.wrappers = {}
        return wrappers

    def __getitem__(self, alias: str) -> DatabaseWrapper:
        wrappers = self._wrappers()
        wrapper = wrappers.get(alias)
        if wrapper is None:
            ref = self._refs.get(alias)
            if ref is None:
                raise ImproperlyConfigured(f"the database alias {alias!r} is not configured")
            wrapper = wrappers[alias] = self.wrapper_class(
                ref.current, alias=alias, settings_ref=ref
            )
        return wrapper

    def __contains__(self, alias: object) -> bool:
        return alias in self._refs

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._refs))

    def all(self, initialized_only: bool = False) -> list[DatabaseWrapper]:
        """This thread's wrappers (only those already created if initialized_only)."""
        if initialized_only:
            return list(self._wrappers().values())
        return [self[alias] for alias in self]

    def settings(self, alias: str) -> DatabaseSettings:
        try:
            return self._refs[alias].current
        except KeyError:
            raise ImproperlyConfigured(f"the database alias {alias!r} is not configured") from None

    def update_settings(self, alias: str, **changes: Any) -> DatabaseSettings:
        """Replace settings keys (e.g. TIME_ZONE=...) for every thread's wrapper.

        Then call ``ensure_timezone()`` on the wrappers (``ensure_timezone``
        here does it for this thread's wrapper) to swap the pool.
        """
        with self._lock:
            ref = self._refs.get(alias)
            if ref is None:
                raise ImproperlyConfigured(f"the database alias {alias!r} is not configured")
            old = ref.current
            ref.current = old.replace(**changes)
        if old.pooled and ref.current.identity() != old.identity():
            # A pool for settings no longer in force is retired, not kept registered: its
            # idle sessions would sit unwatched through faults and come back into service,
            # dead or stale, if the settings ever changed back (found by the state machines).
            pools.close_matching(
                lambda entry: entry.key[1] == alias and entry.key[2] == old.identity(),
                timeout=POOL_CLOSE_TIMEOUT,
            )
        return ref.current

    def ensure_timezone(self, alias: str | None = None) -> None:
        for name in [alias] if alias else list(self):
            self[name].ensure_timezone()

    def request_started(self) -> None:
        for wrapper in self.all(initialized_only=True):
            wrapper.close_if_unusable_or_obsolete()

    def request_finished(self) -> None:
        for wrapper in self.all(initialized_only=True):
            wrapper.close_if_unusable_or_obsolete()

    def close_all(self) -> None:
        """Close (return) this thread's connections."""
        for wrapper in self.all(initialized_only=True):
            wrapper.close()

    def close_pools(self) -> int:
        """Close and forget the pools of this handler's aliases (shutdown, teardown)."""
        keys = {(alias, ref.current.identity()) for alias, ref in list(self._refs.items())}
        return pools.close_matching(lambda e: (e.key[1], e.key[2]) in keys)
