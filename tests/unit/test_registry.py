"""The scenario registry: registration errors, discovery, and the pytest hook end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.pytest_plugin import child_pytest_args
from chaos.scenarios import (
    REGISTRY,
    Expectations,
    FaultStep,
    RegistrationError,
    Scenario,
    ScenarioRegistry,
    discover,
)

REPO = Path(__file__).resolve().parents[2]


def noop(ctx):
    ctx.stop.wait()


def test_register_and_lookup():
    registry = ScenarioRegistry()
    s = registry.register(
        "my-scenario",
        faults=[FaultStep(1.0, "latency", {"ms": 10}, hold=1)],
        workload=noop,
        expect=Expectations(),
        needs=frozenset({"private_postgres", "proxy"}),
    )
    assert registry["my-scenario"] is s and "my-scenario" in registry and len(registry) == 1
    assert s.describe_faults() == "latency(ms=10)@1s for 1s"
    with pytest.raises(KeyError, match="known: my-scenario"):
        registry["nope"]


def test_duplicate_name_names_both_origins():
    registry = ScenarioRegistry()
    registry.register("dup", workload=noop, expect=Expectations(), origin="a.py")
    with pytest.raises(RegistrationError, match=r"duplicate scenario name 'dup'.*a\.py.*b\.py"):
        registry.register("dup", workload=noop, expect=Expectations(), origin="b.py")


def test_missing_fields_are_named():
    registry = ScenarioRegistry()
    with pytest.raises(RegistrationError, match=r"missing field.*workload, expect"):
        registry.register("x")
    with pytest.raises(RegistrationError, match="unexpected keyword argument 'colour'"):
        registry.register("x", workload=noop, expect=Expectations(), colour="red")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "Bad Name"}, "lowercase"),
        ({"workload": 42}, "workload must be callable"),
        ({"expect": {"max_recovery_s": 1}}, "expect must be an Expectations"),
        ({"faults": ["restart"]}, r"faults\[0\] is a str"),
        ({"faults": [FaultStep(9, "crash")]}, "outside the duration"),
        ({"needs": frozenset({"kafka"})}, "unknown resource"),
        ({"seeded": True}, "schedule_factory"),
        ({"marks": "chaos"}, "tuple of mark names"),
    ],
)
def test_bad_fields_are_named(fields, message):
    base = {"name": "ok", "faults": (), "workload": noop, "expect": Expectations(), "duration": 3}
    with pytest.raises(RegistrationError, match=message):
        ScenarioRegistry().add(Scenario(**{**base, **fields}))


@pytest.mark.parametrize(
    ("step", "needs", "message"),
    [
        # the unknown name, then the catalogue it was looked up in
        (FaultStep(1, "restart"), {"private_postgres"}, r"unknown fault 'restart'.*restart_fast"),
        (FaultStep(1, "start"), {"private_postgres"}, r"unknown fault 'start'.*crash"),
        (FaultStep(1, "latency", {"millis": 5}), {"proxy"}, r"bad arguments for 'latency'"),
        (FaultStep(1, "latency", {"stream": "sideways"}), {"proxy"}, r"bad arguments"),
        (FaultStep(1, "down"), {"private_postgres"}, r"'down' acts on the proxy.*'proxy'"),
        (FaultStep(1, "crash"), {"postgres", "proxy"}, r"'crash' acts on the server"),
    ],
)
def test_fault_steps_the_runner_could_not_apply_are_refused(step, needs, message):
    """Caught at registration, not at run time as 'could not be applied'."""
    with pytest.raises(RegistrationError, match=rf"faults\[0\]: {message}"):
        ScenarioRegistry().register(
            "bad-fault", faults=[step], workload=noop, expect=Expectations(), needs=frozenset(needs)
        )


def test_every_fault_step_that_the_runner_can_apply_is_accepted():
    registry = ScenarioRegistry()
    registry.register(
        "good-faults",
        faults=[FaultStep(0.5, "stop", hold=1), FaultStep(1, "latency", {"ms": 5}, hold=1)],
        workload=noop,
        expect=Expectations(),
        needs=frozenset({"private_postgres", "proxy"}),
    )
    assert (
        registry["good-faults"].describe_faults() == "stop()@0.5s for 1s; latency(ms=5)@1s for 1s"
    )


def test_seeded_schedules_are_checked_on_one_draw():
    with pytest.raises(RegistrationError, match=r"schedule\(0\)\[0\]: unknown fault 'boom'"):
        ScenarioRegistry().register(
            "bad-seeded",
            workload=noop,
            expect=Expectations(),
            seeded=True,
            schedule_factory=lambda seed: [FaultStep(1, "boom")],
        )


def test_bad_expectation():
    with pytest.raises(RegistrationError, match="caller_errors"):
        Expectations(caller_errors="few")


def test_decorator_uses_function_name_and_doc():
    registry = ScenarioRegistry()

    @registry.scenario(expect=Expectations(), faults=[FaultStep(0.5, "crash")])
    def crash_while_idle(ctx):
        """Crash with nobody using the pool."""

    s = registry["crash-while-idle"]
    assert s.workload is crash_while_idle and s.description == "Crash with nobody using the pool."
    assert s.origin.endswith("crash_while_idle")


def test_seeded_schedule_is_reproducible():
    from chaos.scenarios.stress import stress_schedule

    assert stress_schedule(7) == stress_schedule(7)
    assert stress_schedule(7) != stress_schedule(8)


def test_builtin_families_are_discovered():
    names = discover().names()
    for expected in (
        "restart-fast-idle",
        "restart-immediate-load",
        "crash-load",
        "timeout-proxy-down",
        "reset-peer-mid-commit",
        "too-many-connections",
        "max-lifetime-steady-load",
        "stress-16-threads-seeded",
        "outage-beyond-reconnect-timeout",
    ):
        assert expected in names
    assert REGISTRY is discover()  # idempotent


USER_MODULE = '''
from chaos.scenarios import Expectations, scenario


@scenario("user-dropped-in", needs=frozenset(), marks=(), expect=Expectations(sessions=False))
def user_dropped_in(ctx):
    """A scenario module dropped into a chaos/scenarios/ directory."""
    with ctx.op("noop", 0):
        pass
    ctx.stop.wait()
'''

USER_CONFTEST = """
from chaos.scenarios import Expectations


def noop(ctx):
    with ctx.op("noop", 0):
        pass
    ctx.stop.wait()


def pytest_plain_pool_scenarios(registry):
    registry.register(
        "from-user-hook", workload=noop, needs=frozenset(), marks=(), duration=0.2,
        expect=Expectations(sessions=False),
    )
"""


BAD_FAULT_CONFTEST = """
from chaos.scenarios import Expectations, FaultStep


def pytest_plain_pool_scenarios(registry):
    registry.register(
        "typo-fault", workload=lambda ctx: None, expect=Expectations(),
        faults=[FaultStep(0.5, "restart_fats")],
    )
"""


def _child_pytest(project: Path, *args: str, pythonpath: list[Path]) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [REPO / "src", REPO, *pythonpath]))}
    command = [sys.executable, "-m", "pytest", *child_pytest_args(), "-p", "no:cacheprovider"]
    proc = subprocess.run(
        [*command, "-q", "-o", "addopts=", "--rootdir", str(project), *args, str(project)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"


def test_unknown_fault_fails_at_collection(tmp_path):
    """A child pytest run: a hook registering a misspelt fault stops at collection,
    with an error naming the fault and the known ones - no server is started."""
    (tmp_path / "conftest.py").write_text(BAD_FAULT_CONFTEST)
    (tmp_path / "test_user.py").write_text(
        "from tests.integration.scenarios.test_scenarios import test_scenario  # noqa: F401\n"
    )
    out = _child_pytest(tmp_path, "--collect-only", pythonpath=[])
    assert not out.startswith("exit 0"), out
    assert "unknown fault 'restart_fats'" in out, out
    assert "restart_fast" in out.split("unknown fault 'restart_fats'", 1)[1], out


def test_new_scenario_module_and_hook_are_discovered_and_run(tmp_path):
    """A child pytest run: a module in <tmp>/chaos/scenarios/ and a conftest hook both run."""
    package = tmp_path / "extra" / "chaos" / "scenarios"
    package.mkdir(parents=True)
    (package / "my_user_scenarios.py").write_text(USER_MODULE)
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(USER_CONFTEST)
    (project / "test_user.py").write_text(
        "from tests.integration.scenarios.test_scenarios import test_scenario  # noqa: F401\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO), str(tmp_path / "extra")]),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *child_pytest_args(),
            "-p",
            "no:cacheprovider",
            "-q",
            "-k",
            "user-dropped-in or from-user-hook",
            "-o",
            "addopts=",
            "--rootdir",
            str(project),
            str(project),
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "2 passed" in out, out
    assert "[chaos] user-dropped-in: PASS" in out and "[chaos] from-user-hook: PASS" in out, out
