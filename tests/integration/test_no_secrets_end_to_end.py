"""End to end: a failing run with a password in its DSN prints and writes no password.

A child pytest points the suite at this test's server through
``PLAIN_POOL_PG_DSN`` with a password (the server trusts, so any password
works) and runs, with ``--chaos-report`` and ``--showlocals``:

- a scenario that fails and plants the password in an operation's error, a
  note and a violation (what careless workload code would do);
- a canary state machine that fails (``SessionLeak``, found with its fixed
  seed), which prints the "chaos replay" section.

Nothing the child prints - pytest header, progress lines, summary table,
replay commands, replay section, tracebacks with locals - nor any file of its
report directory may contain the password; and each part must really be there
(the planted texts show up masked), so the check cannot pass on an empty run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from chaos.pytest_plugin import child_pytest_args

REPO = Path(__file__).resolve().parents[2]
PW = "pw-s3cret-XYZ"

PROBE_PLUGIN = '''
"""Registers a failing scenario that plants the password everywhere it can."""
import os

from chaos.scenarios import Expectations

PASSWORD = os.environ["SECRET_PROBE_PASSWORD"]


def leaky_workload(ctx):
    ctx.note(f"settings: {ctx.settings}")
    with ctx.op("probe", 0):
        raise RuntimeError(f"cannot reach postgres://app:{PASSWORD}@db/app (password={PASSWORD})")
    ctx.stop.wait()


def leaky_check(result):
    return [f"planted violation {PASSWORD}"]


def pytest_plain_pool_scenarios(registry):
    registry.register(
        "secret-probe",
        workload=leaky_workload,
        needs=frozenset({"postgres"}),
        marks=(),
        duration=0.3,
        settings={"POSTGRES_PASSWORD": PASSWORD},
        expect=Expectations(sessions=False, extra=(leaky_check,)),
    )
'''

NODES = [
    "tests/integration/scenarios/test_scenarios.py::test_scenario[secret-probe]",
    "tests/properties/test_replay.py::test_replayable_canary",
]


@pytest.mark.slow
def test_failing_run_with_a_password_in_its_dsn_shows_none(postgres, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tests" / "properties"))  # as in the child
    from test_canaries import CANARIES

    (tmp_path / "secret_probe.py").write_text(PROBE_PLUGIN)
    report_dir = tmp_path / "report"
    dsn = f"postgresql://{postgres.superuser}:{quote(PW)}@{postgres.host}:{postgres.port}/postgres"
    env = {
        **os.environ,
        "PLAIN_POOL_PG_DSN": dsn,
        "PLAIN_POOL_PG_MODE": "external",
        "SECRET_PROBE_PASSWORD": PW,
        "CHAOS_REPLAY_CANARY": "SessionLeak",
        "PYTHONPATH": os.pathsep.join(
            map(str, [REPO / "src", REPO, REPO / "tests" / "properties", tmp_path])
        ),
    }
    args = ["-p", "no:cacheprovider", "-p", "secret_probe", "-l", "-n", "0"]
    args += [f"--chaos-report={report_dir}", f"--hypothesis-seed={CANARIES['SessionLeak'].seed}"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *child_pytest_args(), *args, *NODES],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    files = {p.name: p.read_text() for p in report_dir.iterdir()} if report_dir.exists() else {}
    # Every part was there: both tests failed, the header, table, replay section, report files.
    assert proc.returncode == 1, out[-4000:]
    assert "2 failed" in out, out[-4000:]
    assert "postgres: mode=external" in out, out[-4000:]
    assert "[chaos] secret-probe: FAIL" in out and "chaos replay" in out, out[-4000:]
    assert "planted violation ***" in out, out[-4000:]
    assert "summary.json" in files and "planted violation ***" in files["summary.json"], files
    assert "timeline-secret-probe.svg" in files, files
    assert "chaos leftovers" not in out, out[-4000:]  # the external server is not ours
    # ... and showed no password.
    leaked = [name for name, text in {"output": out, **files}.items() if PW in text]
    assert not leaked, f"password shown in {leaked}:\n{out[-4000:]}"
    assert quote(PW) not in out
