"""Targets by name or dotted path, and the seam ``--target`` opens in the plugin (no server).

- :mod:`chaos.targets.registry`: ``resolve`` / ``factory`` / ``TargetSpec.load``.
- ``--target``: a value that names nothing stops the run at configure time with a
  usage error naming the value and the known targets; a target that cannot run here
  is listed in the header and its tests skip; tests using ``chaos_target`` run once
  per selected target, ``reference_target`` tests on plain_pool only.
- The plugin registers its markers (a project with ``--strict-markers`` and no
  marker list of its own collects tests marked ``restarts_server``), and puts the
  example database in the project's rootdir.
- ``machine_for``: machines of different targets or options never share example
  database keys; the same machine gets the same key in every process.

The child pytest runs only collect, or run tests that need no server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis.database import InMemoryExampleDatabase

from chaos.fixtures.machines import select_target
from chaos.machines.pool_machine import MachineEnv, NetworkFaults, machine_for
from chaos.machines.runner import KeyedDatabase
from chaos.pytest_plugin import MARKERS, child_pytest_args
from chaos.targets.base import TargetOptions
from chaos.targets.plain_pool import PlainPoolTarget
from chaos.targets.registry import (
    TARGETS,
    TargetSpec,
    TargetUnavailable,
    UnknownTarget,
    factory,
    resolve,
)

REPO = Path(__file__).resolve().parents[2]

#: A user's module: a target that can run, one that says why it cannot, and a non-target.
USER_TARGETS = '''
from chaos.targets.plain_pool import PlainPoolTarget


class Mine(PlainPoolTarget):
    """A user's target (plain_pool underneath)."""


class NotHere(PlainPoolTarget):
    @classmethod
    def unavailable(cls):
        return "needs the frobnicator 2.0 driver"


class NotATarget:
    pass
'''

USER_TESTS = """
import pytest
from hypothesis import settings


def test_per_target(chaos_target):
    print("RAN", chaos_target.name)


@pytest.mark.reference_target
def test_reference_only(chaos_target):
    assert chaos_target.name == "plain_pool"


@pytest.mark.restarts_server
@pytest.mark.needs_server_control
@pytest.mark.canary
@pytest.mark.planted
@pytest.mark.slow
@pytest.mark.toxiproxy_conformance
def test_markers_known():
    pass


@pytest.mark.chaos
@pytest.mark.matrix
def test_run_markers_known():  # may be deselected outside their runs: collected all the same
    pass


def test_selection_is_what_was_asked(request):  # runs after test_reference_only
    from chaos.fixtures.machines import selected_targets

    print("SELECTED", list(selected_targets(request.config)))


def test_database_in_rootdir(request):
    expected = request.config.rootpath.resolve() / ".hypothesis" / "examples"
    assert settings().database.path == expected, settings().database
"""


def _write_user_project(root: Path) -> None:
    (root / "usertargets.py").write_text(USER_TARGETS)
    (root / "test_user.py").write_text(USER_TESTS)


def _child(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ}
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), str(root)])
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *child_pytest_args(),
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--strict-markers",
            *args,
        ],
        cwd=root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- the registry -------------------------------------------------------------------------
def test_registered_names_resolve_to_their_spec():
    for name, spec in TARGETS.items():
        assert resolve(name) is spec
    assert resolve("plain_pool").load() is PlainPoolTarget


def test_a_dotted_path_resolves_to_a_user_spec():
    spec = resolve("chaos.targets.plain_pool:PlainPoolTarget")
    assert spec.name == spec.path == "chaos.targets.plain_pool:PlainPoolTarget"
    assert spec.load() is PlainPoolTarget


@pytest.mark.parametrize("value", ["djangoo", "", "mod:", "mod:not-an-identifier", "a.b"])
def test_an_unknown_name_is_refused_with_the_known_ones(value):
    with pytest.raises(UnknownTarget) as raised:
        resolve(value)
    assert repr(value) in str(raised.value)
    for name in TARGETS:
        assert name in str(raised.value)


def test_a_path_to_a_non_target_is_refused():
    with pytest.raises(UnknownTarget, match=re.escape("not a chaos.targets.base.Target subclass")):
        resolve("chaos.targets.registry:TargetSpec").load()
    with pytest.raises(UnknownTarget, match="has no attribute 'Nope'"):
        resolve("chaos.targets.plain_pool:Nope").load()


def test_a_target_never_run_says_why():
    spec = TargetSpec("geventpool", "nowhere:Nothing", "a seed system", not_run="no psycopg 3")
    with pytest.raises(TargetUnavailable, match="no psycopg 3"):
        factory(spec)


def test_factory_makes_the_class_with_the_harness_arguments():
    made = factory(resolve("plain_pool"))
    assert made.__qualname__ == "make_plain_pool"
    server = type("Server", (), {"host": "127.0.0.1", "port": 1})()
    target = made(server=server, host="127.0.0.1", port=1, options=TargetOptions())
    try:
        assert isinstance(target, PlainPoolTarget)
    finally:
        target.close()


# -- --target values (what the plugin's pytest_configure does) ----------------------------
def test_select_target_turns_unknown_names_into_usage_errors():
    with pytest.raises(pytest.UsageError) as raised:
        select_target("djangoo")
    assert "'djangoo'" in str(raised.value) and "plain_pool" in str(raised.value)


def test_select_target_a_dotted_path_that_does_not_import_is_a_usage_error():
    with pytest.raises(pytest.UsageError) as raised:
        select_target("no_such_module_here:Target")
    message = str(raised.value)
    assert "'no_such_module_here:Target'" in message and "cannot import" in message
    assert all(name in message for name in TARGETS)
    with pytest.raises(pytest.UsageError, match=re.escape("'chaos.targets.plain_pool:Nope'")):
        select_target("chaos.targets.plain_pool:Nope")


def test_select_target_an_unavailable_target_is_kept_with_its_reason(tmp_path, monkeypatch):
    (tmp_path / "usertargets.py").write_text(USER_TARGETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    chosen = select_target("usertargets:NotHere")
    assert chosen.make is None and "frobnicator" in (chosen.unavailable or "")
    mine = select_target("usertargets:Mine")
    assert mine.make is not None and mine.unavailable is None and mine.name == "usertargets:Mine"


# -- the plugin, in a child pytest (a user's project: no pyproject, --strict-markers) ------
def test_unknown_target_is_a_usage_error_naming_the_value_and_the_known_ones(tmp_path):
    _write_user_project(tmp_path)
    proc = _child(tmp_path, "--collect-only", "-q", "--target", "djangoo")
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert "--target 'djangoo'" in out, out
    assert all(name in out for name in TARGETS), out


def test_each_selected_target_parametrizes_the_tests_reference_ones_excepted(tmp_path):
    _write_user_project(tmp_path)
    proc = _child(
        tmp_path,
        "-v",
        "-rs",
        "--target",
        "plain_pool",
        "--target",
        "usertargets:Mine",
        "--target",
        "usertargets:NotHere",
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "test_per_target[plain_pool] PASSED" in out, out
    assert "test_per_target[usertargets:Mine] PASSED" in out, out
    assert "test_per_target[usertargets:NotHere] SKIPPED" in out, out
    assert "frobnicator" in out, out
    # Not parametrized: runs once, on the reference.
    assert "test_user.py::test_reference_only PASSED" in out, out
    # Markers the plugin registers, under --strict-markers with no marker list of its own.
    assert "test_markers_known PASSED" in out, out
    assert "not found in `markers` configuration option" not in out, out
    assert "test_database_in_rootdir PASSED" in out, out
    # The header names every selected target, and why one cannot run.
    assert "chaos target plain_pool:" in out, out
    assert "chaos target usertargets:Mine: user target usertargets:Mine" in out, out
    assert "chaos target usertargets:NotHere: unavailable" in out, out


def test_reference_tests_run_on_plain_pool_when_it_is_not_selected(tmp_path):
    _write_user_project(tmp_path)
    proc = _child(tmp_path, "-v", "-s", "--target", "usertargets:Mine")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "test_per_target[usertargets:Mine]" in out, out
    assert "test_per_target[plain_pool]" not in out, out
    assert "test_user.py::test_reference_only PASSED" in out, out
    assert "chaos target plain_pool" not in out, out
    assert "SELECTED ['usertargets:Mine']" in out, out


def test_pyproject_lists_the_markers_the_plugin_registers():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = {line.split(":", 1)[0] for line in config["tool"]["pytest"]["ini_options"]["markers"]}
    assert set(MARKERS) <= listed, set(MARKERS) - listed


# -- example database keys ----------------------------------------------------------------
def _env(name: str | None) -> MachineEnv:
    def make_target(options: TargetOptions) -> Any:
        raise AssertionError("not built here")

    return MachineEnv(server=None, proxy=None, make_target=make_target, target_name=name)


def test_machines_of_different_targets_or_options_have_different_keys():
    one = TargetOptions(max_size=1)
    keys = {
        machine_for(_env("plain_pool"), options=one, name="PoolMachine").database_key,
        machine_for(_env("django"), options=one, name="PoolMachine").database_key,
        machine_for(
            _env("plain_pool"), options=TargetOptions(max_size=2), name="PoolMachine"
        ).database_key,
        machine_for(
            _env("plain_pool"), NetworkFaults, options=one, name="PoolMachine"
        ).database_key,
        machine_for(
            _env("plain_pool"), options=one, roles=(None,), name="PoolMachine"
        ).database_key,
    }
    assert len(keys) == 5, keys
    same = machine_for(_env("plain_pool"), options=one, name="PoolMachine")
    assert (
        same.database_key
        == machine_for(_env("plain_pool"), options=one, name="PoolMachine").database_key
    )
    # The printed program keeps the plain name: "state = PoolMachine()" pastes into a test.
    assert same.__name__ == "PoolMachine"
    assert same.__qualname__ == same.database_key
    assert same.database_key.startswith("PoolMachine[plain_pool:")


def test_the_key_is_the_same_in_another_process():
    code = (
        "from chaos.machines.check_rules import ScriptedCheck, UserCheckRules\n"
        "from chaos.machines.pool_machine import MachineEnv, machine_for\n"
        "from chaos.targets.base import TargetOptions\n"
        "env = MachineEnv(server=None, proxy=None, make_target=lambda o: None,"
        " target_name='plain_pool')\n"
        "options = TargetOptions(user_check=ScriptedCheck, variant='NoResetOnReturn')\n"
        "print(machine_for(env, UserCheckRules, options=options, focus=('checkout',),"
        " name='M').database_key)\n"
    )
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    keys = {
        subprocess.run(
            [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(keys) == 1 and next(iter(keys)).startswith("M[plain_pool:"), keys


def test_keyed_databases_never_see_each_others_examples():
    shared = InMemoryExampleDatabase()
    django, plain = KeyedDatabase(shared, "A[django:1]"), KeyedDatabase(shared, "A[plain:2]")
    django.save(b"digest", b"failing example")
    assert list(django.fetch(b"digest")) == [b"failing example"]
    assert list(plain.fetch(b"digest")) == []
    django.move(b"digest", b"digest.secondary", b"failing example")
    assert list(django.fetch(b"digest.secondary")) == [b"failing example"]
    django.delete(b"digest.secondary", b"failing example")
    assert list(django.fetch(b"digest.secondary")) == []
