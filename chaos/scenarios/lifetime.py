"""max_lifetime under steady load: every connection is replaced in time, callers see nothing.

psycopg_pool applies ``max_lifetime`` on return (and in ``pool.check()``),
so under steady load a connection lives at most ``max_lifetime`` plus the
time until its next return. The workload records which backend pid served
each request.
"""

from __future__ import annotations

from chaos import workloads
from chaos.scenarios import REGISTRY, Evidence, Expectations, Finding

MAX_LIFETIME_S = 1.5
MARGIN_S = 1.0
DURATION_S = 5.0


def connections_replaced(evidence: Evidence) -> Finding:
    pids: dict[str, list[float]] = evidence.metrics.get("pids", {})
    spans = {pid: max(ts) - min(ts) for pid, ts in pids.items()}
    longest = max(spans.values(), default=0.0)
    problems = []
    if longest > MAX_LIFETIME_S + MARGIN_S:
        problems.append(
            f"a connection served requests for {longest:.2f} s > max_lifetime {MAX_LIFETIME_S} s"
            f" + {MARGIN_S} s"
        )
    expected = int(DURATION_S / (MAX_LIFETIME_S + MARGIN_S))  # per pooled connection, at least
    if len(pids) < 2 * expected:
        problems.append(f"only {len(pids)} distinct sessions in {DURATION_S} s: not replaced")
    return Finding.of(*problems, pids=len(pids), longest_use_span_s=round(longest, 3))


REGISTRY.register(
    "max-lifetime-steady-load",
    faults=[],
    workload=workloads.lifetime_load,
    expect=Expectations(caller_errors="none", extra=(connections_replaced,)),
    pool={"min_size": 2, "max_size": 2, "max_lifetime": MAX_LIFETIME_S},
    needs=frozenset({"postgres"}),
    threads=2,
    description="max_lifetime 1.5 s: every session replaced within lifetime + 1 s, no errors",
    duration=DURATION_S,
    marks=("chaos",),
    origin=__name__,
)
