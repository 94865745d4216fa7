"""Validation of ``POSTGRES_POOL``: the keyword arguments for ``ConnectionPool``.

Why a module of its own: the pool dict is user input handed to a third-party
constructor. A typo (``max_szie``) or a wrong type (``timeout="5"``) would
otherwise surface as a ``TypeError`` deep inside the first request, or not at
all; here it is an ``ImproperlyConfigured`` naming the key at settings time.
The user's dict is copied, never mutated, and a user ``check`` is accepted
(Django #37075: a ``check`` in the pool options raised ``TypeError``, and the
fix had to stop mutating the user's settings).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from plain_pool._redact import safe_repr
from plain_pool.exceptions import ImproperlyConfigured

INSTALL_HINT = "install psycopg[pool] (or psycopg-pool)"

#: The ConnectionPool keyword arguments a user may set, with their accepted types.
#: ``bool`` is rejected where a number is expected (``True`` is an ``int``).
_NUMBER = "number"
_INT = "int"
_OPT_INT = "int or None"
_STR = "str"
_CALLABLE = "callable"
KNOWN_OPTIONS: dict[str, str] = {
    "min_size": _INT,
    "max_size": _OPT_INT,
    "timeout": _NUMBER,
    "max_waiting": _INT,
    "max_lifetime": _NUMBER,
    "max_idle": _NUMBER,
    "reconnect_timeout": _NUMBER,
    "num_workers": _INT,
    "name": _STR,
    "check": _CALLABLE,
    "reconnect_failed": _CALLABLE,
}

#: Keys the backend owns: accepting them would break the backend's guarantees.
RESERVED_OPTIONS: dict[str, str] = {
    "configure": "the backend configures connections itself (DatabaseWrapper.configurer_class)",
    "reset": "the backend resets sessions on return, in the caller's thread",
    "kwargs": "connection parameters come from the POSTGRES_* settings",
    "conninfo": "connection parameters come from the POSTGRES_* settings",
    "connection_class": "the backend creates psycopg.Connection objects",
    "open": "the pool is opened lazily on first use",
    "close_returns": "the backend returns connections with putconn itself",
}


def require_psycopg_pool() -> Any:
    """Import psycopg_pool or explain how to get it."""
    try:
        import psycopg_pool
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"POSTGRES_POOL is enabled but psycopg_pool is not importable ({exc}): {INSTALL_HINT}"
        ) from exc
    return psycopg_pool


def _type_ok(kind: str, value: Any) -> bool:
    if kind == _CALLABLE:
        return callable(value)
    if kind == _STR:
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if kind == _INT:
        return isinstance(value, int)
    if kind == _OPT_INT:
        return value is None or isinstance(value, int)
    return isinstance(value, numbers.Real)


def validate_pool_options(value: Any) -> Mapping[str, Any] | None:
    """Turn ``POSTGRES_POOL`` into a read-only copy of pool kwargs, or None (no pool).

    ``False`` -> None; ``True`` -> {} (psycopg_pool defaults); a dict -> validated copy.
    """
    if value is False or value is None:
        return None
    if value is True:
        require_psycopg_pool()
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(
            f"POSTGRES_POOL must be False, True or a dict of ConnectionPool options, "
            f"got {type(value).__name__}: {safe_repr(value)}"
        )
    options: dict[str, Any] = {}
    for key, item in value.items():
        if key in RESERVED_OPTIONS:
            raise ImproperlyConfigured(
                f"POSTGRES_POOL[{key!r}] cannot be set: {RESERVED_OPTIONS[key]}"
            )
        if key not in KNOWN_OPTIONS:
            raise ImproperlyConfigured(
                f"POSTGRES_POOL[{key!r}] is not a known ConnectionPool option "
                f"(known: {', '.join(sorted(KNOWN_OPTIONS))})"
            )
        kind = KNOWN_OPTIONS[key]
        if not _type_ok(kind, item):
            raise ImproperlyConfigured(
                f"POSTGRES_POOL[{key!r}] must be a {kind}, "
                f"got {type(item).__name__}: {safe_repr(item, key=key)}"
            )
        options[key] = item
    _check_values(options)
    require_psycopg_pool()
    return MappingProxyType(options)


def _check_values(options: dict[str, Any]) -> None:
    """Value checks ConnectionPool would only make when constructed (or never)."""
    min_size = options.get("min_size", 4)
    max_size = options.get("max_size")
    if min_size < 0:
        raise ImproperlyConfigured(f"POSTGRES_POOL['min_size'] cannot be negative: {min_size}")
    if max_size is not None and max_size < min_size:
        raise ImproperlyConfigured(
            f"POSTGRES_POOL['max_size'] ({max_size}) must be >= min_size ({min_size})"
        )
    if min_size == 0 and max_size in (None, 0):
        raise ImproperlyConfigured("POSTGRES_POOL['max_size'] must be > 0 when min_size is 0")
    for key in ("timeout", "max_lifetime", "max_idle", "reconnect_timeout"):
        if key in options and options[key] <= 0:
            raise ImproperlyConfigured(f"POSTGRES_POOL[{key!r}] must be > 0: {options[key]!r}")
    for key in ("num_workers",):
        if key in options and options[key] < 1:
            raise ImproperlyConfigured(f"POSTGRES_POOL[{key!r}] must be >= 1: {options[key]!r}")
    if options.get("max_waiting", 0) < 0:
        raise ImproperlyConfigured(
            f"POSTGRES_POOL['max_waiting'] cannot be negative: {options['max_waiting']!r}"
        )
