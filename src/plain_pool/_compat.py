"""Every use of psycopg's and psycopg_pool's PRIVATE attributes, behind one shape check.

Why private at all: the session reset must undo client-side state psycopg has
no public API for (notice and notify handlers, adapters registered on a
connection, notifications kept for ``notifies()``, the prepared-statement
cache); a forked child must take its parent's pools apart without running
their finalisers (psycopg_pool has no "forget" API); the reconnection backoff
is psycopg_pool's private ``AttemptWithBackoff``; and the reset in flight
needs the pool to keep a connection returned ACTIVE (``_reset_connection``).
Only this module names those attributes (``tests/unit/test_compat.py`` fails
if another module of the package does).

The shape check (:func:`check_shape`) runs once, at import, without a
connection or a server, and is honest about what it can see:

- CLASS attributes and methods: looked up on the class (``_reset_connection``
  and ``_add_connection`` with their parameter names, ``AttemptWithBackoff``'s
  constants and methods);
- INSTANCE attributes: psycopg and psycopg_pool create them in ``__init__``,
  so the check reads the names an ``__init__`` in the class's MRO stores
  (its code object's names: no source needed), plus the PUBLIC method that
  shows what the attribute means (``add_notice_handler`` appends to
  ``_notice_handlers``, ``drain()`` empties ``_pool`` with ``clear()``, the
  ``closed`` property reads ``_closed``...). psycopg's ``PrepareManager`` is
  built for real (it takes no arguments) and its three stores inspected;
- the TYPE of an instance attribute (a list, a deque, a ``PrepareManager``)
  can only be seen on an instance: each function checks it at every use
  (an ``isinstance``) and, if it is wrong, warns once and falls back.

If anything is missing, ONE ``RuntimeWarning`` at import names it, and each
function below falls back to the safe behaviour its docstring states. For
the session reset "safe" means the connection is NOT reused: the function
raises :class:`PrivateApiChanged`, the reset fails, and the connection is
closed rather than handed to the next request with the previous one's
handlers, adapters or notifications (pooling degrades, loudly, to a
connection per checkout). For the pool, psycopg_pool's own behaviour is used
(its backoff; no reset in flight).

Without psycopg_pool installed (it is only needed for pooling) the pool half
is not checked: no pool is ever made, and the pool functions fall back.
"""

from __future__ import annotations

import inspect
import sys
import types
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

try:
    from psycopg_pool import ConnectionPool
except ImportError:  # pooling unavailable; DatabaseSettings says so when asked for it
    ConnectionPool = None  # type: ignore[assignment,misc]

__all__ = [
    "BACKOFF_OK",
    "CONNECT_ERROR_OK",
    "MISSING",
    "PRIVATE_NAMES",
    "RESET_IN_FLIGHT_OK",
    "SHAPE_OK",
    "AttemptWithBackoff",
    "PrivateApiChanged",
    "available",
    "check_shape",
    "clear_notice_handlers",
    "clear_notifies_backlog",
    "clear_notify_handlers",
    "detach_from_pool",
    "forget_prepared",
    "idle_connections",
    "mark_closed_without_workers",
    "notice_handlers",
    "prepared_names",
    "reset_adapters",
    "shape_warning",
    "take_idle_connections",
]

#: Every private name of psycopg / psycopg_pool the package uses, and the features
#: (shape-check groups) that need it. The check also reads ``_return_connection``
#: (evidence of what ``_reset_connection`` means); nothing calls it.
PRIVATE_NAMES: dict[str, tuple[str, ...]] = {
    "_notice_handlers": ("notice_handlers",),  # psycopg Connection: list of callbacks
    "_notify_handlers": ("notify_handlers",),  # psycopg Connection: list of callbacks
    "_adapters": ("adapters",),  # psycopg Connection: AdaptersMap, None until first use
    "_notifies_backlog": ("notifies_backlog",),  # psycopg Connection: deque for notifies()
    "_prepared": ("prepared",),  # psycopg Connection: its PrepareManager
    "_preparing": ("prepared",),  # psycopg's module defining PrepareManager
    "_names": ("prepared",),  # PrepareManager: query key -> statement name
    "_counts": ("prepared",),  # PrepareManager: query key -> times seen
    "_to_flush": ("prepared",),  # PrepareManager: names to DEALLOCATE
    "_pool": ("idle_pool", "conn_pool"),  # ConnectionPool: idle deque; Connection: its pool
    "_closed": ("idle_pool",),  # ConnectionPool: behind .closed and __del__
    "_add_connection": ("backoff",),  # ConnectionPool method (RecoveringConnectionPool overrides)
    "AttemptWithBackoff": ("backoff",),  # psycopg_pool.base class (ShortBackoff subclasses)
    "_reset_connection": ("reset_connection",),  # ConnectionPool method (overridden)
    "_connect": ("connect_error",),  # ConnectionPool method (overridden): connect + configure
}

#: Features whose names live on psycopg (checked even without psycopg_pool).
PSYCOPG_FEATURES = (
    "notice_handlers",
    "notify_handlers",
    "adapters",
    "notifies_backlog",
    "prepared",
)
#: Features of psycopg_pool (``conn_pool``: the pool a connection remembers).
POOL_FEATURES = ("conn_pool", "idle_pool", "backoff", "reset_connection", "connect_error")

#: What each feature falls back to (in the warning).
FALLBACKS: dict[str, str] = {
    "notice_handlers": "a connection whose reset needs it is closed, not reused",
    "notify_handlers": "a connection whose reset needs it is closed, not reused",
    "adapters": "a connection whose reset needs it is closed, not reused",
    "notifies_backlog": "a connection whose reset needs it is closed, not reused; "
    "no reset in flight",
    "prepared": "a connection whose reset needs it is closed, not reused",
    "conn_pool": "an inherited connection is closed without being detached (its socket "
    "already points at /dev/null)",
    "idle_pool": "a forked child keeps its parent's pools referenced forever instead of "
    "taking them apart",
    "backoff": "psycopg_pool's own reconnection backoff (recovery in seconds, not ms)",
    "reset_connection": "no reset in flight (the reset runs on return)",
    "connect_error": "a checkout that times out while the pool cannot connect does not "
    "name the connection error",
}


class PrivateApiChanged(RuntimeError):
    """psycopg or psycopg_pool no longer has the private attribute a step needs."""


# -- the shape check -----------------------------------------------------------
def _code_names(func: Any) -> set[str] | None:
    """Names a function's code reads or stores, and the strings it uses (``getattr``);
    None if it has no Python code."""
    if isinstance(func, (staticmethod, classmethod)):
        func = func.__func__
    if isinstance(func, property):
        func = func.fget
    code = getattr(func, "__code__", None)
    if not isinstance(code, types.CodeType):
        return None
    names: set[str] = set()
    todo = [code]
    while todo:  # nested code: comprehensions, closures
        current = todo.pop()
        names.update(current.co_names)
        for const in current.co_consts:
            if isinstance(const, types.CodeType):
                todo.append(const)
            elif isinstance(const, str):
                names.add(const)
    return names


def _init_stores(cls: type) -> set[str]:
    """Names used by the ``__init__`` methods of ``cls``'s MRO (where instance attributes
    are made)."""
    names: set[str] = set()
    for klass in getattr(cls, "__mro__", (cls,)):
        try:
            init = vars(klass).get("__init__")
        except TypeError:  # not a class nor anything with a __dict__
            continue
        if init is not None:
            names |= _code_names(init) or set()
    return names


def _params(func: Any) -> list[str] | None:
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None


def _uses(owner: Any, where: str, method: str, names: tuple[str, ...]) -> list[str]:
    """Problems if ``owner.method`` is missing or its code does not use all of ``names``."""
    func = inspect.getattr_static(owner, method, None)
    if func is None:
        return [f"{where}.{method} is missing (needed to verify {', '.join(names)})"]
    used = _code_names(func)
    if used is None:
        return [f"{where}.{method} cannot be inspected (no Python code)"]
    return [f"{where}.{method} no longer uses {name}" for name in names if name not in used]


def _made_in_init(owner: Any, where: str, names: tuple[str, ...]) -> list[str]:
    made = _init_stores(owner)
    return [f"{where}.{name} is no longer set in __init__" for name in names if name not in made]


def _check_prepare_manager(psycopg_module: Any) -> list[str]:
    where = "psycopg._preparing.PrepareManager"
    manager_class = getattr(getattr(psycopg_module, "_preparing", None), "PrepareManager", None)
    if not isinstance(manager_class, type):
        return [f"{where} is missing"]
    try:
        manager = manager_class()
    except Exception as exc:
        return [f"{where}() cannot be built without arguments any more ({exc})"]
    problems = []
    for name in ("_names", "_counts"):
        store = getattr(manager, name, None)
        if not isinstance(store, Mapping) or not hasattr(store, "clear"):
            problems.append(f"{where}.{name} is no longer a mapping with clear()")
    if not hasattr(getattr(manager, "_to_flush", None), "clear"):
        problems.append(f"{where}._to_flush is no longer a container with clear()")
    return problems


def _attempt_class(pool_class: Any) -> Any:
    """The class ``pool_class._add_connection`` builds its attempts from (in its globals)."""
    func = inspect.getattr_static(pool_class, "_add_connection", None)
    return getattr(func, "__globals__", {}).get("AttemptWithBackoff")


def _check_backoff(pool_class: Any) -> list[str]:
    where = "psycopg_pool ConnectionPool"
    problems = []
    params = _params(getattr(pool_class, "_add_connection", None))
    if params != ["self", "attempt", "growing"]:
        problems.append(
            f"{where}._add_connection's parameters are {params}, not [self, attempt, growing]"
        )
    problems += _uses(pool_class, where, "_add_connection", ("AttemptWithBackoff",))
    attempt = _attempt_class(pool_class)
    if not isinstance(attempt, type):
        return [*problems, "psycopg_pool AttemptWithBackoff is missing"]
    where = "psycopg_pool AttemptWithBackoff"
    for name in ("INITIAL_DELAY", "DELAY_BACKOFF"):
        if not isinstance(getattr(attempt, name, None), (int, float)):
            problems.append(f"{where}.{name} is no longer a number")
    for name in ("update_delay", "time_to_give_up"):
        if _params(getattr(attempt, name, None)) != ["self", "now"]:
            problems.append(f"{where}.{name} is no longer a method (self, now)")
    init_params = inspect.signature(attempt).parameters if callable(attempt) else {}
    if "timeout" not in init_params:
        problems.append(f"{where}() no longer takes timeout")
    problems += _made_in_init(attempt, where, ("delay",))
    return problems


def _check_features(psycopg_module: Any, pool_class: Any) -> dict[str, list[str]]:
    """The problems found, per feature (an empty list: the feature is usable)."""
    conn = getattr(psycopg_module, "Connection", None)
    where = "psycopg Connection"
    if not isinstance(conn, type):
        found = {feature: [f"{where} is missing"] for feature in PSYCOPG_FEATURES}
    else:
        found = {
            "notice_handlers": _made_in_init(conn, where, ("_notice_handlers",))
            + _uses(conn, where, "add_notice_handler", ("_notice_handlers",)),
            "notify_handlers": _made_in_init(conn, where, ("_notify_handlers",))
            + _uses(conn, where, "add_notify_handler", ("_notify_handlers",)),
            # adapters: made lazily from the global map when _adapters is empty
            "adapters": _made_in_init(conn, where, ("_adapters",))
            + _uses(conn, where, "adapters", ("_adapters", "AdaptersMap")),
            "notifies_backlog": _made_in_init(conn, where, ("_notifies_backlog",))
            + _uses(conn, where, "notifies", ("_notifies_backlog",)),
            "prepared": _made_in_init(conn, where, ("_prepared",))
            + _uses(conn, where, "prepare_threshold", ("_prepared",))
            + _check_prepare_manager(psycopg_module),
        }
    if pool_class is None:
        return found
    pool_where = "psycopg_pool ConnectionPool"
    # psycopg_pool stamps each connection it makes with _pool; psycopg's close()
    # hands a connection whose _pool has close_returns back to that pool.
    found["conn_pool"] = _uses(conn, where, "close", ("_pool",)) + _uses(
        pool_class, pool_where, "_connect", ("_pool",)
    )
    idle = _made_in_init(pool_class, pool_where, ("_pool", "_closed"))
    idle += _uses(pool_class, pool_where, "drain", ("_pool", "clear"))
    idle += _uses(pool_class, pool_where, "closed", ("_closed",))
    if inspect.getattr_static(pool_class, "__del__", None) is not None:
        # marking a pool closed must keep its finaliser from stopping workers
        idle += _uses(pool_class, pool_where, "__del__", ("_closed",))
    found["idle_pool"] = idle
    found["backoff"] = _check_backoff(pool_class)
    reset = []
    params = _params(getattr(pool_class, "_reset_connection", None))
    if params != ["self", "conn"]:
        reset.append(f"{pool_where}._reset_connection's parameters are {params}, not [self, conn]")
    reset += _uses(pool_class, pool_where, "_return_connection", ("_reset_connection",))
    found["reset_connection"] = reset
    connect = []
    params = _params(getattr(pool_class, "_connect", None))
    if params != ["self", "timeout"]:
        connect.append(f"{pool_where}._connect's parameters are {params}, not [self, timeout]")
    connect += _uses(pool_class, pool_where, "_add_connection", ("_connect",))
    found["connect_error"] = connect
    return found


def check_shape(psycopg_module: Any, pool_class: Any) -> list[str]:
    """What ``psycopg_module`` and ``pool_class`` (None: psycopg_pool is not installed)
    lack of the private shape plain_pool uses; empty if nothing. Pure: it only reads them."""
    found = _check_features(psycopg_module, pool_class)
    return list(dict.fromkeys(p for problems in found.values() for p in problems))


def shape_warning(problems: Mapping[str, list[str]], versions: str) -> str | None:
    """The one warning for the problems :func:`_check_features` found (None: no problem):
    what changed, then what falls back and how."""
    missing = list(dict.fromkeys(p for found in problems.values() for p in found))
    if not missing:
        return None
    fallbacks = "; ".join(f"{f}: {FALLBACKS[f]}" for f, found in problems.items() if found)
    return (
        f"plain_pool: {versions} changed private attributes plain_pool uses: "
        f"{'; '.join(missing)}. Falling back - {fallbacks}"
    )


def _versions() -> str:
    pool = "not installed"
    if ConnectionPool is not None:
        pool = getattr(sys.modules.get("psycopg_pool"), "__version__", "?")
    return f"psycopg {psycopg.__version__} / psycopg_pool {pool}"


_PROBLEMS = _check_features(psycopg, ConnectionPool)
_OK: dict[str, bool] = {feature: not problems for feature, problems in _PROBLEMS.items()}
_PrepareManager: Any = getattr(getattr(psycopg, "_preparing", None), "PrepareManager", None)

#: What the installed psycopg / psycopg_pool lack (empty: the shape is as expected).
MISSING: list[str] = check_shape(psycopg, ConnectionPool)
SHAPE_OK: bool = not MISSING
_warning = shape_warning(_PROBLEMS, _versions())
if _warning is not None:  # pragma: no cover - depends on the installed versions
    warnings.warn(_warning, RuntimeWarning, stacklevel=2)


def available(feature: str) -> bool:
    """True if ``feature`` (see :data:`PRIVATE_NAMES`) passed the shape check."""
    return _OK.get(feature, False)


#: psycopg_pool's reconnection attempt class (the one ``_add_connection`` builds), or None.
AttemptWithBackoff: Any = _attempt_class(ConnectionPool) if ConnectionPool is not None else None
#: The short backoff may replace psycopg_pool's attempts.
BACKOFF_OK: bool = available("backoff")
#: The pool may keep a connection returned with its reset in flight. It also needs the
#: notifications backlog: the reset is finished at checkout, where a failure drains the pool.
RESET_IN_FLIGHT_OK: bool = available("reset_connection") and available("notifies_backlog")
#: The pool may record why its last connection attempt failed (it overrides ``_connect``).
CONNECT_ERROR_OK: bool = available("connect_error")

_warned_at_use: set[str] = set()


def _changed_at_use(feature: str, detail: str) -> PrivateApiChanged:
    """A shape problem only an instance shows: warn once, return the error to raise."""
    message = f"plain_pool: psycopg/psycopg_pool private attribute changed: {detail}"
    if feature not in _warned_at_use:
        _warned_at_use.add(feature)
        fallback = FALLBACKS[feature]
        warnings.warn(f"{message}; falling back: {fallback}", RuntimeWarning, stacklevel=3)
    return PrivateApiChanged(message)


def _unavailable(feature: str) -> PrivateApiChanged:
    problems = _PROBLEMS.get(feature) or ["psycopg_pool is not installed"]
    return PrivateApiChanged(f"plain_pool cannot use {feature}: {'; '.join(problems)}")


# -- session reset: client-side state psycopg has no public API for ------------
def _handler_list(conn: psycopg.Connection, feature: str, name: str) -> list[Any]:
    if not _OK[feature]:
        raise _unavailable(feature)
    handlers = getattr(conn, name, None)
    if type(handlers) is not list:
        raise _changed_at_use(feature, f"Connection.{name} is a {type(handlers).__name__}")
    return handlers


def clear_notice_handlers(conn: psycopg.Connection) -> None:
    """Remove every notice handler (``add_notice_handler``) from ``conn``.

    Fallback (shape changed): raise :class:`PrivateApiChanged`; the reset
    fails and the connection is closed, never reused with a previous
    request's handler (which would see the next request's notices).
    """
    handlers = _handler_list(conn, "notice_handlers", "_notice_handlers")
    if handlers:
        handlers.clear()


def clear_notify_handlers(conn: psycopg.Connection) -> None:
    """Remove every notify handler (``add_notify_handler``). Fallback: as
    :func:`clear_notice_handlers`."""
    handlers = _handler_list(conn, "notify_handlers", "_notify_handlers")
    if handlers:
        handlers.clear()


def notice_handlers(conn: psycopg.Connection) -> list[Callable[..., Any]]:
    """A copy of ``conn``'s notice handlers (psycopg has no public getter).
    Fallback: raise :class:`PrivateApiChanged`."""
    return list(_handler_list(conn, "notice_handlers", "_notice_handlers"))


def reset_adapters(conn: psycopg.Connection) -> None:
    """Forget the adapters registered on ``conn`` (a loader, a dumper, ``TypeInfo.register``).

    psycopg makes a connection's map lazily, as a copy of the global
    ``psycopg.adapters`` (what a pool's new connection has: plain_pool passes
    no ``context``), so ``None`` restores it; the copy is made on the next
    cursor. Fallback: raise :class:`PrivateApiChanged` (the connection is
    closed, never reused with a previous request's adapters).
    """
    if not _OK["adapters"]:
        raise _unavailable("adapters")
    if not hasattr(conn, "_adapters"):
        raise _changed_at_use("adapters", "Connection._adapters is missing")
    conn._adapters = None  # type: ignore[attr-defined]


def clear_notifies_backlog(conn: psycopg.Connection) -> None:
    """Drop the notifications psycopg received and keeps for ``conn.notifies()``.

    ``None`` while a ``notifies()`` generator runs (it holds the backlog):
    nothing to drop. Fallback: raise :class:`PrivateApiChanged` (the
    connection is closed; :data:`RESET_IN_FLIGHT_OK` is False, so this never
    happens at a checkout).
    """
    if not _OK["notifies_backlog"]:
        raise _unavailable("notifies_backlog")
    backlog = getattr(conn, "_notifies_backlog", None)
    if backlog is None:
        return
    if not isinstance(backlog, deque):
        raise _changed_at_use(
            "notifies_backlog", f"Connection._notifies_backlog is a {type(backlog).__name__}"
        )
    backlog.clear()


def _prepare_manager(conn: psycopg.Connection) -> Any:
    if not _OK["prepared"]:
        raise _unavailable("prepared")
    manager = getattr(conn, "_prepared", None)
    if not isinstance(manager, _PrepareManager):
        raise _changed_at_use("prepared", f"Connection._prepared is a {type(manager).__name__}")
    return manager


def forget_prepared(conn: psycopg.Connection) -> None:
    """Empty psycopg's prepared-statement cache, after the server dropped them all.

    Not ``PrepareManager.clear()``: that queues a ``DEALLOCATE ALL`` for the
    next query, a round trip for statements the server no longer has.
    Fallback: raise :class:`PrivateApiChanged` (the connection is closed:
    its cache would name statements the server dropped).
    """
    manager = _prepare_manager(conn)
    manager._names.clear()
    manager._counts.clear()
    manager._to_flush.clear()


def prepared_names(conn: psycopg.Connection) -> list[str]:
    """The names of the server-side statements psycopg's cache owns.
    Fallback: raise :class:`PrivateApiChanged` (which statements to keep is unknown)."""
    names = _prepare_manager(conn)._names.values()
    return [v.decode() if isinstance(v, bytes) else str(v) for v in names]


# -- pools: the fork path and observation ----------------------------------------
def _is_pool(pool: Any) -> bool:
    """A psycopg_pool ConnectionPool (another pool class's insides are unknown here)."""
    return ConnectionPool is not None and isinstance(pool, ConnectionPool)


def _idle_deque(pool: Any) -> deque[Any] | None:
    if not _OK.get("idle_pool", False) or not _is_pool(pool):
        return None
    idle = getattr(pool, "_pool", None)
    if not isinstance(idle, deque):
        _changed_at_use("idle_pool", f"ConnectionPool._pool is a {type(idle).__name__}")
        return None
    return idle


def idle_connections(pool: Any) -> list[psycopg.Connection]:
    """A snapshot of the connections idle in ``pool`` (``deque.copy`` is atomic under
    the GIL: a worker adding one meanwhile cannot break it). Fallback, or a pool that
    is not a psycopg_pool ``ConnectionPool``: ``[]``."""
    idle = _idle_deque(pool)
    return [] if idle is None else list(idle.copy())


def take_idle_connections(pool: Any) -> list[psycopg.Connection] | None:
    """Empty ``pool``'s idle deque and return what it held (a forked child's inherited pool).

    Fallback, or a pool that is not a psycopg_pool ``ConnectionPool``: ``None`` -
    the caller cannot reach them and must keep the pool referenced, so neither
    it nor its connections are ever finalised here.
    """
    idle = _idle_deque(pool)
    if idle is None:
        return None
    taken = list(idle)
    idle.clear()
    return taken


def mark_closed_without_workers(pool: Any) -> bool:
    """Mark an inherited pool closed without stopping its workers (a forked child has
    none): its ``__del__`` then does nothing. False (fallback) if that is not possible:
    the caller keeps the pool referenced."""
    if not available("idle_pool") or not _is_pool(pool):
        return False
    if not isinstance(getattr(pool, "_closed", None), bool):
        _changed_at_use("idle_pool", "ConnectionPool._closed is not a bool")
        return False
    pool._closed = True
    return True


def detach_from_pool(conn: psycopg.Connection) -> bool:
    """Make ``conn`` forget its pool, so ``close()`` closes it instead of handing it back.

    Fallback: False, nothing done. Safe where it is used (an inherited
    connection whose socket already points at /dev/null: whatever ``close()``
    does then cannot reach the parent's session).
    """
    if not available("conn_pool"):
        return False
    try:
        conn._pool = None  # type: ignore[attr-defined]
    except AttributeError:  # not a psycopg connection (nothing to detach)
        return False
    return True
