"""Connecting through the proxy with options that keep faults from hanging the suite.

libpq waits forever by default (psycopg's connect_timeout is 130 s when
unset), so every chaos connection sets:

- ``connect_timeout``: bounds the whole connection start-up, including a
  start-up through a half-open proxy (libpq rounds values below 2 s up to 2 s);
- TCP keepalives and ``tcp_user_timeout``: end a connection whose peer has
  vanished (no ACKs: a real partition, a dead host);
- a server-side ``statement_timeout`` (through ``options``): ends a statement
  the server is stuck in.

What none of those catch: a black hole *behind* a healthy TCP connection.
Through Toxiproxy the client's TCP peer is the proxy, whose kernel keeps
acknowledging every byte, so a ``half_open`` toxic (or ``bandwidth`` with
rate 0) leaves keepalives and tcp_user_timeout satisfied, and the server
never sees the query (or its answer never comes back), so statement_timeout
cannot help either. A query then waits until the toxic is removed. The only
bound is on the client side: :func:`query_deadline` shuts the socket down
after a deadline, which is what a pool-level or request-level timeout must do.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from plain_pool.health import shutdown_socket  # re-exported: one implementation


@dataclass(frozen=True)
class ChaosTimeouts:
    """The client-side bounds every chaos connection uses (seconds / milliseconds)."""

    connect_timeout: int = 3
    keepalives_idle: int = 1
    keepalives_interval: int = 1
    keepalives_count: int = 3
    tcp_user_timeout_ms: int = 3000
    statement_timeout_ms: int = 5000

    def connect_kwargs(self) -> dict[str, Any]:
        """libpq keywords, for psycopg.connect(...) or a pool's ``kwargs``."""
        return {
            "connect_timeout": self.connect_timeout,
            "keepalives": 1,
            "keepalives_idle": self.keepalives_idle,
            "keepalives_interval": self.keepalives_interval,
            "keepalives_count": self.keepalives_count,
            "tcp_user_timeout": self.tcp_user_timeout_ms,
            "options": f"-c statement_timeout={self.statement_timeout_ms}",
        }


CHAOS_TIMEOUTS = ChaosTimeouts()


def proxy_address(proxy: Any) -> tuple[str, int]:
    """(host, port) of a proxy: ``listen_host``/``listen_port``, or toxiproxy's ``listen``."""
    proxy = getattr(proxy, "target", proxy)  # a ProxyControl: the proxy it wraps
    host = getattr(proxy, "listen_host", None)
    port = getattr(proxy, "listen_port", None)
    if host is not None and port is not None:
        return str(host), int(port)
    listen = getattr(proxy, "listen", None)
    if isinstance(listen, str) and ":" in listen:
        host, _, port_text = listen.rpartition(":")
        return host or "127.0.0.1", int(port_text)
    raise TypeError(f"cannot tell where {proxy!r} listens")


def chaos_connect_kwargs(
    proxy: Any, server: Any, timeouts: ChaosTimeouts = CHAOS_TIMEOUTS, **overrides: Any
) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect`` reaching ``server`` through ``proxy``.

    ``overrides`` win (pass ``None`` to drop a keyword, e.g. ``tcp_user_timeout=None``).
    """
    host, port = proxy_address(proxy)
    kwargs: dict[str, Any] = {
        "host": host,
        "port": port,
        "user": getattr(server, "superuser", "postgres"),
        "dbname": getattr(server, "dbname", "postgres"),
        **timeouts.connect_kwargs(),
        **overrides,
    }
    return {k: v for k, v in kwargs.items() if v is not None}


def chaos_conninfo(
    proxy: Any, server: Any, timeouts: ChaosTimeouts = CHAOS_TIMEOUTS, **overrides: Any
) -> str:
    """The same as :func:`chaos_connect_kwargs`, as a libpq conninfo string."""
    return make_conninfo("", **chaos_connect_kwargs(proxy, server, timeouts, **overrides))


def chaos_db_settings(
    proxy: Any, server: Any, timeouts: ChaosTimeouts = CHAOS_TIMEOUTS, **overrides: Any
) -> dict[str, Any]:
    """plain_pool settings pointing through ``proxy`` with the chaos-safe connect options.

    ``overrides`` are settings keys (``POSTGRES_POOL={...}``, ``TIME_ZONE=...``) and
    replace, except ``POSTGRES_OPTIONS``, which is merged over the chaos options.
    """
    host, port = proxy_address(proxy)
    options = {**timeouts.connect_kwargs(), **overrides.pop("POSTGRES_OPTIONS", {})}
    settings: dict[str, Any] = {
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": port,
        "POSTGRES_USER": getattr(server, "superuser", "postgres"),
        "POSTGRES_PASSWORD": "",
        "POSTGRES_DATABASE": getattr(server, "dbname", "postgres"),
        "POSTGRES_OPTIONS": {k: v for k, v in options.items() if v is not None},
    }
    settings.update(overrides)
    return settings


@contextlib.contextmanager
def query_deadline(conn: psycopg.Connection, seconds: float) -> Iterator[threading.Event]:
    """Client-side deadline: if the block runs longer, the connection's socket is shut down.

    The blocked call then raises ``psycopg.OperationalError`` and the
    connection is broken (as a pool would discard it). The yielded event is
    set when the deadline fired.
    """
    fired = threading.Event()
    timer = threading.Timer(seconds, lambda: (fired.set(), shutdown_socket(conn)))
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()
