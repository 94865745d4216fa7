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
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import psycopg
from psycopg_pool import PoolTimeout

from chaos.faults.base import NO_EFFECTS, Effects, Fault

#: SQLSTATE classes that end the session: 08 connection exception, 57P operator
#: intervention (admin / crash shutdown, cannot connect now, database dropped,
#: idle session timeout). 57014 (query_canceled) is *not* one: the session lives on.
SESSION_LOST_SQLSTATES = ("08", "57P")
#: Severities with which the server ends the session after reporting the error.
SESSION_LOST_SEVERITIES = frozenset({"FATAL", "PANIC"})


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


def is_connection_lost(error: BaseException) -> bool:
    """Whether ``error`` means the session broke, rather than a statement being refused.

    Lost: an operation on a closed connection (``InterfaceError``), a broken
    socket (an ``OperationalError`` without SQLSTATE), a SQLSTATE of
    :data:`SESSION_LOST_SQLSTATES`, or an error the server sent as FATAL or
    PANIC (it closes the session after). Not lost: a checkout that timed out
    (``PoolTimeout``: nothing was sent) and every error the server answered
    with and survived - after such an ERROR at COMMIT, the transaction is
    rolled back (Postgres turns an error after the commit record into a PANIC).
    """
    if isinstance(error, PoolTimeout):
        return False
    if isinstance(error, psycopg.InterfaceError):
        return True
    if not isinstance(error, psycopg.Error):
        return False
    sqlstate = error.sqlstate
    if sqlstate is None:
        return isinstance(error, psycopg.OperationalError)
    if sqlstate.startswith(SESSION_LOST_SQLSTATES):
        return True
    return error.diag.severity_nonlocalized in SESSION_LOST_SEVERITIES


def classify(error: BaseException | None, *, wrote: bool) -> Outcome:
    """ok / fail / info for one operation.

    ``wrote``: the operation could have committed a write before it failed
    (an autocommit INSERT, or a COMMIT already sent). Such a write is ``info``
    when the connection was lost, or when the error is not psycopg's at all
    (it says nothing about the server); a statement the server refused (a
    timeout, a constraint, a serialization failure) was rolled back, and a
    checkout that timed out sent nothing: ``fail``.
    """
    if error is None:
        return Outcome.OK
    if wrote and (is_connection_lost(error) or not isinstance(error, psycopg.Error)):
        return Outcome.INFO
    return Outcome.FAIL


def explained(error: BaseException, effects: Effects) -> bool:
    """Whether the active faults (their combined ``effects``) can account for ``error``."""
    if isinstance(error, PoolTimeout):
        # checkouts wait for connections the faults slowed, blocked or broke
        return effects.slows or effects.may_fail
    if is_connection_lost(error):
        return effects.may_fail
    if isinstance(error, psycopg.errors.QueryCanceled):  # statement_timeout
        return effects.slows or effects.blocks
    return False
