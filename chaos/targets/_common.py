"""What every target's checkout does the same way, whatever system hands the connection out.

- :func:`backend_identity`: the session's identity (pid + creation stamp: pids are
  reused, the pair is not) and its age, both on the client's monotonic clock;
- :func:`stamp`: the creation stamp of a connection the system under test made, taken
  in its connect/configure hook (or at first sight, for a system that has no hook);
- :func:`refuse_broken`: a checkout that hands out a connection libpq already knows
  is gone is a dead handout for the judge, not a session leak of unreadable fields;
- :func:`unique_application_name`: one name per target instance, so
  ``pg_stat_activity`` tells its sessions apart from every other target's;
- :func:`apply_client_attr`: the client-side dirt (``Session.set_client_attr``) on the
  psycopg connection a request holds.
"""

from __future__ import annotations

import os
import time
import uuid
import weakref
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from chaos.machines.model import Backend

#: When each connection was first stamped (the target's hook, or first sight).
_first_seen: weakref.WeakKeyDictionary[psycopg.Connection, float] = weakref.WeakKeyDictionary()


def stamp(conn: psycopg.Connection) -> float:
    """The connection's creation stamp (monotonic): set on the first call, kept after."""
    return _first_seen.setdefault(conn, time.monotonic())


def backend_identity(
    conn: psycopg.Connection, created: float | None = None
) -> tuple[Backend, float]:
    """``(Backend(pid, created), age in seconds)``; ``created`` defaults to :func:`stamp`."""
    if created is None:
        created = stamp(conn)
    return Backend(conn.info.backend_pid, round(created, 6)), time.monotonic() - created


def refuse_broken(conn: psycopg.Connection) -> None:
    """Raise OperationalError if libpq already knows the session is gone (the judge
    allows it once per pooled connection with health checks off; it is not a leak)."""
    if conn.closed or conn.info.transaction_status == TransactionStatus.UNKNOWN:
        raise psycopg.OperationalError(
            f"the checkout handed out a broken connection ({conn.pgconn.status.name})"
        )


def unique_application_name(prefix: str) -> str:
    """``prefix-<pid>-<random>``: unique across xdist workers sharing a server."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def apply_client_attr(conn: psycopg.Connection, name: str, value: Any) -> None:
    """Set ``conn.<name>``; ``notice_handler`` / ``notify_handler`` add a handler and
    ``loader`` registers a ``(type name, loader class)`` on ``conn.adapters``."""
    if name in ("notice_handler", "notify_handler"):
        getattr(conn, f"add_{name}")(value)
    elif name == "loader":
        conn.adapters.register_loader(*value)
    else:
        setattr(conn, name, value)
