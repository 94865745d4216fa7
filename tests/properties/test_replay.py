"""The reproduction workflow, end to end: a failure is found, then replayed from what was printed.

A child pytest runs ``test_replayable_canary`` (skipped unless
``CHAOS_REPLAY_CANARY`` names a canary from test_canaries.py) and fails. From
its output we take what a user would copy - the replay command of the "chaos
replay" section (``python -m pytest "<nodeid>" --target plain_pool
--hypothesis-seed=N --hypothesis-profile=P``, run as printed, from the
directory it names) and the ``@reproduce_failure(...)`` blob Hypothesis
printed - and run the child again with each: it must fail the same way.

The first child searches from the canary's measured seed with the canary's
budget (see test_canaries.py), so finding the failure is not left to luck.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
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
#: The section's two lines: where to run it from, and the command.
REPLAY = re.compile(r"^replay \(from (?P<cwd>.+)\):\n\s+(?P<command>.+)$", re.MULTILINE)
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


def _run_printed(command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a printed command as a shell would: ``VAR=value`` words first, then the argv."""
    words = shlex.split(command)
    environ = {**os.environ, **env}
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        environ[name] = value
    return subprocess.run(
        [*words, "-p", "no:cacheprovider", "-q", "-x"],
        cwd=cwd,
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

    replay = REPLAY.search(output)
    assert replay, f"no replay command printed:\n{output[-3000:]}"
    command = replay.group("command")
    assert f'-m pytest "{NODE}" --target plain_pool --hypothesis-seed=' in command, command
    assert "tox -e" not in command, command
    blob = BLOB.search(output)
    assert blob, f"no @reproduce_failure blob printed:\n{output[-3000:]}"
    print(f"printed: {command} and {blob.group(0)}")

    by_command = _run_printed(command, Path(replay.group("cwd")), CHAOS_REPLAY_CANARY="SessionLeak")
    replayed = by_command.stdout + by_command.stderr
    assert by_command.returncode == 1 and "SessionLeak" in replayed, replayed[-3000:]

    by_blob = _child(
        CHAOS_REPLAY_CANARY="SessionLeak",
        CHAOS_REPLAY_BLOB=f"{blob.group(1)} {blob.group(2)}",
    )
    replayed = by_blob.stdout + by_blob.stderr
    assert by_blob.returncode == 1 and "SessionLeak" in replayed, replayed[-3000:]
    # The blob replays exactly the printed program.
    assert "state = NoResetOnReturnMachine()" in replayed, replayed[-3000:]
