"""Exceptions raised by plain_pool.

They mirror the Django names users already know, so that code written for
Django's backend reads the same here.
"""

from __future__ import annotations

import psycopg

from plain_pool._redact import redact


class ImproperlyConfigured(Exception):
    """A setting is missing, unknown, of the wrong type or inconsistent.

    The message always names the offending key (and value when useful), so a
    user can fix the configuration without reading the backend's source. A
    password in it (a URL's, a ``password=...``) is masked, whoever raised it.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class TransactionManagementError(psycopg.ProgrammingError):
    """A transaction-control call that is not allowed here.

    For example ``commit()`` inside ``atomic()``, or a query after an error
    inside an ``atomic()`` block that has not been rolled back yet.
    """


class ConnectionClosedInAtomicBlock(psycopg.InterfaceError):
    """The connection was closed inside ``atomic()``; no silent reconnect.

    Reconnecting would run the rest of the "transaction" outside any
    transaction (its first statements rolled back, the rest autocommitted), so
    every later use inside the block fails until the outermost block exits.
    """


class ServerSideCursorsDisabled(psycopg.NotSupportedError):
    """A WITH HOLD cursor was requested with POSTGRES_DISABLE_SERVER_SIDE_CURSORS.

    Named cursors fall back to client-side cursors (results are fetched at
    once, as Django's ``chunked_cursor``); a WITH HOLD cursor's whole purpose
    is to outlive the transaction on the server, which cannot be emulated.
    """
