"""Every registered scenario, one test each (id = scenario name: ``-k restart`` works).

The scenario's marks come from the registry (``chaos``, ``restarts_server``,
``slow``); the few without ``chaos`` are cheap and run in the default env too.
A failure prints the scenario's verdict, violations, the fault journal and
the command that replays it (see chaos.fixtures.report).
"""

from __future__ import annotations


def test_scenario(chaos_scenario, run_scenario):
    result = run_scenario(chaos_scenario)
    assert result.verdict == "pass", result.explain()
