"""Network faults through the proxy: latency, slicing, and resets mid-query and mid-COMMIT.

Latency: the pool keeps serving and each request slows by what the added
round trips predict. Resets: the ledger proves no acknowledged write was
lost and no abandoned one committed; a reset during COMMIT is an uncertain
outcome (made likely by a deferred trigger that makes COMMIT take 20 ms).
"""

from __future__ import annotations

import statistics

from chaos import workloads
from chaos.scenarios import REGISTRY, Expectations, FaultStep, ScenarioResult

LATENCY_MS = 50


def latency_as_predicted(result: ScenarioResult) -> list[str]:
    """During the fault each request takes at least one added round trip, and not absurdly more."""
    window = result.windows[0]
    start, end = window.applied_at + 0.1, (window.ended_at or window.applied_at) - 0.05
    before = [o for o in result.ops if o.ok and o.ended < window.applied_at]
    during = [o for o in result.ops if o.ok and start <= o.started and o.ended <= end]
    if not before or not during:
        return [f"not enough operations to compare ({len(before)} before, {len(during)} during)"]
    base = statistics.median(o.ended - o.started for o in before) * 1000
    slow = statistics.median(o.ended - o.started for o in during) * 1000
    rate_before = len(before) / max(window.applied_at - result.t0, 1e-3)
    rate_during = len(during) / max(end - start, 1e-3)
    result.metrics.update(
        median_ms_before=round(base, 2),
        median_ms_during=round(slow, 2),
        throughput_before=round(rate_before, 1),
        throughput_during=round(rate_during, 1),
        predicted_throughput_max=round(result_threads(result) * 1000 / LATENCY_MS, 1),
    )
    problems = []
    # one query = one round trip at least; checkout + query + return stays under ~6 round trips
    if not LATENCY_MS * 0.9 <= slow <= LATENCY_MS * 6 + base + 50:
        problems.append(f"median request {slow:.1f} ms with {LATENCY_MS} ms latency: unexplained")
    if rate_during > result_threads(result) * 1000 / (LATENCY_MS * 0.9):
        problems.append(f"throughput {rate_during:.0f}/s is above what the latency allows")
    return problems


def result_threads(result: ScenarioResult) -> int:
    return len({o.worker for o in result.ops if o.worker >= 0}) or 1


net = {"needs": frozenset({"proxy"}), "origin": __name__}

REGISTRY.register(
    "latency-50ms",
    faults=[FaultStep(at=0.8, fault="latency", params={"ms": LATENCY_MS}, hold=1.5)],
    workload=workloads.under_load,
    expect=Expectations(caller_errors="none", extra=(latency_as_predicted,)),
    description="50 ms downstream latency: no errors, throughput drops as predicted",
    duration=2.8,
    marks=(),
    **net,
)
REGISTRY.register(
    "slicer",
    faults=[
        FaultStep(
            at=0.5,
            fault="slicer",
            params={"average_size": 8, "size_variation": 4, "delay": 100},
            hold=1.5,
        )
    ],
    workload=workloads.mixed_load,
    expect=Expectations(caller_errors="none", ledger=True),
    description="TCP packets sliced into 8-byte pieces: the pool keeps serving, no errors",
    duration=2.5,
    marks=("chaos",),
    **net,
)
REGISTRY.register(
    "reset-peer-mid-query",
    faults=[FaultStep(at=0.8, fault="reset_peer", params={"timeout": 0}, hold=0.4)],
    workload=workloads.mixed_load,
    expect=Expectations(max_recovery_s=1.0, ledger=True),
    description="connections reset mid-query: ledger holds, the pool recovers after the heal",
    duration=2.5,
    marks=("chaos",),
    **net,
)
REGISTRY.register(
    "reset-peer-mid-commit",
    faults=[
        FaultStep(at=0.6, fault="reset_peer", params={"timeout": 15}, hold=0.3),
        FaultStep(at=1.4, fault="reset_peer", params={"timeout": 30}, hold=0.3),
    ],
    workload=workloads.slow_commit_writes,
    expect=Expectations(max_recovery_s=1.0, ledger=True),
    description="resets while COMMIT runs (a deferred trigger makes it take 20 ms): ledger holds",
    duration=2.5,
    marks=("chaos",),
    **net,
)
