"""The timeout contract: an error at the deadline, never a silent hang (HikariCP, psycopg tests).

While the database is unreachable a checkout raises ``PoolTimeout`` within
[timeout, timeout + margin]. A half-open connection (the proxy acknowledges
bytes but nothing comes back) is the hazard: neither keepalives nor
``tcp_user_timeout`` fire, because the client's TCP peer (the proxy) is
alive. The hazard scenario runs without any client timeouts, under the
runner's watchdog, and records how long callers stayed blocked.
"""

from __future__ import annotations

from chaos import workloads
from chaos.scenarios import REGISTRY, Expectations, FaultStep, ScenarioResult

POOL_TIMEOUT_S = 1.0
#: psycopg's own tests allow 0.1 s; a shared 2-core machine gets more.
MARGIN_S = 0.4


def pool_timeouts_bounded(result: ScenarioResult) -> list[str]:
    """Every PoolTimeout came within [timeout, timeout + margin]; at least one came."""
    waits = [o.ended - o.started for o in result.ops if o.error_type == "PoolTimeout"]
    result.metrics["pool_timeouts"] = len(waits)
    if waits:
        result.metrics["pool_timeout_wait_s"] = [round(min(waits), 3), round(max(waits), 3)]
    problems = []
    if not waits:
        problems.append("no checkout raised PoolTimeout while the database was unreachable")
    bad = [w for w in waits if not POOL_TIMEOUT_S - 0.01 <= w <= POOL_TIMEOUT_S + MARGIN_S]
    if bad:
        problems.append(
            f"{len(bad)} PoolTimeout(s) outside [{POOL_TIMEOUT_S}, {POOL_TIMEOUT_S + MARGIN_S}] s: "
            f"{', '.join(f'{w:.3f}' for w in bad[:5])}"
        )
    return problems


def longest_op(bound_s: float):
    def no_op_longer_than_bound(result: ScenarioResult) -> list[str]:
        longest = max((o.ended - o.started for o in result.ops), default=0.0)
        result.metrics["longest_op_s"] = round(longest, 3)
        if result.hung_threads:
            return [f"{result.hung_threads} thread(s) still blocked after the watchdog"]
        if longest > bound_s:
            return [f"an operation took {longest:.2f} s > {bound_s:.2f} s (a hang)"]
        return []

    return no_op_longer_than_bound


def hazard_recorded(result: ScenarioResult) -> list[str]:
    """Not a pass/fail contract: record how long callers were blocked without timeouts."""
    longest = max((o.ended - o.started for o in result.ops), default=0.0)
    result.metrics["longest_op_s"] = round(longest, 3)
    result.notes.append(
        f"documented hazard: without client timeouts a half-open connection blocked a caller "
        f"{longest:.2f} s (until the fault was healed); hung threads at the watchdog: "
        f"{result.hung_threads}"
    )
    return []


common = {
    "needs": frozenset({"proxy"}),
    "pool": {"min_size": 2, "max_size": 2, "timeout": POOL_TIMEOUT_S},
    "threads": 2,
    "marks": ("chaos",),
    "origin": __name__,
}

REGISTRY.register(
    "timeout-proxy-down",
    faults=[FaultStep(at=0.5, fault="down", hold=2.5)],
    workload=workloads.under_load,
    expect=Expectations(max_recovery_s=1.0, extra=(pool_timeouts_bounded,)),
    description="proxy down: every checkout raises PoolTimeout at the deadline, then recovers",
    duration=4.0,
    **common,
)
REGISTRY.register(
    "timeout-half-open",
    faults=[FaultStep(at=0.5, fault="half_open", hold=3.0)],
    workload=workloads.under_load,
    expect=Expectations(max_recovery_s=2.0, extra=(longest_op(POOL_TIMEOUT_S + 3.0 + MARGIN_S),)),
    description="half-open with connect_timeout, keepalives, statement_timeout: no caller hangs",
    duration=4.5,
    **common,
)
REGISTRY.register(
    "hazard-half-open-no-timeouts",
    faults=[FaultStep(at=0.5, fault="half_open", hold=3.0)],
    workload=workloads.under_load,
    expect=Expectations(max_recovery_s=3.0, extra=(hazard_recorded,)),
    settings={
        "POSTGRES_OPTIONS": {
            "connect_timeout": None,
            "keepalives": None,
            "keepalives_idle": None,
            "keepalives_interval": None,
            "keepalives_count": None,
            "tcp_user_timeout": None,
            "options": None,
        }
    },
    description="the documented hazard: no client timeouts, callers block until the heal",
    duration=4.5,
    **common,
)
