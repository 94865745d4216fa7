"""Outcomes: one vocabulary and one rule for "the connection was lost", for the whole suite.

Jepsen's three outcomes of an operation, as its caller was told them:
``ok`` (it happened), ``fail`` (it certainly did not happen) and ``info``
(nobody knows: the connection was lost while a write or its COMMIT was in
flight). The write ledger (:mod:`chaos.ledger`) records them, the state
machines judge steps with them.

:func:`is_connection_lost` is the one rule for "the session is gone" (rather
than "the server refused this statement"); :func:`classify` turns an error
into an outcome with it; :func:`combined_effects` and :func:`explained` say
whether the active faults account for an error at all (an unexplained error
is a bug in the backend, not bad luck).

Errors are judged by their cause, not by the class the caller saw:
:func:`root_cause` unwraps what a framework put around psycopg's error
(Django re-raises it as ``django.db.utils.*`` with the original as
``__cause__``; SQLAlchemy as ``sqlalchemy.exc.DBAPIError`` and subclasses with
the original as ``.orig``; Django's pool lets ``psycopg_pool.PoolTimeout``
out as ``django.db.utils.OperationalError``). Duck-typed: neither framework is
imported here.

What PgBouncer answers (it speaks for the server with its own SQLSTATEs and
messages, as FATAL when it closes the client's connection after, and without
the non-localized severity field ``V``: the severity is read from ``S`` too):

- ``query_wait_timeout`` (08P01 FATAL; no server connection came in time): a
  pool timeout, like ``PoolTimeout``: nothing ran (a write: ``fail``),
  explained by a fault that slows or fails; the session is lost.
- ``query_timeout`` (08P01 FATAL): a statement timeout, like 57014, that also
  ends the session (a write: ``info``: it may have run).
- ``server conn crashed?``, ``pgbouncer cannot connect to server``,
  ``server login has been failing, try again later (server_login_retry)``,
  ``client_login_timeout (server down)``, ``server shutting down``,
  ``client_idle_timeout``, ``idle transaction timeout`` (08P01 FATAL), and
  the server's own login error passed on to the clients waiting for it (its
  SQLSTATE, e.g. 57P03, FATAL): the session is lost.
- ``no more connections allowed (max_client_conn)`` (08P01 FATAL from
  PgBouncer 1.18, at login, before authentication; libpq keeps only the text
  of a login error, so psycopg raises a bare ``OperationalError`` with no
  SQLSTATE - evidence/pgbouncer/max_client_conn.py): lost (a connection
  refused); only a fault that fails connections explains it, so with none
  active it is a verdict, as Postgres's own 53300 would be.
- ``prepared statement "..." does not exist`` (26000 ERROR; transaction
  pooling without prepared-statement support): a refused statement (the
  machines call it broken prepared statements).

Older PgBouncer versions sent all of its own as ERROR 08P01: lost all the same
(class 08).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import psycopg
from psycopg import errors as pgerrors
from psycopg_pool import PoolTimeout

from chaos.faults.base import NO_EFFECTS, Effects, Fault

#: SQLSTATE classes that end the session: 08 connection exception, 57P operator
#: intervention (admin / crash shutdown, cannot connect now, database dropped,
#: idle session timeout). 57014 (query_canceled) is *not* one: the session lives on.
SESSION_LOST_SQLSTATES = ("08", "57P")
#: Severities with which the server ends the session after reporting the error.
SESSION_LOST_SEVERITIES = frozenset({"FATAL", "PANIC"})
#: How many wrappers :func:`root_cause` looks through (Django and SQLAlchemy add one each).
MAX_WRAPPING = 8
#: Pool checkout timeouts of systems not imported here, as (module, class name) of a class
#: in the error's MRO: SQLAlchemy's QueuePool ("QueuePool limit of size ... reached").
FOREIGN_POOL_TIMEOUTS = frozenset({("sqlalchemy.exc", "TimeoutError")})
#: PgBouncer's SQLSTATE for the errors it makes up itself (protocol_violation).
PGBOUNCER_SQLSTATE = "08P01"
#: PgBouncer gave up waiting for a server connection: its pool timed out.
PGBOUNCER_POOL_TIMEOUTS = frozenset({"query_wait_timeout"})
#: PgBouncer ended a query that ran too long (and the client's session with it).
PGBOUNCER_QUERY_TIMEOUTS = frozenset({"query_timeout"})


class Outcome(enum.StrEnum):
    """What the caller was told about one operation (Jepsen's ok / fail / info)."""

    OK = "ok"
    FAIL = "fail"
    INFO = "info"


def combined_effects(faults: Iterable[Fault | object]) -> Effects:
    """The union of what the given faults (or ActiveFault handles) can cause."""
    combined = NO_EFFECTS
    for fault in faults:
        combined = combined | fault.effects  # type: ignore[attr-defined]
    return combined


def root_cause(error: BaseException) -> BaseException:
    """The psycopg / psycopg_pool error under the wrappers around ``error``; else ``error``.

    Follows ``.orig`` (SQLAlchemy's ``DBAPIError`` and ``StatementError``) or
    else ``__cause__`` (Django's ``DatabaseErrorWrapper`` raises ``from`` the
    original), at most :data:`MAX_WRAPPING` deep, guarded against cycles, and
    stops at the first ``psycopg.Error`` (psycopg_pool's errors derive from it;
    so do plain_pool's, whose ``__cause__`` is its own business). An error
    with no psycopg error under it is its own root cause.
    """
    seen: set[int] = set()
    current: BaseException = error
    for _ in range(MAX_WRAPPING + 1):
        if isinstance(current, psycopg.Error):
            return current
        if id(current) in seen:
            break
        seen.add(id(current))
        inner = getattr(current, "orig", None)
        if not isinstance(inner, BaseException):
            inner = current.__cause__
        if inner is None:
            break
        current = inner
    return error


def _pgbouncer_says(error: BaseException, messages: frozenset[str]) -> bool:
    if not isinstance(error, psycopg.Error) or error.sqlstate != PGBOUNCER_SQLSTATE:
        return False
    return error.diag.message_primary in messages


def is_pool_timeout(error: BaseException) -> bool:
    """Whether ``error`` (by its root cause) is a checkout that waited for a connection in vain.

    psycopg_pool's ``PoolTimeout`` (plain_pool's, Django's pool), SQLAlchemy's
    QueuePool ``TimeoutError`` and PgBouncer's ``query_wait_timeout``: nothing
    of the operation reached the server.
    """
    root = root_cause(error)
    if isinstance(root, PoolTimeout) or _pgbouncer_says(root, PGBOUNCER_POOL_TIMEOUTS):
        return True
    return any(
        (cls.__module__, cls.__qualname__) in FOREIGN_POOL_TIMEOUTS for cls in type(root).__mro__
    )


def is_statement_timeout(error: BaseException) -> bool:
    """Whether ``error`` (by its root cause) ended a statement that ran too long.

    ``statement_timeout`` (57014, the session lives on) or PgBouncer's
    ``query_timeout`` (which ends the session too).
    """
    root = root_cause(error)
    return isinstance(root, pgerrors.QueryCanceled) or _pgbouncer_says(
        root, PGBOUNCER_QUERY_TIMEOUTS
    )


def is_connection_lost(error: BaseException) -> bool:
    """Whether ``error`` (by its root cause) means the session broke, not a refused statement.

    Lost: an operation on a closed connection (``InterfaceError``), a broken
    socket (an ``OperationalError`` without SQLSTATE), a SQLSTATE of
    :data:`SESSION_LOST_SQLSTATES`, or an error sent as FATAL or PANIC (the
    sender closes the session after; PgBouncer sends no non-localized
    severity, so the severity field is read too). Not lost: a checkout that
    timed out (``PoolTimeout``: nothing was sent) and every error the server
    answered with and survived - after such an ERROR at COMMIT, the
    transaction is rolled back (Postgres turns an error after the commit
    record into a PANIC).
    """
    root = root_cause(error)
    if isinstance(root, PoolTimeout):
        return False
    if isinstance(root, psycopg.InterfaceError):
        return True
    if not isinstance(root, psycopg.Error):
        return False
    sqlstate = root.sqlstate
    if sqlstate is None:
        return isinstance(root, psycopg.OperationalError)
    if sqlstate.startswith(SESSION_LOST_SQLSTATES):
        return True
    severity = root.diag.severity_nonlocalized or root.diag.severity
    return severity in SESSION_LOST_SEVERITIES


def classify(error: BaseException | None, *, wrote: bool) -> Outcome:
    """ok / fail / info for one operation, judged by the error's root cause.

    ``wrote``: the operation could have committed a write before it failed
    (an autocommit INSERT, or a COMMIT already sent). Such a write is ``info``
    when the connection was lost, or when the error is not psycopg's at all
    (it says nothing about the server); a statement the server refused (a
    timeout, a constraint, a serialization failure) was rolled back, and a
    checkout that timed out sent nothing: ``fail``.
    """
    if error is None:
        return Outcome.OK
    root = root_cause(error)
    if is_pool_timeout(root):
        return Outcome.FAIL
    if wrote and (is_connection_lost(root) or not isinstance(root, psycopg.Error)):
        return Outcome.INFO
    return Outcome.FAIL


def explained(error: BaseException, effects: Effects) -> bool:
    """Whether the active faults (their combined ``effects``) can account for ``error``."""
    root = root_cause(error)
    if is_pool_timeout(root):
        # checkouts wait for connections the faults slowed, blocked or broke
        return effects.slows or effects.may_fail
    lost = is_connection_lost(root)
    if is_statement_timeout(root):  # statement_timeout, PgBouncer's query_timeout
        return effects.slows or effects.blocks or (lost and effects.may_fail)
    if lost:
        return effects.may_fail
    return False
