"""The error judge: is an error a step ran into allowed by what the model knows?

A pure function of the error and the model's facts (:class:`Facts`), so that
it is unit-testable on exception objects without a server, and the same for
every target: it judges the error's root cause
(:func:`chaos.faults.outcomes.root_cause`), not the class the caller saw, so
Django's ``django.db.utils.OperationalError`` around a psycopg error and
SQLAlchemy's ``DBAPIError`` around it are judged like the psycopg error
plain_pool lets through.

An error is allowed when the active faults explain it
(:func:`chaos.faults.outcomes.explained`), when it broke a connection that was
out during a fault, or, at a checkout, when every connection is held or a
recovery is pending (a pool timeout), or, with health checks off, when a
connection that died while pooled fails its first use (once per pooled
connection per fault). Otherwise it breaks an invariant: which one is in the
:class:`Verdict`, for the machine to raise (``PoolMachine._failed``).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import errors as pgerrors
from psycopg_pool import PoolClosed

from chaos.faults.base import NO_EFFECTS, Effects
from chaos.faults.outcomes import (
    Outcome,
    classify,
    explained,
    is_connection_lost,
    is_pool_timeout,
    root_cause,
)
from chaos.machines.errors import (
    DeadConnectionHandedOut,
    InvariantViolation,
    PreparedStatementsBroken,
    UnexplainedError,
    WrongPool,
)

#: Steps that give a connection back (psycopg_pool refuses one from another pool: ValueError).
RETURN_STEPS = frozenset({"give_back", "finish"})


@dataclass(frozen=True)
class Facts:
    """What the model knows when a step failed (gathered by ``PoolMachine._failed``)."""

    #: The step: "checkout", "give_back", "finish", "dirty", "write_uncommitted", ...
    step: str
    #: The request's repr, for messages ("Request(1)"; "None" for a control step).
    request: str = "None"
    #: The step could have committed a write before it failed (classify's ``wrote``).
    wrote: bool = False
    #: The combined effects of the active faults, and the faults themselves (for messages).
    effects: Effects = NO_EFFECTS
    active_faults: tuple[object, ...] = ()
    #: The request is one the model tracks (the machine's probe is not).
    tracked: bool = False
    #: The model says the request holds a connection; whether that connection was out during
    #: a fault (exposed) or left uncertain by an earlier step (broken); the pool that lent it.
    holding: bool = False
    exposed: bool = False
    broken: bool = False
    lender: int | None = None
    #: The pool a checkout would use now, and whether requests hold all its connections.
    current_pool: int | None = None
    pool_exhausted: bool = False
    #: A fault happened and no checkout has succeeded since it was healed.
    recovery_pending: bool = False
    health_checks: bool = True
    #: Checkouts that may still fail on a connection that died while pooled (checks off).
    dead_handouts_allowed: int = 0


@dataclass(frozen=True)
class Verdict:
    """The judgement: an allowed outcome, or the invariant broken and what to say."""

    outcome: Outcome
    violation: type[InvariantViolation] | None = None
    message: str = ""
    #: Allowed as the first failure of a connection that died while pooled: spend one.
    spends_dead_handout: bool = False
    #: The session was lost: ask the request whether it still holds a connection.
    resync: bool = False

    @property
    def allowed(self) -> bool:
        return self.violation is None

    def raise_for(self, error: BaseException) -> None:
        """Raise the violation (from ``error``), if the error was not allowed."""
        if self.violation is not None:
            raise self.violation(self.message) from error


def describe(error: BaseException) -> str:
    """``Class: message``, naming the root cause when a framework wrapped it."""
    root = root_cause(error)
    text = f"{type(error).__name__}: {error}"
    if root is error:
        return text
    return f"{type(error).__name__} (from {type(root).__module__}.{type(root).__name__}): {error}"


def judge(error: BaseException, facts: Facts) -> Verdict:
    """Judge ``error``, met by ``facts.step``, against what the model knows."""
    root = root_cause(error)
    what, request, text = facts.step, facts.request, describe(error)
    outcome = classify(error, wrote=facts.wrote)

    def violation(kind: type[InvariantViolation], message: str) -> Verdict:
        return Verdict(outcome, kind, message)

    if isinstance(root, pgerrors.InvalidSqlStatementName | pgerrors.DuplicatePreparedStatement):
        return violation(PreparedStatementsBroken, f"{what}: {text}")
    if isinstance(root, PoolClosed):
        # Not a lost connection (psycopg_pool derives it from OperationalError): a pool
        # closed while still in use, which no fault explains.
        return violation(UnexplainedError, f"{what} of {request} used a closed pool: {text}")
    lost = is_connection_lost(root)
    spends = False
    if explained(root, facts.effects):
        allowed = True
    elif facts.holding and what != "checkout":
        allowed = (facts.exposed or facts.broken) and lost
    else:
        allowed = False
    if not allowed and what == "checkout":
        if is_pool_timeout(root):
            allowed = facts.recovery_pending or facts.pool_exhausted
        elif lost and facts.health_checks:
            return violation(
                DeadConnectionHandedOut,
                f"{what} of {request} got a dead connection with no fault active "
                f"(health checks on): {text}",
            )
        elif lost:
            # Health checks off: a connection that died while pooled fails its first
            # use, once; a second failure of the same kind means a dead one went back.
            if facts.dead_handouts_allowed <= 0:
                return violation(
                    DeadConnectionHandedOut,
                    f"{what} of {request} got a dead connection, more often than once "
                    f"per pooled connection since the last fault (health checks off): {text}",
                )
            allowed = spends = True
    if not allowed and isinstance(root, ValueError) and what in RETURN_STEPS:
        # psycopg_pool refuses a connection from another pool with ValueError.
        lender = facts.lender if facts.holding else "?"
        return violation(
            WrongPool,
            f"{what} of {request}: returning its connection failed (lent by pool "
            f"{lender}, current pool {facts.current_pool}): {error}",
        )
    if not allowed:
        return violation(
            UnexplainedError,
            f"{what} of {request} failed with no fault to explain it: "
            f"{text} (active: {list(facts.active_faults)})",
        )
    return Verdict(outcome, spends_dead_handout=spends, resync=facts.tracked and lost)
