"""``CheckoutPolicy``: which check a checkout runs, and how a reset in flight is finished.

The check runs in plain_pool's own loop (health.checkout), not in
psycopg_pool's, whose failed checks back off 1, 2, 4 s. A user ``check``
wins over ``CONN_HEALTH_CHECKS``; it is :func:`~plain_pool.health.verified`
(a check that closed the connection and returned has failed it), and any
``Exception`` it raises fails the connection (a user check is arbitrary code).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from plain_pool import configuration, health, session_reset
from plain_pool.pools import PoolEntry
from plain_pool.settings import DatabaseSettings

Check = Callable[[psycopg.Connection], Any]


class CheckoutPolicy:
    """Check, failures, and the end of the reset in flight."""

    #: What a failing check may raise for its connection to be discarded and the
    #: checkout retried: any Exception - a user ``check`` is arbitrary code.
    failures: tuple[type[BaseException], ...] = (Exception,)

    def health_check(self, settings: DatabaseSettings) -> Check | None:
        """The user's ``check`` wins; else check_connection when health checks are on."""
        if settings.pool and settings.pool.get("check") is not None:
            return settings.pool["check"]
        if settings.conn_health_checks:
            return health.check_connection
        return None

    def check_for(self, settings: DatabaseSettings) -> Check | None:
        """The check the checkout loop runs; a user check is verified."""
        check = self.health_check(settings)
        if check is None or check is health.check_connection:
            return check
        return health.verified(check)

    def pool_check(self, settings: DatabaseSettings) -> Check | None:
        """psycopg_pool's own ``check``: none, the checkout loop runs it instead."""
        return None

    def finish_reset(
        self, entry: PoolEntry, conn: psycopg.Connection, deadline: float
    ) -> bool | None:
        """The reset sent on return, read; then the pool's configuration.

        ``None``: no reset was in flight (a new connection, configured by the
        pool). True: its answer arrived just now (the connection is alive).
        """
        fresh = session_reset.finish_reset(conn, deadline, answer_within=health.RESET_TIMEOUT)
        if session_reset.take_configure_due(conn):
            # The reset's answer was read: the session reports its zone and name as they
            # are now (behind a pooler, not necessarily the pool's startup options).
            configurer = entry.configurer
            if configurer.bounds_its_statements:
                setattr(conn, configuration.CONFIGURE_DEADLINE, deadline)
                try:
                    configurer.configure(conn)
                finally:
                    delattr(conn, configuration.CONFIGURE_DEADLINE)
            else:
                with health.return_deadline(conn):  # its SET ROLE over a half-open link
                    configurer.configure(conn)
        return fresh

    def checkout(self, entry: PoolEntry, settings: DatabaseSettings) -> psycopg.Connection:
        return health.checkout(
            entry,
            self.check_for(settings),
            failures=self.failures,
            finish_reset=self.finish_reset,
        )
