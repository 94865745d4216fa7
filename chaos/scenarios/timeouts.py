"""The timeout contract: an error at the deadline, never a silent hang (HikariCP, psycopg tests).

While the database is unreachable a checkout raises ``PoolTimeout`` within
[timeout, timeout + margin]: with the proxy down (connections refused), and
with the proxy black-holing traffic (half-open: the backend's health probe is
bounded by the checkout's remaining time, new connections by
``connect_timeout``). A query in flight on a half-open link is bounded only by
a client-side deadline, which the ``timeout-half-open`` workload sets; the
reset on return is bounded by the backend (``plain_pool.health.RESET_TIMEOUT``).

The hazard: without a client-side deadline a query in flight on a half-open
connection waits until the link heals. Through Toxiproxy the client's TCP
peer is the proxy, whose kernel acknowledges every byte, so keepalives and
``tcp_user_timeout`` never fire, and the server never sees the query, so
``statement_timeout`` cannot either. ``hazard-half-open-no-timeouts`` keeps
all three on, holds the fault longer than any of them, and passes when the
callers were blocked until the heal (the documented hazard), bounded by the
runner's watchdog and the heal (which closes the connections the toxic held).
"""

from __future__ import annotations

from chaos import workloads
from chaos.faults import CHAOS_TIMEOUTS
from chaos.scenarios import REGISTRY, Evidence, Expectations, FaultStep, Finding
from chaos.scenarios._checkers import classify_errors
from plain_pool.health import RESET_TIMEOUT

POOL_TIMEOUT_S = 1.0
#: psycopg's own tests allow 0.1 s; a shared, noisy 2-core machine gets 0.5 s (measured:
#: 1.000-1.008 s for timeout=1.0; an unbounded wait would last the whole fault, 2.5 s).
MARGIN_S = 0.5
#: The reset on return is bounded by the backend.
RESET_TIMEOUT_S = RESET_TIMEOUT
#: Recovery after the heal: the pool reconnects every <= 50 ms (ShortBackoff);
#: 0.5 s is that plus a CI margin for a noisy 2-core machine.
RECOVERY_S = 0.5

HAZARD_AT_S = 0.5
#: Longer than every bound that does not help: tcp_user_timeout (3 s), keepalives
#: (idle 1 s + 3 x 1 s = 4 s) and the statement_timeout set below (1 s).
HAZARD_HOLD_S = 5.0
HAZARD_STATEMENT_TIMEOUT_MS = 1000
KEEPALIVE_DETECTION_S = (
    CHAOS_TIMEOUTS.keepalives_idle
    + CHAOS_TIMEOUTS.keepalives_interval * CHAOS_TIMEOUTS.keepalives_count
)


def pool_timeouts_bounded(result: Evidence) -> Finding:
    """Every PoolTimeout came within [timeout, timeout + margin]; at least one came."""
    waits = [o.ended - o.started for o in result.ops if o.error_type == "PoolTimeout"]
    metrics: dict[str, object] = {"pool_timeouts": len(waits)}
    if waits:
        metrics["pool_timeout_wait_s"] = [round(min(waits), 3), round(max(waits), 3)]
    problems = []
    if not waits:
        problems.append("no checkout raised PoolTimeout while the database was unreachable")
    low, high = POOL_TIMEOUT_S - 0.01, POOL_TIMEOUT_S + MARGIN_S
    bad = [w for w in waits if not low <= w <= high]
    if bad:
        problems.append(
            f"{len(bad)} PoolTimeout(s) outside [{POOL_TIMEOUT_S}, {high}] s: "
            f"{', '.join(f'{w:.3f}' for w in bad[:5])}"
        )
    return Finding.of(*problems, **metrics)


def only_pool_timeouts_or_in_flight(result: Evidence) -> list[str]:
    """Callers saw PoolTimeout, or an error on the connection they held when the fault hit."""
    _, other = classify_errors(result)
    unexpected = [o for o in other if o.error_type != "PoolTimeout"]
    if unexpected:
        o = unexpected[0]
        return [
            f"{len(unexpected)} error(s) neither PoolTimeout nor in flight at the fault, e.g. "
            f"{o.kind} t={o.started - result.t0:.3f}..{o.ended - result.t0:.3f}s "
            f"{o.error_type}: {o.error}"
        ]
    return []


def longest_op(bound_s: float):
    def no_op_longer_than_bound(result: Evidence) -> Finding:
        longest = max((o.ended - o.started for o in result.ops if o.worker >= 0), default=0.0)
        metrics = {"longest_op_s": round(longest, 3), "op_bound_s": bound_s}
        if result.hung_threads:
            return Finding.of(
                f"{result.hung_threads} thread(s) still blocked after the watchdog", **metrics
            )
        if longest > bound_s:
            return Finding.of(
                f"an operation took {longest:.2f} s > {bound_s:.2f} s (a hang)", **metrics
            )
        return Finding.of(**metrics)

    return no_op_longer_than_bound


def hazard_documented(result: Evidence) -> Finding:
    """The hazard as documented: queries in flight blocked until the heal, then failed.

    Passes when at least one caller was blocked longer than keepalives,
    tcp_user_timeout and statement_timeout would allow, and was released by
    the heal (not by one of them). Fails if nothing blocked (then something
    bounds the wait and the documentation is wrong) or if a thread outlived
    the watchdog (the scenario itself would hang the suite).
    """
    window = result.windows[0]
    healed = window.ended_at
    if healed is None:
        return Finding.of("the half-open fault was never healed")
    blocked = [
        o
        for o in result.ops
        if o.worker >= 0 and o.started < healed and o.ended - o.started > KEEPALIVE_DETECTION_S
    ]
    longest = max((o.ended - o.started for o in result.ops if o.worker >= 0), default=0.0)
    metrics = {
        "longest_op_s": round(longest, 3),
        "blocked_callers": len(blocked),
        "blocked_s": sorted(round(o.ended - o.started, 3) for o in blocked),
        "released_after_heal_s": sorted(round(o.ended - healed, 3) for o in blocked),
    }
    if result.hung_threads:
        return Finding.of(
            f"{result.hung_threads} thread(s) still blocked after the watchdog", **metrics
        )
    if not blocked:
        return Finding.of(
            f"hazard not reproduced: no caller blocked longer than {KEEPALIVE_DETECTION_S} s "
            f"(longest {longest:.2f} s) - something bounds a query on a half-open link",
            **metrics,
        )
    early = [o for o in blocked if o.ended < healed - 0.05]
    if early:
        return Finding.of(
            f"{len(early)} blocked caller(s) released before the heal: a timeout fired", **metrics
        )
    late = [o for o in blocked if o.ended > healed + 1.0]
    if late:
        return Finding.of(
            f"{len(late)} blocked caller(s) still blocked 1 s after the heal", **metrics
        )
    note = (
        f"documented hazard: with keepalives, tcp_user_timeout "
        f"({CHAOS_TIMEOUTS.tcp_user_timeout_ms} ms) and statement_timeout "
        f"({HAZARD_STATEMENT_TIMEOUT_MS} ms) on but no client-side deadline, "
        f"{len(blocked)} caller(s) were blocked {min(o.ended - o.started for o in blocked):.2f}"
        f"..{longest:.2f} s, released only by the heal"
    )
    return Finding((), metrics, (note,))


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
    expect=Expectations(
        max_recovery_s=RECOVERY_S,
        extra=(pool_timeouts_bounded, only_pool_timeouts_or_in_flight),
    ),
    description="proxy down: every checkout raises PoolTimeout at the deadline, then recovers",
    duration=4.0,
    **common,
)
REGISTRY.register(
    "timeout-half-open",
    faults=[FaultStep(at=0.5, fault="half_open", hold=3.0)],
    workload=workloads.under_load_with_deadlines,
    expect=Expectations(
        max_recovery_s=RECOVERY_S,
        extra=(
            pool_timeouts_bounded,
            only_pool_timeouts_or_in_flight,
            longest_op(max(POOL_TIMEOUT_S, workloads.QUERY_DEADLINE_S, RESET_TIMEOUT_S) + MARGIN_S),
        ),
    ),
    description="half-open: PoolTimeout at the deadline, no caller blocked past its bounds",
    duration=4.5,
    **common,
)
REGISTRY.register(
    "hazard-half-open-no-timeouts",
    faults=[FaultStep(at=HAZARD_AT_S, fault="half_open", hold=HAZARD_HOLD_S)],
    workload=workloads.held_sessions,
    expect=Expectations(max_recovery_s=RECOVERY_S, extra=(hazard_documented,)),
    options={
        "connect_options": {
            "connect_timeout": None,  # no client-side deadline at all
            "options": f"-c statement_timeout={HAZARD_STATEMENT_TIMEOUT_MS}",
        }
    },
    description="the documented hazard: no client deadline, in-flight queries block until heal",
    duration=HAZARD_AT_S + HAZARD_HOLD_S + 1.0,
    **common,
)
