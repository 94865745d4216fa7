"""The matrix's rows: each property, and how a cell checks it.

Session-state and configuration rows are :class:`MachineCheck`: a narrow
machine (one kind of dirt, one connection, two requests) searched by
Hypothesis from a fixed seed (:mod:`chaos.matrix.machine_cell`). Fault rows
are :class:`ProbeCheck`: a target-agnostic probe through the
:class:`~chaos.targets.base.Target` API and the server or proxy controls
(:mod:`chaos.matrix.probes`), measuring caller errors and times.

Budgets: every machine row reaches its failure on a broken reference
(:data:`ROW_CANARIES`: ``NoResetOnReturn`` and the other canary variants) within
its first examples from its seed (measured: example 1 to 3); ``max_examples``
keeps a margin of at least 2x over that, which tests/matrix/test_matrix_canary.py
asserts. A passing cell costs the whole budget (0.2-3 s, max_lifetime ~15 s).
"""

from __future__ import annotations

from dataclasses import dataclass

from chaos.machines.dirt import (
    AdvisoryLock,
    ClientAttr,
    Dirt,
    HoldCursor,
    Listen,
    PendingNotification,
    Prepare,
    SetGuc,
    SetRole,
    SetTimeZone,
    TempTable,
)
from chaos.machines.errors import (
    InvariantViolation,
    LifetimeNotEnforced,
    PhantomCommit,
    SessionLeak,
    StaleRole,
    StaleTimezone,
    UnconfiguredConnection,
    WrongPool,
)
from chaos.machines.pool_machine import LifetimeRules
from chaos.targets.base import TargetOptions

#: One connection: every checkout reuses the session the last request left.
ONE_CONNECTION = TargetOptions(min_size=1, max_size=1, timeout=0.5)


@dataclass(frozen=True)
class MachineCheck:
    """A narrow machine for one cell (see :func:`chaos.matrix.machine_cell.build_machine`)."""

    focus: tuple[str, ...]
    violations: tuple[type[InvariantViolation], ...]
    dirt: tuple[Dirt, ...] = ()
    mixins: tuple[type, ...] = ()
    options: TargetOptions = ONE_CONNECTION
    roles: tuple[str | None, ...] = (None,)
    narrow: tuple[tuple[str, object], ...] = ()
    #: A pattern that makes another violation the row's own (e.g. a checkout that can never
    #: succeed with a role configured is the role row's finding, raised as UnexplainedError).
    also: str | None = None
    max_requests: int = 2
    seed: int = 0
    max_examples: int = 10
    steps: int = 10


@dataclass(frozen=True)
class ProbeCheck:
    """A fault probe: ``chaos.matrix.probes.<probe>``; ``private``: a server of its own."""

    probe: str
    private: bool = False
    proxy: bool = False
    #: The probe puts proxies of its own in front of the target's middle hop.
    client_hop: bool = False


@dataclass(frozen=True)
class Property:
    """A row: its name (the test id part), the title people read, how it is checked."""

    name: str
    title: str
    group: str
    check: MachineCheck | ProbeCheck
    #: What "pass" promises, in one sentence (the page's row tooltip and the README).
    contract: str = ""


def _dirt_row(name: str, title: str, dirt: Dirt) -> Property:
    return Property(
        name,
        title,
        "session state",
        MachineCheck(focus=("dirty_session",), violations=(SessionLeak,), dirt=(dirt,)),
        contract=f"{title} by one request is gone at the next request's checkout",
    )


SESSION_STATE: tuple[Property, ...] = (
    _dirt_row("guc", "GUC (SET work_mem)", SetGuc("work_mem", "8MB")),
    _dirt_row("set_time_zone", "SET TIME ZONE", SetTimeZone()),
    _dirt_row("set_role", "SET ROLE", SetRole()),
    _dirt_row("temp_table", "temp table", TempTable()),
    _dirt_row("advisory_lock", "advisory lock", AdvisoryLock()),
    _dirt_row("listen", "LISTEN", Listen()),
    _dirt_row("prepared_statement", "PREPARE", Prepare()),
    _dirt_row("hold_cursor", "WITH HOLD cursor", HoldCursor()),
    _dirt_row("isolation", "isolation level", ClientAttr("isolation_level", "SERIALIZABLE")),
    _dirt_row("read_only", "read only", ClientAttr("read_only", True)),
    _dirt_row("deferrable", "deferrable", ClientAttr("deferrable", True)),
    _dirt_row("autocommit", "autocommit off", ClientAttr("autocommit", False)),
    _dirt_row("pending_notification", "pending notification", PendingNotification()),
)

CONFIGURATION: tuple[Property, ...] = (
    Property(
        "timezone_change",
        "timezone change reaches every later checkout",
        "configuration",
        # The probe after each change runs in a request thread of its own: a change
        # applied only to the changing thread's wrapper shows there.
        MachineCheck(focus=("change_settings",), violations=(StaleTimezone,)),
        contract="after a TIME_ZONE change, every checkout (any thread) has the new zone",
    ),
    Property(
        "role_configured",
        "role configured on every checkout",
        "configuration",
        MachineCheck(
            focus=("checkout", "give_back", "change_settings"),
            violations=(UnconfiguredConnection, StaleRole),
            roles=("chaos_app",),
            also=r"checkout of Request\(\d+\) failed",
        ),
        contract="with a role configured, every checkout runs as that role",
    ),
    Property(
        "own_pool",
        "connection goes back to its own pool",
        "configuration",
        # A zone change (a new pool) while a request holds a connection of the old one.
        # The request's own thread applies the change (ensure_timezone()), as a request
        # whose code changes the zone does: its wrapper then computes the new pool.
        MachineCheck(
            focus=("checkout", "change_settings_in_request", "give_back"),
            violations=(WrongPool,),
        ),
        contract="a connection held across a zone change goes back to the pool it came from",
    ),
    Property(
        "max_lifetime",
        "max_lifetime enforced",
        "configuration",
        MachineCheck(
            focus=("slow_request",),
            violations=(LifetimeNotEnforced,),
            mixins=(LifetimeRules,),
            options=TargetOptions(min_size=1, max_size=1, timeout=0.5, max_lifetime=0.5),
            # Each step sleeps up to 1 s: few, short programs (NeverExpires: example 3).
            max_examples=6,
            steps=3,
        ),
        contract="a connection returned older than max_lifetime is never handed out again",
    ),
    Property(
        "phantom_commit",
        "ledger: an uncommitted write never commits",
        "writes",
        # A connection handed out still inside the last request's transaction is the
        # phantom commit waiting for the next COMMIT (chaos.ledger's definition).
        MachineCheck(
            focus=("leave_transaction_open",),
            violations=(PhantomCommit,),
            also=r"transaction_status: expected 'IDLE'",
        ),
        contract="a transaction left open at return is rolled back, never committed later",
    ),
)

FAULTS: tuple[Property, ...] = (
    Property(
        "ledger_restart",
        "ledger: no lost / phantom writes across a restart",
        "writes",
        ProbeCheck("ledger_restart", private=True),
        contract="every acknowledged write is there once, no failed write is there",
    ),
    Property(
        "restart",
        "restart: caller errors, first success after up",
        "faults",
        ProbeCheck("restart", private=True),
        contract="idle pool, fast restart: 0 caller errors, first success within 500 ms of up",
    ),
    Property(
        "crash",
        "crash: caller errors, first success after up",
        "faults",
        ProbeCheck("crash", private=True),
        contract="idle pool, a backend SIGKILLed: 0 caller errors, first success within 500 ms",
    ),
    Property(
        "half_open",
        "half-open link: a checkout ends within its timeout",
        "faults",
        ProbeCheck("half_open", proxy=True),
        contract="a checkout over a link that drops everything ends within timeout + 1 s",
    ),
    Property(
        "half_open_client_hop",
        "half-open app -> PgBouncer link: a checkout ends within its timeout",
        "faults",
        ProbeCheck("half_open_client_hop", client_hop=True),
        contract="a checkout over a client hop that drops everything ends within timeout + 1 s "
        "(n/a: no middle hop)",
    ),
    Property(
        "outage",
        "outage (link down): a checkout ends within its timeout",
        "faults",
        ProbeCheck("outage", proxy=True),
        contract="a checkout while connections are refused ends within timeout + 1 s",
    ),
    Property(
        "too_many_connections",
        "too many connections: bounded sessions, pool timeout",
        "faults",
        ProbeCheck("too_many_connections"),
        contract="never more server sessions than max_size; the extra caller gets a pool "
        "timeout, not the server's 53300",
    ),
)

PROPERTIES: dict[str, Property] = {p.name: p for p in (*SESSION_STATE, *CONFIGURATION, *FAULTS)}


#: For each machine row, the broken plain_pool variant (chaos.targets.variants) it must catch.
ROW_CANARIES: dict[str, str] = {
    **{p.name: "NoResetOnReturn" for p in SESSION_STATE},
    "timezone_change": "PoolNotClosedOnTimezoneChange",
    "role_configured": "ConfigureOnlyWhenNotPooled",
    "own_pool": "PutconnToCurrentPool",
    "max_lifetime": "NeverExpires",
    "phantom_commit": "CommitOnReturn",
}
