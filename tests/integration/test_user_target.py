"""A target written outside the repository runs through the machines, selected by dotted path.

What a user of the installed plugin does: a module of their own on ``PYTHONPATH``
(here in ``tmp_path``, which is also the child's rootdir: no pyproject, no
conftest of this repository) with a :class:`~chaos.targets.base.Target`
subclass, a test using the plugin's ``machine_env`` and ``run_machine``
fixtures, and ``pytest --target mymod:MyTarget``. The adapter is a thin one
(it delegates to plain_pool's target, as an adapter delegates to the system it
drives) and writes a line to a file each time the machine makes it, so the
parent can tell the machine ran on *that* target and not on the default.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chaos.pytest_plugin import child_pytest_args

REPO = Path(__file__).resolve().parents[2]

USER_TARGET = '''
"""A user's adapter: plain_pool's target behind one of its own (delegation)."""

import os

from chaos.targets.base import Target
from chaos.targets.plain_pool import PlainPoolTarget


class MyTarget(Target):
    def __init__(self, *, server, host, port, options):
        self.inner = PlainPoolTarget(server=server, host=host, port=port, options=options)
        self.description = f"mymod adapter over {self.inner.description}"
        self.cache_key = ("mymod", self.inner.cache_key)
        self.application_name = self.inner.application_name
        self.user_check = self.inner.user_check
        with open(os.environ["MYMOD_LOG"], "a") as log:
            log.write(f"made max_size={options.max_size}\\n")

    def open_request(self, number):
        return self.inner.open_request(number)

    def change_settings(self, settings, via, bound):
        self.inner.change_settings(settings, via, bound)

    def current_pool_id(self):
        return self.inner.current_pool_id()

    def close_pool(self, bound):
        self.inner.close_pool(bound)

    def check_pool(self, bound):
        self.inner.check_pool(bound)

    def settle_control(self, timeout):
        return self.inner.settle_control(timeout)

    def stats(self):
        return self.inner.stats()

    def session_capacity(self):
        return self.inner.session_capacity()

    def expected_fingerprint(self, settings):
        return self.inner.expected_fingerprint(settings)

    def close(self):
        self.inner.close()
'''

USER_TEST = """
from chaos.machines.orphan_rules import OrphanRules
from chaos.machines.pool_machine import NetworkFaults, machine_for
from chaos.targets.base import TargetOptions


def test_my_pool(machine_env, run_machine):
    mixins = (OrphanRules, NetworkFaults) if machine_env.proxy is not None else (OrphanRules,)
    Machine = machine_for(machine_env, *mixins, options=TargetOptions(max_size=2))
    run_machine(Machine, max_examples=3, stateful_step_count=10)
    assert machine_env.examples >= 3
    assert machine_env.last_target.startswith("mymod adapter over plain_pool")
    print("RAN ON", machine_env.last_target)
"""


def test_a_target_on_pythonpath_runs_through_the_machines(tmp_path):
    project = tmp_path / "project"
    package_dir = tmp_path / "elsewhere"  # not the project, not the repository: PYTHONPATH
    project.mkdir()
    package_dir.mkdir()
    (package_dir / "mymod.py").write_text(USER_TARGET)
    (project / "test_my_pool.py").write_text(USER_TEST)
    log = tmp_path / "made.log"
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO), str(package_dir)]),
        "MYMOD_LOG": str(log),
    }
    proc = subprocess.run(
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
            "-v",
            "-s",
            "-rA",
            "--target",
            "mymod:MyTarget",
        ],
        cwd=project,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "chaos target mymod:MyTarget: user target mymod:MyTarget" in out, out[-5000:]
    assert "PASSED test_my_pool.py::test_my_pool[mymod:MyTarget]" in out, out[-5000:]
    assert "RAN ON mymod adapter over plain_pool" in out, out[-5000:]
    made = log.read_text().splitlines()
    assert len(made) >= 3 and set(made) == {"made max_size=2"}, made
    # The example database is the project's, not the repository's or site-packages'.
    assert not (package_dir / ".hypothesis").exists()
