"""Stress: 16 threads of mixed transactions, server faults at seeded random moments.

The schedule is drawn from a seed (``PLAIN_POOL_CHAOS_SEED``, or a fresh one
that the report prints and puts in the replay command), so a failure replays
with the same faults at the same moments.
"""

from __future__ import annotations

import random

from chaos import workloads
from chaos.scenarios import REGISTRY, Expectations, FaultStep

DURATION_S = 5.0
FAULTS = ("restart_fast", "restart_immediate", "crash", "terminate_backends")


def stress_schedule(seed: int) -> list[FaultStep]:
    """Three faults, at least 0.8 s apart, between 0.5 s and 1 s before the end."""
    rng = random.Random(seed)
    steps, t = [], 0.5
    for _ in range(3):
        t += rng.uniform(0.0, 0.5)
        steps.append(FaultStep(at=round(t, 3), fault=rng.choice(FAULTS)))
        t += 0.8
    return steps


REGISTRY.register(
    "stress-16-threads-seeded",
    faults=[],
    schedule_factory=stress_schedule,
    seeded=True,
    workload=workloads.mixed_load,
    expect=Expectations(max_recovery_s=0.5, caller_errors="in_flight", ledger=True),
    threads=16,
    pool={"min_size": 4, "max_size": 8},
    description="16 threads of reads and ledger writes; 3 server faults at seeded moments",
    duration=DURATION_S,
    marks=("chaos", "restarts_server"),
    origin=__name__,
)
