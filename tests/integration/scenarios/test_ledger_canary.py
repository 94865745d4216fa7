"""The ledger catches phantom commits: a canary on the CommitOnReturn variant.

A request writes in a transaction, fails and abandons it (the ledger records
``fail``); its connection goes back to the pool still inside the
transaction. The reference rolls it back; ``CommitOnReturn`` commits it, and
the abandoned write appears: a phantom commit the checker must report.
"""

from __future__ import annotations

import pytest

from chaos import workloads
from chaos.scenarios import Expectations, Scenario

ABANDON = Scenario(
    name="abandoned-transactions",
    faults=(),
    workload=workloads.abandoning,
    expect=Expectations(ledger=True, caller_errors="any"),
    needs=frozenset({"postgres"}),
    pool={"min_size": 2, "max_size": 2},
    threads=2,
    duration=1.0,
    marks=(),
)


def test_reference_rolls_back_abandoned_transactions(run_scenario):
    result = run_scenario(ABANDON)
    assert result.verdict == "pass", result.explain()
    assert result.ledger.fails > 0 and result.ledger.oks > 0


@pytest.mark.canary
def test_ledger_detects_phantom_commits_of_commit_on_return(run_scenario):
    from dataclasses import replace

    result = run_scenario(
        replace(ABANDON, name="canary-commit-on-return", variant="CommitOnReturn")
    )
    assert result.ledger is not None and result.ledger.phantoms, result.explain()
    assert any("phantom commit" in v for v in result.violations)
