"""Network faults through the proxy: latency, slicing, and connections cut mid-query and mid-COMMIT.

Latency: the pool keeps serving and each request slows by what the added
round trips predict. Cuts: errors only for callers holding a connection
when the cut hit, recovery within 0.5 s of the heal, and the ledger proves
no acknowledged write was lost and no abandoned one committed; a cut during
COMMIT is an uncertain outcome (made likely by a deferred trigger that makes
COMMIT take 20 ms), present once or absent.

The cuts are Toxiproxy's ``reset_peer`` toxic (hence the scenario names): the
next statement (upstream) or answer (downstream) is dropped and the proxy
closes the connection. On the pool's warm connections that close is an
orderly one (EOF), not a TCP RST: Toxiproxy sets SO_LINGER 0 only on
connections accepted while the toxic exists, which here are the reconnects
made during the fault (those are reset at their first packet). libpq reports
EOF and RST alike ("server closed the connection unexpectedly"), so what
these scenarios exercise is a connection lost under a statement, which both
the embedded and the real server inject the same way. ``timeout=0`` makes
the drop and the close one step; a longer timeout would only add a wait
with the dropped bytes missing.
"""

from __future__ import annotations

import statistics

from chaos import workloads
from chaos.scenarios import REGISTRY, Evidence, Expectations, FaultStep, Finding

LATENCY_MS = 50
#: Round trips a request of ``select_one`` waits for: its query, and before it
#: either the rest of the connection's reset in flight (sent when it was last
#: returned, read at checkout: its answer arriving then is also the health
#: probe) or, when that answer was already in, the health probe. The reset
#: itself no longer costs the request a round trip.
ROUND_TRIPS = 2
#: The least a request can wait for: its own query's delayed answer.
MIN_ROUND_TRIPS = 1
#: Recovery after a reset heals: the pool reconnects every <= 50 ms (ShortBackoff);
#: 0.5 s is that plus a CI margin for a noisy 2-core machine.
RESET_RECOVERY_S = 0.5


def latency_as_predicted(result: Evidence) -> Finding:
    """During the fault a request takes ROUND_TRIPS x latency more; throughput follows."""
    window = result.windows[0]
    threads = result_threads(result)
    start, end = window.applied_at + 0.1, (window.ended_at or window.applied_at) - 0.05
    before = [o for o in result.ops if o.ok and o.worker >= 0 and o.ended < window.applied_at]
    during = [
        o for o in result.ops if o.ok and o.worker >= 0 and start <= o.started and o.ended <= end
    ]
    if not before or not during:
        return Finding.of(
            f"not enough operations to compare ({len(before)} before, {len(during)} during)"
        )
    base = statistics.median(o.ended - o.started for o in before) * 1000
    slow = statistics.median(o.ended - o.started for o in during) * 1000
    predicted = base + ROUND_TRIPS * LATENCY_MS
    done = sum(1 for o in result.ops if o.ok and o.worker >= 0 and start <= o.ended <= end)
    rate = done / max(end - start, 1e-3)
    predicted_rate = threads * 1000 / (predicted + workloads.PACE_S * 1000)
    fastest_rate = threads * 1000 / (base + MIN_ROUND_TRIPS * LATENCY_MS + workloads.PACE_S * 1000)
    metrics = {
        "median_ms_before": round(base, 2),
        "median_ms_during": round(slow, 2),
        "median_ms_predicted": round(predicted, 2),
        "throughput_during": round(rate, 1),
        "throughput_predicted": round(predicted_rate, 1),
    }
    problems = []
    # Physics: never faster than the query's own delayed answer. Upper: +50% for a noisy
    # 2-core machine (a request waiting for more round trips than predicted fails it).
    if not MIN_ROUND_TRIPS * LATENCY_MS * 0.98 <= slow <= predicted * 1.5:
        problems.append(
            f"median request {slow:.1f} ms, predicted {predicted:.1f} ms "
            f"({ROUND_TRIPS} x {LATENCY_MS} ms + {base:.1f} ms)"
        )
    if not predicted_rate * 0.6 <= rate <= fastest_rate * 1.1:
        problems.append(
            f"throughput {rate:.1f}/s during the fault, predicted {predicted_rate:.1f}/s"
        )
    return Finding.of(*problems, **metrics)


def result_threads(result: Evidence) -> int:
    return len({o.worker for o in result.ops if o.worker >= 0}) or 1


def served_during_fault(result: Evidence) -> Finding:
    """The pool kept serving: requests completed entirely inside every fault window."""
    problems = []
    served = []
    for window in result.windows:
        end = window.ended_at or window.applied_at
        n = sum(
            1
            for o in result.ops
            if o.ok and o.worker >= 0 and window.applied_at <= o.started and o.ended <= end
        )
        served.append(n)
        if n == 0:
            problems.append(f"no request completed during {window.step.describe()}")
    return Finding.of(*problems, ok_during_fault=served)


#: Pool counters that show a cut reached a pooled connection (masked from the caller).
FAULT_HIT_COUNTERS = ("checks_failed", "reset_failures", "returns_bad", "connections_lost")


def fault_reached_pool(result: Evidence) -> Finding:
    """The cuts hit connections: callers saw errors, or the pool discarded connections.

    Without this a cut that hit nothing (or a toxic that never applied)
    would pass vacuously; the pool masking a cut (a failed health probe or
    session reset, then a fresh connection) is fine and counts as a hit:
    plain_pool counts those in ``checks_failed`` / ``reset_failures`` /
    ``returns_bad``, psycopg_pool in ``connections_lost`` (a connection that
    failed its ``check`` at ``getconn``, or came back broken).
    """
    counters = result.metrics.get("pool", {})
    hits = len(result.errors) + sum(counters.get(k, 0) for k in FAULT_HIT_COUNTERS)
    problems = [] if hits else ["the cuts reached no connection (no error, nothing discarded)"]
    return Finding.of(*problems, fault_hits=hits)


net = {"needs": frozenset({"proxy"}), "origin": __name__}

REGISTRY.register(
    "latency-50ms",
    faults=[FaultStep(at=0.8, fault="latency", params={"ms": LATENCY_MS}, hold=1.5)],
    workload=workloads.under_load,
    expect=Expectations(caller_errors="none", extra=(latency_as_predicted,)),
    description="50 ms downstream latency: no errors, throughput drops as predicted",
    duration=2.8,
    marks=("chaos",),
    **net,
)
REGISTRY.register(
    "slicer",
    faults=[
        FaultStep(
            at=0.5,
            fault="slicer",
            params={"average_size": 8, "size_variation": 4, "delay_us": 100},
            hold=1.5,
        )
    ],
    workload=workloads.mixed_load,
    expect=Expectations(caller_errors="none", ledger=True, extra=(served_during_fault,)),
    description="TCP data sliced into pieces of 2-12 bytes: the pool keeps serving, no errors",
    duration=2.5,
    marks=("chaos",),
    **net,
)
REGISTRY.register(
    "reset-peer-mid-query",
    faults=[FaultStep(at=0.8, fault="reset_peer", params={"timeout": 0}, hold=0.4)],
    workload=workloads.mixed_load,
    expect=Expectations(
        max_recovery_s=RESET_RECOVERY_S,
        caller_errors="in_flight",
        ledger=True,
        extra=(fault_reached_pool,),
    ),
    description="connections cut mid-query (reset_peer): errors in flight only, ledger holds",
    duration=2.5,
    marks=("chaos",),
    **net,
)
REGISTRY.register(
    "reset-peer-mid-commit",
    faults=[
        # server -> client: COMMIT ran, its answer is lost (uncertain, committed)
        FaultStep(at=0.6, fault="reset_peer", params={"timeout": 0}, hold=0.3),
        # client -> server: COMMIT is lost with the connection (uncertain, rolled back)
        FaultStep(
            at=1.4, fault="reset_peer", params={"timeout": 0, "stream": "upstream"}, hold=0.3
        ),
    ],
    workload=workloads.slow_commit_writes,
    expect=Expectations(
        max_recovery_s=RESET_RECOVERY_S,
        caller_errors="in_flight",
        ledger=True,
        extra=(fault_reached_pool,),
    ),
    description="connections cut while COMMIT runs (a deferred trigger: 20 ms): ledger holds",
    duration=2.5,
    marks=("chaos",),
    **net,
)
