"""The session reset run when a pooled connection is returned.

Why: neither Django's pool nor Plain's clears session state on return, so a
``SET``, ``SET ROLE`` (a privilege leak), temp table, advisory lock,
``LISTEN``, prepared statement, ``WITH HOLD`` cursor or isolation level set
by one request reaches the next one. Nor does either touch the client side of
the psycopg connection: a row factory, a notice handler, an adapter or a
``prepare_threshold`` one request set is what the next one gets.

The default reset (``discard_all``) is IN FLIGHT: sent on return, read at
the next checkout (:func:`send_reset`, :func:`finish_reset`), so its round
trip overlaps the time the connection sits in the pool. Steps:

1. on return, in the caller's thread (a pool ``reset`` callback would cost a
   thread hand-off per checkout): the transaction was already rolled back
   (never committed); the client side goes back to what a new connection
   has, without a round trip: :func:`client_defaults` (autocommit,
   isolation level, read only, deferrable, prepare_threshold, prepared_max,
   row, cursor and server-cursor factories) and, through psycopg's private
   attributes (no public API), the notice and notify handlers a request
   added and the adapters it registered (:data:`PRIVATE_CLIENT_STATE`);
2. ``DISCARD ALL`` is SENT (simple protocol, never prepared) and psycopg's
   client-side prepared-statement cache is forgotten (psycopg would
   otherwise name statements the server no longer has: ``prepared
   statement "_pg3_0" does not exist``). The connection goes back to the
   pool ACTIVE at the libpq level: any query tried on it fails loudly;
3. at the next checkout (or in the pool's ``check()``) its answer is read,
   with a deadline; a failure or no answer discards the connection, which
   is never handed out. Then notifications received before the reset are
   dropped (psycopg would hand them to the next user's ``notifies()``), and
   the checkout configures the session (``SET ROLE``; the zone is in the
   startup options, which ``DISCARD ALL`` restores).

Measured (``tox -e bench``): the round trip on the caller's path cost a
third of the checkouts per second. Multi-statement strategies
(``keep_prepared``, and ``reset_all`` for a canary) still run on return,
in a pipeline, within the return deadline (:func:`reset_session`).

Stale ``parameter_status`` inside a pipeline (multi-statement strategies):
the configure step decides whether to ``SET TIME ZONE`` by comparing the
session's zone with the configured one, but inside the pipeline the
``DISCARD ALL`` result has not been read yet. So the reset tells the
configure step what the zone WILL be after the reset: the zone in the
pool's startup options (``-c TimeZone=...``), which is what ``RESET``
restores. When that is the configured zone (the normal case) no ``SET`` is
sent; when it is not (the pool predates a zone change) the ``SET`` is sent.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from time import monotonic
from typing import Any

import psycopg
from psycopg import pq
from psycopg.rows import tuple_row

from plain_pool import _compat, _wire

#: What DISCARD ALL does, in one statement (the default).
DISCARD_ALL: tuple[str, ...] = ("DISCARD ALL",)

#: deadpool-postgres' reset: DISCARD ALL minus DEALLOCATE ALL and DISCARD PLANS,
#: so psycopg's client-side statement cache stays valid (prepare_threshold users).
KEEP_PREPARED: tuple[str, ...] = (
    "CLOSE ALL",
    "SET SESSION AUTHORIZATION DEFAULT",
    "RESET ALL",
    "UNLISTEN *",
    "SELECT pg_advisory_unlock_all()",
    "DISCARD TEMP",
    "DISCARD SEQUENCES",
)

#: NOT enough (kept for the ResetAllOnly canary): keeps SET ROLE, temp tables,
#: advisory locks, LISTEN and prepared statements.
RESET_ALL_ONLY: tuple[str, ...] = ("RESET ALL",)

STRATEGIES: dict[str, tuple[str, ...]] = {
    "discard_all": DISCARD_ALL,
    "keep_prepared": KEEP_PREPARED,
    "reset_all": RESET_ALL_ONLY,
}

#: psycopg's default ``Connection.prepared_max`` (what a new connection has).
PSYCOPG_PREPARED_MAX = 100

#: Client-side state with no public setter or getter, reset through psycopg's
#: private attributes (named as in the suite's session fingerprint).
PRIVATE_CLIENT_STATE = ("notice_handlers", "notify_handlers", "adapters", "pending_notifies")


def client_defaults(
    *, prepare_threshold: int | None, cursor_factory: type[psycopg.Cursor[Any]] | None
) -> dict[str, Any]:
    """The public client-side attributes the reset puts back, with their values.

    What a new connection of the pool has: psycopg's defaults, but
    ``prepare_threshold`` and ``cursor_factory`` from the settings.
    ``autocommit`` comes first (the others apply to the transactions psycopg begins).
    """
    defaults: dict[str, Any] = {
        "autocommit": True,
        "isolation_level": None,
        "read_only": None,
        "deferrable": None,
        "prepare_threshold": prepare_threshold,
        "prepared_max": PSYCOPG_PREPARED_MAX,
        "row_factory": tuple_row,
        "server_cursor_factory": psycopg.ServerCursor,
    }
    if cursor_factory is not None:
        defaults["cursor_factory"] = cursor_factory
    return defaults


def restore_client_attributes(
    conn: psycopg.Connection,
    *,
    prepare_threshold: int | None,
    cursor_factory: type[psycopg.Cursor[Any]] | None,
) -> None:
    """Back to the configured client-side defaults. The connection must be IDLE.

    Only what differs is set: psycopg's transaction-characteristic setters
    take the connection's lock and run a generator each, even for the same value.
    """
    read_all, values, items = _defaults(prepare_threshold, cursor_factory)
    if read_all(conn) != values:  # the common case: a request left them alone
        for name, value in items:
            current = getattr(conn, name)
            if current is not value and current != value:
                setattr(conn, name, value)
    _drop_handlers_and_adapters(conn)


@functools.lru_cache(maxsize=32)
def _defaults(
    prepare_threshold: int | None, cursor_factory: type[psycopg.Cursor[Any]] | None
) -> tuple[Callable[[Any], tuple[Any, ...]], tuple[Any, ...], tuple[tuple[str, Any], ...]]:
    """:func:`client_defaults` once per settings (on every return's path): a getter
    of all the attributes at once, their default values, and the items in order."""
    defaults = client_defaults(prepare_threshold=prepare_threshold, cursor_factory=cursor_factory)
    return operator.attrgetter(*defaults), tuple(defaults.values()), tuple(defaults.items())


def _drop_handlers_and_adapters(conn: psycopg.Connection) -> None:
    """What a request added that psycopg has no public way to undo.

    Handlers a user added would see the next user's notices and
    notifications; adapters registered on ``conn.adapters`` (a loader, a
    dumper, ``TypeInfo.register(conn)``) would change how the next user's
    values are loaded and dumped (:func:`plain_pool._compat.reset_adapters`
    says how they are restored). Through psycopg's private attributes: if
    their shape changed, :mod:`plain_pool._compat` raises, the reset fails
    and the connection is closed instead of reused.
    """
    _compat.clear_notice_handlers(conn)
    _compat.clear_notify_handlers(conn)
    _compat.reset_adapters(conn)


def forget_pending_notifications(conn: psycopg.Connection) -> None:
    """Drop notifications psycopg received and kept for ``conn.notifies()`` (private deque).

    Raises :class:`ResetFailed` if psycopg's shape changed (the connection is discarded).
    """
    try:
        _compat.clear_notifies_backlog(conn)
    except _compat.PrivateApiChanged as exc:
        raise ResetFailed(str(exc)) from exc


def forget_client_prepared_statements(conn: psycopg.Connection) -> None:
    """Empty psycopg's prepared-statement cache after the server dropped them all.

    No public API for it (:func:`plain_pool._compat.forget_prepared`, which
    raises if psycopg's shape changed: the reset fails, the connection is
    closed). Without prepared statements (prepare_threshold None) it is empty.
    """
    _compat.forget_prepared(conn)


def user_prepared_statements_sql(conn: psycopg.Connection) -> str | None:
    """For KEEP_PREPARED: a DO block deallocating statements psycopg does not own.

    Statements in psycopg's cache stay (their names are still valid); any
    other one was PREPAREd by hand and belongs to the previous user. If
    psycopg's shape changed, which ones it owns is unknown:
    :func:`plain_pool._compat.prepared_names` raises and the reset fails.
    """
    keep = _compat.prepared_names(conn)
    array = "ARRAY[" + ",".join("'" + n.replace("'", "''") + "'" for n in keep) + "]::text[]"
    return (
        "DO $plain_pool$DECLARE r record; BEGIN "
        "FOR r IN SELECT name FROM pg_prepared_statements "
        f"WHERE NOT (name = ANY({array})) LOOP "
        "EXECUTE format('DEALLOCATE %I', r.name); END LOOP; END$plain_pool$"
    )


#: Set on a connection whose reset was sent on return and whose result has not
#: been read yet: ``monotonic()`` of the send (see :func:`send_reset`).
RESET_SENT_AT = "_plain_pool_reset_sent_at"

#: Set by :func:`finish_reset`: the session was reset and is not configured yet
#: (whoever finished the reset - a checkout, or the pool's ``check()`` - the
#: configuration runs at the next checkout, see :func:`take_configure_due`).
CONFIGURE_DUE = "_plain_pool_configure_due"


class ResetFailed(psycopg.OperationalError):
    """The reset sent on return failed or got no answer: the session may be dirty."""


def send_reset(
    conn: psycopg.Connection,
    *,
    prepare_threshold: int | None,
    cursor_factory: type[psycopg.Cursor[Any]] | None,
) -> None:
    """The reset in flight: restore the client side, SEND ``DISCARD ALL``, do not wait.

    Why: the round trip is the reset's whole price on the caller's path
    (measured: checkouts/s fell by a third). Sent here, it runs on the server
    while the connection sits in the pool, and :func:`finish_reset` reads its
    result at the next checkout - normally already there. Until then the
    connection is ACTIVE at the libpq level: any query psycopg tried on it
    would fail loudly ("another command is already in progress"), never run
    on a dirty session. The connection must be IDLE.
    """
    restore_client_attributes(
        conn, prepare_threshold=prepare_threshold, cursor_factory=cursor_factory
    )
    _wire.send(conn.pgconn, b"DISCARD ALL")
    setattr(conn, RESET_SENT_AT, monotonic())
    # The server is dropping every prepared statement: so does the client's cache.
    forget_client_prepared_statements(conn)


def reset_in_flight(conn: psycopg.Connection) -> bool:
    """True if ``conn`` has a reset sent and not yet finished."""
    return getattr(conn, RESET_SENT_AT, None) is not None


def finish_reset(conn: psycopg.Connection, deadline: float, *, answer_within: float) -> bool | None:
    """Read the result of the reset sent on return; ``None`` if none was in flight.

    Gives up at ``deadline`` or ``answer_within`` seconds after the send,
    whichever comes first: a connection that sat in the pool longer than that
    without its answer is dead, and is failed at once.

    Returns True if the answer arrived during this call (the server was alive
    a moment ago: a health probe now would tell nothing new), False if it was
    already buffered. Raises :class:`ResetFailed` if the reset failed, the
    connection broke, or no answer came by ``deadline``: the caller discards
    the connection (it is never handed out).
    """
    sent_at = getattr(conn, RESET_SENT_AT, None)
    if sent_at is None:
        return None
    delattr(conn, RESET_SENT_AT)
    pgconn = conn.pgconn
    try:
        fresh = _wire.wait_until_answered(
            pgconn, min(deadline, sent_at + answer_within), "session reset"
        )
        _wire.collect(pgconn, (pq.ExecStatus.COMMAND_OK,), "session reset")
    except psycopg.Error as exc:
        raise ResetFailed(str(exc)) from exc
    if pgconn.status != pq.ConnStatus.OK or pgconn.transaction_status != pq.TransactionStatus.IDLE:
        raise ResetFailed("the connection is not idle after its session reset")
    # The session stopped listening with DISCARD ALL: what arrived before is the
    # previous user's (libpq's queue, then psycopg's backlog).
    _wire.drop_notifications(pgconn)
    forget_pending_notifications(conn)
    setattr(conn, CONFIGURE_DUE, True)
    return fresh


def take_configure_due(conn: psycopg.Connection) -> bool:
    """True (once) if the session was reset since it was last configured."""
    if getattr(conn, CONFIGURE_DUE, False):
        delattr(conn, CONFIGURE_DUE)
        return True
    return False


def reset_session(
    conn: psycopg.Connection,
    *,
    statements: Sequence[str],
    configure: Callable[..., Any],
    session_zone_after_reset: str | None,
    prepare_threshold: int | None,
    cursor_factory: type[psycopg.Cursor[Any]] | None,
) -> None:
    """Reset an IDLE connection in one round trip; raise if anything fails."""
    restore_client_attributes(
        conn, prepare_threshold=prepare_threshold, cursor_factory=cursor_factory
    )
    keeps_prepared = "DISCARD ALL" not in statements and "DEALLOCATE ALL" not in statements
    if len(statements) == 1 and not keeps_prepared:
        # One statement: a plain execute is one round trip and, measured with
        # psycopg 3.3, ~3x cheaper than entering and leaving pipeline mode.
        # parameter_status is fresh afterwards, so configure decides exactly.
        conn.execute(statements[0], prepare=False)  # type: ignore[call-overload]
        configure(conn)
    else:
        with conn.pipeline():
            for statement in statements:
                conn.execute(statement, prepare=False)  # type: ignore[call-overload]
            if statements is KEEP_PREPARED:
                sql = user_prepared_statements_sql(conn)
                if sql:
                    conn.execute(sql, prepare=False)  # type: ignore[call-overload]
            configure(conn, session_zone=session_zone_after_reset)
    if not keeps_prepared:
        forget_client_prepared_statements(conn)
    forget_pending_notifications(conn)
