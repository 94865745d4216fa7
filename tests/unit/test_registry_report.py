"""The report's pure parts: summary table, progress line, replay command, timeline SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from chaos.report import format_progress, render_table, render_timeline_svg, replay_command

ROW = {
    "name": "restart-fast-load",
    "faults": "restart_fast()@1s",
    "verdict": "pass",
    "recovery_s": 0.017,
    "errors_seen": 2,
    "error_kinds": {"AdminShutdown": 1, "OperationalError": 1},
    "ops": 1527,
    "ok_ops": 1525,
    "duration_s": 2.5,
    "timeline": {
        "events": [
            {"t": 1.0, "kind": "fault", "label": "restart_fast", "end": None},
            {"t": 1.4, "kind": "accepting", "label": "accepting"},
        ],
        "ops": [[0.1, 0.101, 1, 0], [0.99, 1.01, 0, 1], [1.41, 1.42, 1, 2]],
    },
}


def test_table_and_progress():
    failed = {
        **ROW,
        "name": "crash-load",
        "verdict": "fail",
        "violations": ["lost 3"],
        "replay": 'tox -e chaos -- "x"',
        "recovery_s": 6.61,
    }
    table = render_table([ROW, failed])
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["scenario", "faults", "verdict"]
    assert "17 ms" in table and "6.61 s" in table and "1525/1527" in table
    assert "crash-load: FAIL" in table and "  - lost 3" in table and "replay: tox -e chaos" in table
    line = format_progress(ROW)
    assert line.startswith("[chaos] restart-fast-load: PASS") and "recovery 17 ms" in line


def test_replay_command():
    nodeid = "tests/x.py::test_scenario[crash-load]"
    assert replay_command(nodeid, chaos=True) == f'tox -e chaos -- "{nodeid}"'
    cmd = replay_command(
        "t.py::m",
        chaos=False,
        longrepr="run pytest with --hypothesis-seed=1234 to reproduce\n"
        "@reproduce_failure('6.1', b'AAE=') as a decorator",
        env={"PLAIN_POOL_CHAOS_SEED": "9"},
    )
    assert cmd.startswith('PLAIN_POOL_CHAOS_SEED=9 tox -e py -- "t.py::m" --hypothesis-seed=1234')
    assert "@reproduce_failure('6.1', b'AAE=')" in cmd
    assert "--hypothesis-seed=5" in replay_command("a", chaos=True, hypothesis_seed=5)


def test_timeline_svg_is_well_formed():
    svg = render_timeline_svg(ROW)
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    text = "".join(root.itertext())
    assert "restart_fast" in text and "accepting" in text and "latency (ms)" in text
    assert svg.count("<circle") == 2 and svg.count("<path") == 1  # 2 ok ops, 1 error


def test_replay_command_outside_tox_names_the_targets():
    """A user's project has no tox env of ours: pytest itself, with the --target values
    the parametrized node id needs (it exists only when its target is selected)."""
    cmd = replay_command(
        "t.py::test_sessions[django]",
        chaos=True,
        targets=["django", "django"],
        under_tox=False,
        hypothesis_seed=7,
    )
    assert (
        cmd == 'python -m pytest "t.py::test_sessions[django]" --target django --hypothesis-seed=7'
    )
