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
