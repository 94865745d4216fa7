"""plain_pool: a reference pooled PostgreSQL backend (psycopg 3 + psycopg_pool).

Public API::

    from plain_pool import ImproperlyConfigured, DatabaseSettings, DatabaseWrapper
    from plain_pool import ConnectionHandler, connections
    from plain_pool import SessionConfigurer  # subclass it to change how sessions are set up

See ``DatabaseWrapper`` for the connection lifecycle and ``session_reset`` for
what happens when a pooled connection is returned.
"""

from __future__ import annotations

from plain_pool.configuration import SessionConfigurer
from plain_pool.exceptions import (
    ConnectionClosedInAtomicBlock,
    ImproperlyConfigured,
    ServerSideCursorsDisabled,
    TransactionManagementError,
)
from plain_pool.handler import ConnectionHandler
from plain_pool.pools import close_all as close_all_pools
from plain_pool.settings import DatabaseSettings
from plain_pool.wrapper import DatabaseWrapper, SettingsRef

#: The process-wide default handler; call ``connections.configure({...})``.
connections = ConnectionHandler()

__all__ = [
    "ConnectionClosedInAtomicBlock",
    "ConnectionHandler",
    "DatabaseSettings",
    "DatabaseWrapper",
    "ImproperlyConfigured",
    "ServerSideCursorsDisabled",
    "SessionConfigurer",
    "SettingsRef",
    "TransactionManagementError",
    "close_all_pools",
    "connections",
]
