"""The model the state machines reason with: what *should* be true, never what is.

Preconditions and outcome checks read only this model. It holds:

- the settings in force (timezone, ``USE_TZ``, role);
- which simulated request holds which backend (pid + creation stamp), since
  when, lent by which pool, with which uncommitted writes;
- the faults: which are active, a counter bumped on every fault (so a
  connection checked out before a fault is known to be *exposed* to it), and
  whether recovery after the last heal has been proven yet.

Outcomes are classified ok / fail / info with
:func:`chaos.faults.outcomes.classify`; the machine then asks the model
whether a failure is *allowed*: explained by the active faults' effects, by
a fault the connection was exposed to while it was out (in flight), or by
a pool whose every connection is held. Anything else is an invariant
violation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class SettingsValue:
    """The database settings the backend must apply to every checkout."""

    time_zone: str = "UTC"
    use_tz: bool = True
    role: str | None = None

    def __repr__(self) -> str:
        return f"SettingsValue({self.time_zone!r}, use_tz={self.use_tz!r}, role={self.role!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


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
    #: Which pool lent it (the target's identity for it); None if unknown.
    pool_id: int | None
    settings: SettingsValue
    fault_epoch: int
    faults_active_at_checkout: bool
    age_at_checkout: float
    checked_out_at: float
    in_transaction: bool = False
    tx_failed: bool = False
    autocommit: bool = True
    read_only: bool = False
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


@dataclass
class Model:
    """Expected state of the system under test (see module docstring)."""

    max_size: int
    max_lifetime: float
    settings: SettingsValue = field(default_factory=SettingsValue)
    requests: dict[int, RequestState] = field(default_factory=dict)
    next_request: int = 1
    active_faults: dict[str, object] = field(default_factory=dict)
    fault_epoch: int = 0
    recovery_pending: bool = False
    #: Backends returned when older than max_lifetime: must never be handed out again.
    retired: set[Backend] = field(default_factory=set)
    #: Uncommitted tokens of transactions a request walked away from.
    abandoned_tokens: list[str] = field(default_factory=list)
    #: Pool operations (pool.check()) stuck under a blocking fault on a control thread: they
    #: must come free once the fault is healed; the next control step uses another thread.
    control_stuck: int = 0
    #: With health checks off, how many checkouts may still fail on a connection that died
    #: while pooled: at most one per pooled connection per fault (max_size per fault).
    dead_handouts_allowed: int = 0

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

    def held_from(self, pool_id: int | None) -> int:
        """Connections requests hold from that pool (an unknown lender counts: it may be it)."""
        return sum(
            1
            for r in self.holders()
            if pool_id is not None and r.holding.pool_id in (pool_id, None)
        )

    def pool_exhausted(self, pool_id: int | None) -> bool:
        """Every connection of that pool is held by a request: a checkout may time out."""
        return self.held_from(pool_id) >= self.max_size

    # -- faults -----------------------------------------------------------
    @property
    def faults_active(self) -> bool:
        return bool(self.active_faults)

    def fault_applied(self, name: str, fault: object, *, lasting: bool) -> None:
        self.fault_epoch += 1
        self.recovery_pending = True
        self.dead_handouts_allowed += self.max_size
        if lasting:
            self.active_faults[name] = fault

    def faults_healed(self) -> None:
        self.active_faults.clear()

    def recovered(self) -> None:
        self.recovery_pending = False
