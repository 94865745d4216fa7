"""Judging an operation's outcome from the faults that were active.

Jepsen's three outcomes: ``ok`` (it happened), ``failed`` (it certainly did
not happen) and ``uncertain`` (it may have happened: the connection was lost
while a write or its commit was in flight). The state machines keep the
active faults in their model; :func:`combined_effects` says what those faults
can cause, :func:`classify` turns an operation's error into an outcome, and
:func:`explained` says whether the faults account for an error at all (an
unexplained error is a bug in the backend, not bad luck).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import psycopg
from psycopg_pool import PoolTimeout

from chaos.faults.base import NO_EFFECTS, Effects, Fault

# SQLSTATEs that mean "this session is gone", not "this statement was refused".
_SESSION_LOST_SQLSTATES = {
    "57P01",  # admin_shutdown (pg_terminate_backend, fast shutdown)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (starting up / shutting down)
    "57P05",  # idle_session_timeout
}


class Outcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    UNCERTAIN = "uncertain"


def combined_effects(faults: Iterable[Fault | object]) -> Effects:
    """The union of what the given faults (or ActiveFault handles) can cause."""
    combined = NO_EFFECTS
    for fault in faults:
        combined = combined | fault.effects  # type: ignore[attr-defined]
    return combined


def is_connection_lost(error: BaseException) -> bool:
    """Whether ``error`` means the connection broke (rather than a refused statement)."""
    if isinstance(error, PoolTimeout):
        return False  # no connection was handed out: nothing was sent
    if isinstance(error, psycopg.InterfaceError):
        return True  # operating on a closed connection
    if isinstance(error, psycopg.OperationalError):
        sqlstate = getattr(error, "sqlstate", None)
        return sqlstate is None or sqlstate.startswith("08") or sqlstate in _SESSION_LOST_SQLSTATES
    return False


def classify(error: BaseException | None, *, wrote: bool) -> Outcome:
    """ok / failed / uncertain for one operation.

    ``wrote``: the operation could have committed a write before it failed
    (an autocommit INSERT, or a COMMIT). Only a lost connection makes such a
    write uncertain; a statement the server refused (a timeout, a constraint)
    was rolled back, and a checkout that timed out sent nothing.
    """
    if error is None:
        return Outcome.OK
    if wrote and is_connection_lost(error):
        return Outcome.UNCERTAIN
    return Outcome.FAILED


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
