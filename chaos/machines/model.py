"""The model the state machines reason with: what *should* be true, never what is.

Preconditions and outcome checks read only this model. It holds:

- the settings in force (timezone, ``USE_TZ``, role) and the pool generation
  (bumped whenever the pool is closed/replaced);
- which simulated request holds which backend (pid + start time), since when,
  from which pool generation, with which uncommitted writes;
- the faults: which are active, a counter bumped on every fault (so a
  connection checked out before a fault is known to be *exposed* to it), and
  whether recovery after the last heal has been proven yet.

Outcomes are classified ok / failed / uncertain (:func:`classify`); the model
then says whether a failure is *allowed* (:meth:`Model.may_fail_checkout`,
:meth:`Model.may_fail_on`). Anything not allowed is an invariant violation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import psycopg
from psycopg import errors as pgerrors
from psycopg_pool import PoolTimeout


@dataclass(frozen=True, order=True)
class SettingsValue:
    """The database settings the backend must apply to every checkout."""

    time_zone: str = "UTC"
    use_tz: bool = True
    role: str | None = None

    def __repr__(self) -> str:
        return f"SettingsValue({self.time_zone!r}, use_tz={self.use_tz!r}, role={self.role!r})"


@dataclass(frozen=True, order=True)
class Backend:
    """A server session's identity: pids are reused, (pid, start time) is not."""

    pid: int
    started: float

    def __repr__(self) -> str:
        return f"Backend({self.pid!r}, {self.started!r})"


@dataclass
class Holding:
    """What the model knows about a connection a request holds."""

    backend: Backend | None  # None: a connection the request got in an uncertain step
    generation: int
    settings: SettingsValue
    fault_epoch: int
    faults_active_at_checkout: bool
    age_at_checkout: float
    checked_out_at: float
    in_transaction: bool = False
    tx_failed: bool = False
    autocommit: bool = True
    uncommitted_tokens: list[str] = field(default_factory=list)
    broken: bool = False

    def exposed(self, model: Model) -> bool:
        """Did a fault happen (or was one active) while this connection was out?"""
        return self.faults_active_at_checkout or self.fault_epoch != model.fault_epoch


@dataclass
class RequestState:
    number: int
    holding: Holding | None = None
    stuck: bool = False


class Outcome(enum.Enum):
    """How an operation ended, Jepsen style."""

    OK = "ok"
    FAILED = "failed"  # definitely did not take effect
    UNCERTAIN = "uncertain"  # may or may not have taken effect (connection lost mid-statement)


#: Errors meaning "the connection or the server went away" (fault-explainable).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    PoolTimeout,
    pgerrors.AdminShutdown,
    pgerrors.CrashShutdown,
    pgerrors.CannotConnectNow,
    pgerrors.QueryCanceled,
    pgerrors.IdleInTransactionSessionTimeout,
)

#: psycopg's client-side prepared statement cache went stale.
PREPARED_CACHE_ERRORS: tuple[type[BaseException], ...] = (
    pgerrors.InvalidSqlStatementName,
    pgerrors.DuplicatePreparedStatement,
)


def classify(exc: BaseException | None, *, during: str) -> Outcome:
    """ok / failed / uncertain for an operation that raised ``exc`` (or None).

    A checkout that failed never touched the session (FAILED). A statement whose
    connection broke may or may not have run (UNCERTAIN); one the server
    rejected (statement_timeout, a SQL error) did not (FAILED).
    """
    if exc is None:
        return Outcome.OK
    if during == "checkout" or isinstance(exc, PoolTimeout | pgerrors.QueryCanceled):
        return Outcome.FAILED
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return Outcome.UNCERTAIN
    return Outcome.FAILED


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, CONNECTION_ERRORS) and not isinstance(exc, PREPARED_CACHE_ERRORS)


@dataclass
class Model:
    """Expected state of the system under test (see module docstring)."""

    max_size: int
    max_lifetime: float
    settings: SettingsValue = field(default_factory=SettingsValue)
    generation: int = 0
    requests: dict[int, RequestState] = field(default_factory=dict)
    next_request: int = 1
    active_faults: dict[str, object] = field(default_factory=dict)
    fault_epoch: int = 0
    recovery_pending: bool = False
    #: Backends returned when older than max_lifetime: must never be handed out again.
    retired: set[Backend] = field(default_factory=set)
    #: Uncommitted tokens of transactions a request walked away from.
    abandoned_tokens: list[str] = field(default_factory=list)
    schedule: list[str] = field(default_factory=list)

    # -- requests ---------------------------------------------------------
    def open_request(self) -> int:
        number = self.next_request
        self.next_request += 1
        self.requests[number] = RequestState(number)
        return number

    def live_requests(self) -> list[RequestState]:
        return [r for r in self.requests.values() if not r.stuck]

    def holders(self) -> list[RequestState]:
        return [r for r in self.requests.values() if r.holding is not None]

    def held_from_current_pool(self) -> int:
        return sum(1 for r in self.holders() if r.holding.generation == self.generation)

    def pool_exhausted(self) -> bool:
        """Every slot of the current pool is out: a checkout may time out."""
        return self.held_from_current_pool() >= self.max_size

    # -- faults -----------------------------------------------------------
    @property
    def faults_active(self) -> bool:
        return bool(self.active_faults)

    def fault_applied(self, name: str, fault: object, *, lasting: bool) -> None:
        self.fault_epoch += 1
        self.recovery_pending = True
        self.schedule.append(f"apply {fault!r}")
        if lasting:
            self.active_faults[name] = fault

    def faults_healed(self) -> None:
        if self.active_faults:
            self.schedule.append("heal " + ", ".join(repr(f) for f in self.active_faults.values()))
        self.active_faults.clear()

    def recovered(self) -> None:
        self.recovery_pending = False

    # -- what a failure may be explained by ------------------------------
    def may_fail_checkout(self, exc: BaseException) -> bool:
        if not is_connection_error(exc):
            return False
        if self.faults_active or self.recovery_pending:
            return True
        return isinstance(exc, PoolTimeout) and self.pool_exhausted()

    def may_fail_on(self, holding: Holding | None, exc: BaseException) -> bool:
        """May an operation on ``holding`` fail with ``exc``?"""
        if not is_connection_error(exc):
            return False
        if self.faults_active:
            return True
        if holding is None:
            return self.recovery_pending
        return holding.exposed(self) or holding.broken
