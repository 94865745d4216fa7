"""The chaos summary's machine table: sizes and totals of each state-machine run."""

from __future__ import annotations

from chaos.report.machines import render_machines, totals

ROWS = [
    {
        "nodeid": "tests/properties/test_pool_machine.py::test_sessions[plain_pool]",
        "target": "plain_pool",
        "programs": 40,
        "steps": 612,
        "faults": 57,
        "checks": 1030,
        "verdict": "pass",
    },
    {
        "nodeid": "tests/properties/test_canaries.py::test_leak_is_found",
        "target": "plain_pool",
        "programs": 3,
        "steps": 11,
        "faults": 0,
        "checks": 9,
        "verdict": "caught",
    },
]


def test_totals_add_every_run():
    assert totals(ROWS) == (
        "2 machine run(s), 2 as expected: 43 programs, 623 steps, "
        "57 faults injected, 1039 invariant checks"
    )


def test_a_failed_run_is_not_counted_as_expected():
    failed = [{**ROWS[0], "verdict": "fail"}]
    assert totals(failed).startswith("1 machine run(s), 0 as expected")


def test_table_has_one_line_per_run_and_the_totals():
    lines = render_machines(ROWS).splitlines()
    assert lines[0].split()[:3] == ["machine", "(test)", "target"]
    assert "test_sessions[plain_pool]" in lines[2] and "PASS" in lines[2]
    assert "CAUGHT" in lines[3]
    assert lines[-1] == totals(ROWS)
