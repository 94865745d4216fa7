"""Fixtures for the state machines, and the replay report a failing machine prints.

- ``machine_env``: the shared server behind this test's proxy (network faults only).
- ``private_machine_env``: a server and a proxy of the test's own (server faults too).
- ``run_machine``: runs a machine class as a test with the loaded profile's
  budget (or an explicit one), a reproducible seed, and records what the
  report section needs.

On failure the test report gets a "chaos replay" section: the command that
replays it (``tox -e chaos -- "<nodeid>" --hypothesis-seed=N``), where to find
the ``@reproduce_failure`` blob (Hypothesis prints it above: print_blob is on
in every profile), the failing example's fault schedule and the server
versions. Hypothesis' own output above it holds the failing program, as valid
Python that pastes into tests/properties/test_regressions.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings
from hypothesis.statistics import collector, describe_statistics

from chaos.faults.connect import proxy_address
from chaos.hypothesis_profiles import budget
from chaos.machines.pool_machine import MachineEnv, PoolMachine
from chaos.machines.runner import run_machine_as_test
from chaos.targets.base import TargetOptions
from chaos.targets.plain_pool import PlainPoolTarget

_env_key = pytest.StashKey[MachineEnv]()
_seed_key = pytest.StashKey[int]()


def _toxiproxy_kind(proxy: Any, request: pytest.FixtureRequest) -> str:
    try:
        server = request.getfixturevalue("toxiproxy_server")
    except pytest.FixtureLookupError:
        return "none"
    kind = getattr(server, "kind", "?")
    version = getattr(server, "version", None)
    return f"{kind} {version}" if version else str(kind)


def _make_env(
    request: pytest.FixtureRequest, server: Any, proxy: Any, *, server_faults: bool
) -> MachineEnv:
    if proxy is not None:
        host, port = proxy_address(proxy)
    else:
        host, port = server.host, server.port

    def make_target(options: TargetOptions) -> PlainPoolTarget:
        return PlainPoolTarget(server=server, host=host, port=port, options=options)

    env = MachineEnv(
        server=server,
        proxy=proxy,
        make_target=make_target,
        server_faults=server_faults,
        toxiproxy_kind=_toxiproxy_kind(proxy, request) if proxy is not None else "none",
    )
    request.node.stash[_env_key] = env
    return env


@pytest.fixture
def machine_env(request: pytest.FixtureRequest, postgres: Any) -> MachineEnv:
    """The shared server through this test's proxy: network faults only."""
    try:
        proxy = request.getfixturevalue("pg_proxy")
    except pytest.FixtureLookupError:  # no toxiproxy fixtures: no network faults either
        proxy = None
    return _make_env(request, postgres, proxy, server_faults=False)


@pytest.fixture
def private_machine_env(request: pytest.FixtureRequest, private_faults: Any) -> MachineEnv:
    """A server and a proxy of the test's own: every fault is allowed."""
    return _make_env(request, private_faults.server, private_faults.proxy, server_faults=True)


def machine_settings(profile_budget: dict | None = None, **overrides: Any) -> settings:
    """The loaded profile's settings with its (or the given) example and step budget."""
    chosen = dict(profile_budget or budget())
    chosen.update(overrides)
    return settings(settings(), **chosen)


@pytest.fixture
def run_machine(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    """``run_machine(MachineClass, **settings overrides)``: run it with a replayable seed."""

    def run(machine: type[PoolMachine], **overrides: Any) -> None:
        chosen = request.config.getoption("hypothesis_seed", None)
        run_seed = int(chosen) if chosen is not None else random.getrandbits(32)
        request.node.stash[_seed_key] = run_seed
        env = machine.env
        item: Any = request.node

        def note_statistics(stats: Any) -> None:
            # What Hypothesis' plugin does for @given tests (--hypothesis-show-statistics).
            stats["nodeid"] = item.nodeid
            text = describe_statistics(stats)
            per = env.steps / env.examples if env.examples else 0.0
            item.hypothesis_statistics = (
                f"{text}\n  - machine: {env.examples} examples run, {env.steps} steps "
                f"({per:.1f} per example); target {env.last_target}"
            )

        with collector.with_value(note_statistics):
            run_machine_as_test(machine, machine_settings(**overrides), seed=run_seed)

    yield run


def replay_section(item: pytest.Item) -> str | None:
    env = item.stash.get(_env_key, None)
    if env is None:
        return None
    lines = []
    run_seed = item.stash.get(_seed_key, None)
    profile = settings.get_current_profile_name()
    if run_seed is not None:
        env_name = "chaos" if profile != "fast" else "py"
        lines.append(
            f'replay: tox -e {env_name} -- "{item.nodeid}" --hypothesis-seed={run_seed}'
            f" --hypothesis-profile={profile}"
        )
    lines.append(
        "or: add the @reproduce_failure(...) line Hypothesis printed above to the machine "
        "class (or paste the printed program into tests/properties/test_regressions.py)"
    )
    lines.append(f"servers: {env.describe()}")
    lines.append(f"run: {env.examples} examples, {env.steps} steps")
    if env.last_schedule is not None:
        lines.append("failing example's " + env.last_schedule.format())
    return "\n".join(lines)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        section = replay_section(item)
        if section:
            report.sections.append(("chaos replay", section))
