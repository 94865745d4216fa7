"""The reproduction workflow, end to end: a failure is found, then replayed from what was printed.

A child pytest runs ``test_replayable_canary`` (skipped unless
``CHAOS_REPLAY_CANARY`` names a canary from test_canaries.py) and fails. From
its output we take what a user would copy - the ``--hypothesis-seed=N`` of the
"chaos replay" section and the ``@reproduce_failure(...)`` blob Hypothesis
printed - and run the child again with each: it must fail the same way.

The first child searches from the canary's measured seed with the canary's
budget (see test_canaries.py), so finding the failure is not left to luck.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import Phase, reproduce_failure
from test_canaries import CANARIES

from chaos.pytest_plugin import child_pytest_args

#: About plain_pool itself (its variants and programs): the reference target only.
pytestmark = pytest.mark.reference_target

REPO = Path(__file__).resolve().parents[2]
NODE = "tests/properties/test_replay.py::test_replayable_canary"
SEED = re.compile(r"--hypothesis-seed=(\d+)")
PYTEST = (sys.executable, "-m", "pytest", *child_pytest_args(), "-p", "no:cacheprovider")
BLOB = re.compile(r"@reproduce_failure\('([^']+)', (b'[^']*')\)")


def test_replayable_canary(machine_env, run_machine):
    """A canary machine selected by CHAOS_REPLAY_CANARY (and CHAOS_REPLAY_BLOB to replay one)."""
    name = os.environ.get("CHAOS_REPLAY_CANARY")
    if not name:
        pytest.skip("run by test_failure_replays_from_what_was_printed")
    canary = CANARIES[name]
    machine = canary.machine(machine_env)
    blob = os.environ.get("CHAOS_REPLAY_BLOB")
    if blob:
        version, data = blob.split(" ", 1)
        machine = reproduce_failure(version, ast.literal_eval(data))(machine)
    # No example database: the child must find the bug, or replay it, from scratch.
    run_machine(
        machine,
        database=None,
        report_multiple_bugs=False,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        max_examples=canary.max_examples,
        stateful_step_count=canary.steps,
    )


def _child(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **env}
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), str(REPO), str(REPO / "tests" / "properties")]
    )
    return subprocess.run(
        [*PYTEST, "-q", "-x", NODE, *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.canary
@pytest.mark.slow
def test_failure_replays_from_what_was_printed():
    found = _child(
        f"--hypothesis-seed={CANARIES['SessionLeak'].seed}", CHAOS_REPLAY_CANARY="SessionLeak"
    )
    output = found.stdout + found.stderr
    assert found.returncode == 1, output[-3000:]
    assert "SessionLeak" in output, output[-3000:]

    seed = SEED.search(output)
    assert seed, f"no replay command printed:\n{output[-3000:]}"
    blob = BLOB.search(output)
    assert blob, f"no @reproduce_failure blob printed:\n{output[-3000:]}"
    print(f"printed: --hypothesis-seed={seed.group(1)} and {blob.group(0)}")

    by_seed = _child(f"--hypothesis-seed={seed.group(1)}", CHAOS_REPLAY_CANARY="SessionLeak")
    replayed = by_seed.stdout + by_seed.stderr
    assert by_seed.returncode == 1 and "SessionLeak" in replayed, replayed[-3000:]

    by_blob = _child(
        CHAOS_REPLAY_CANARY="SessionLeak",
        CHAOS_REPLAY_BLOB=f"{blob.group(1)} {blob.group(2)}",
    )
    replayed = by_blob.stdout + by_blob.stderr
    assert by_blob.returncode == 1 and "SessionLeak" in replayed, replayed[-3000:]
    # The blob replays exactly the printed program.
    assert "state = NoResetOnReturnMachine()" in replayed, replayed[-3000:]
