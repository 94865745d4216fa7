"""Postgres restarts (fast, immediate) and crashes, while idle and under load.

The contract (the README's "fast, silent recovery"): with health checks on, callers see
errors only for operations in flight when the server went away - never from
a connection that died while pooled - and the first query after the server
accepts again succeeds within 0.5 s (measured: tens of ms). Without health
checks every pooled connection may fail once. Bare psycopg_pool with ``check`` (the
``BackoffRecovery`` variant) is measured for comparison: about 6.6 s.
"""

from __future__ import annotations

from chaos import workloads
from chaos.scenarios import REGISTRY, Evidence, Expectations, FaultStep, Finding

#: The reference's recovery budget after the server accepts again. Measured: 9-48 ms;
#: bare psycopg_pool's backoff takes seconds (1, 2, 4 s), so 0.5 s tells them apart with a
#: 10x margin for a noisy 2-core machine.
RECOVERY_S = 0.5

SERVER_FAULTS = {
    "restart-fast": "restart_fast",
    "restart-immediate": "restart_immediate",
    "crash": "crash",
}

for prefix, fault in SERVER_FAULTS.items():
    REGISTRY.register(
        f"{prefix}-idle",
        faults=[FaultStep(at=0.5, fault=fault)],
        workload=workloads.idle,
        expect=Expectations(max_recovery_s=RECOVERY_S, caller_errors="none"),
        description=f"{fault} with the pool idle and health checks on: no caller error",
        duration=1.5,
        marks=("chaos", "restarts_server"),
        origin=__name__,
    )
    REGISTRY.register(
        f"{prefix}-load",
        faults=[FaultStep(at=1.0, fault=fault)],
        workload=workloads.mixed_load,
        expect=Expectations(max_recovery_s=RECOVERY_S, caller_errors="in_flight", ledger=True),
        description=f"{fault} under 4 threads of reads and ledger writes, health checks on",
        duration=2.5,
        marks=("chaos", "restarts_server"),
        origin=__name__,
    )

REGISTRY.register(
    "restart-fast-idle-nocheck",
    faults=[FaultStep(at=0.5, fault="restart_fast")],
    workload=workloads.idle,
    expect=Expectations(caller_errors="per_connection"),
    options={"health_checks": False},
    description="health checks off: each pooled connection may fail once, then the pool heals",
    duration=1.5,
    marks=("chaos", "restarts_server"),
    origin=__name__,
)
REGISTRY.register(
    "restart-fast-load-nocheck",
    faults=[FaultStep(at=1.0, fault="restart_fast")],
    workload=workloads.mixed_load,
    expect=Expectations(caller_errors="per_connection", ledger=True),
    options={"health_checks": False},
    description="health checks off under load: errors bounded by in-flight + pool size",
    duration=2.5,
    marks=("chaos", "restarts_server"),
    origin=__name__,
)
REGISTRY.register(
    "restart-fast-idle-bare-psycopg-pool",
    faults=[FaultStep(at=0.5, fault="restart_fast")],
    workload=workloads.idle,
    expect=Expectations(max_recovery_s=15.0, caller_errors="none"),
    variant="BackoffRecovery",
    description="bare psycopg_pool with check (BackoffRecovery): measured, ~6.6 s expected",
    duration=1.5,
    marks=("chaos", "restarts_server", "slow"),
    origin=__name__,
)

# -- an outage longer than reconnect_timeout -------------------------------------------

RECONNECT_FAILED: list[tuple[str, float]] = []


def record_reconnect_failed(pool) -> None:
    """psycopg_pool's ``reconnect_failed`` callback: remember that it was called."""
    import time

    RECONNECT_FAILED.append((getattr(pool, "name", "?"), time.monotonic()))


def reconnect_failed_called(evidence: Evidence) -> Finding:
    calls = [t for _, t in RECONNECT_FAILED if t >= evidence.t0]
    problems = []
    if not calls:
        problems.append(
            "reconnect_failed was never called during an outage longer than reconnect_timeout"
        )
    return Finding.of(*problems, reconnect_failed_calls=len(calls))


REGISTRY.register(
    "outage-beyond-reconnect-timeout",
    faults=[FaultStep(at=0.3, fault="outage", hold=3.0)],
    workload=workloads.under_load,
    expect=Expectations(max_recovery_s=2.0, caller_errors="any", extra=(reconnect_failed_called,)),
    pool={
        "timeout": 0.5,
        "reconnect_timeout": 1.0,
        "reconnect_failed": record_reconnect_failed,
    },
    threads=1,
    description="server down 3 s > reconnect_timeout 1 s: reconnect_failed, then serves again",
    duration=4.0,
    marks=("chaos", "restarts_server"),
    origin=__name__,
)
