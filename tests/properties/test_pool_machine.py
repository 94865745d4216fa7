"""The state machines against the reference plain_pool backend.

Each machine runs twice: a short version with the ``fast`` budget (the
default test run) and a long one marked ``chaos`` with the loaded profile's
budget (``tox -e chaos``; skipped under the fast profile, where it would only
repeat the short one).
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from chaos.hypothesis_profiles import budget
from chaos.machines.check_rules import ScriptedCheck, UserCheckRules
from chaos.machines.fork_rules import ForkRules
from chaos.machines.orphan_rules import OrphanRules
from chaos.machines.pool_machine import (
    LifetimeRules,
    NetworkFaults,
    PreparedRules,
    ServerFaults,
    machine_for,
)
from chaos.targets.base import TargetOptions

LENGTHS = [
    pytest.param("short", id="short"),
    pytest.param("long", id="long", marks=pytest.mark.chaos),
]
#: Every property must hold with health checks on and off; off, a connection that died while
#: pooled may fail its first use, once (the model allows one such failure per pooled
#: connection per fault, and no more).
HEALTH_CHECKS = [
    pytest.param(True, id="checks_on"),
    pytest.param(False, id="checks_off"),
]


def _budget(length: str) -> dict:
    if length == "long":
        if settings.get_current_profile_name() == "fast":
            pytest.skip("the long version runs in tox -e chaos (a non-fast profile)")
        return budget()
    return budget("fast")


@pytest.mark.parametrize("health_checks", HEALTH_CHECKS)
@pytest.mark.parametrize("length", LENGTHS)
def test_sessions_and_network_faults(machine_env, run_machine, length, health_checks):
    """Requests, session dirt, settings changes, pool maintenance, proxy faults, forked
    children (they must never touch the parent's sessions)."""
    mixins = (OrphanRules, NetworkFaults) if machine_env.proxy is not None else (OrphanRules,)
    mixins = (*mixins, ForkRules)
    # A subclass overriding the configuration hook: it must be honoured on every path.
    options = TargetOptions(health_checks=health_checks, configure_override=True)
    machine = machine_for(machine_env, *mixins, options=options, name="PoolMachine")
    run_machine(machine, **_budget(length))


@pytest.mark.restarts_server
@pytest.mark.parametrize("health_checks", HEALTH_CHECKS)
@pytest.mark.parametrize("length", LENGTHS)
def test_server_faults(private_machine_env, run_machine, length, health_checks):
    """The same with restarts (fast, immediate), crashes and terminated backends too."""
    options = TargetOptions(health_checks=health_checks)
    machine = machine_for(
        private_machine_env,
        OrphanRules,
        NetworkFaults,
        ServerFaults,
        options=options,
        name="ServerMachine",
    )
    run_machine(machine, **_budget(length))


@pytest.mark.parametrize("health_checks", HEALTH_CHECKS)
@pytest.mark.parametrize("length", LENGTHS)
def test_max_lifetime(machine_env, run_machine, length, health_checks):
    """Connections returned after a short max_lifetime are never handed out again."""
    options = TargetOptions(max_lifetime=1.0, health_checks=health_checks)
    machine = machine_for(
        machine_env, OrphanRules, LifetimeRules, options=options, name="LifetimeMachine"
    )
    run_machine(machine, **_budget(length))


@pytest.mark.parametrize("threshold", [0, 5])
@pytest.mark.parametrize("length", LENGTHS)
def test_prepared_statements_survive_the_reset(machine_env, run_machine, length, threshold):
    """Prepared statements on, repeated queries: the reset must not strand psycopg's cache.

    threshold 0 prepares every query at once; 5 is psycopg's default. Server-side
    binding is on: plain_pool's default ClientCursor never prepares anything.
    """
    options = TargetOptions(prepare_threshold=threshold, server_side_binding=True)
    machine = machine_for(
        machine_env, OrphanRules, PreparedRules, options=options, name="PreparedMachine"
    )
    run_machine(machine, **_budget(length))


@pytest.mark.parametrize("length", LENGTHS)
def test_user_check(machine_env, run_machine, length):
    """A user ``check`` in POSTGRES_POOL that rules make fail (ValueError, RuntimeError, a
    psycopg.Error, closing the connection...): checkouts discard and retry, never raise
    the check's error, never hand its connection out; with proxy faults too."""
    mixins = (NetworkFaults,) if machine_env.proxy is not None else ()
    options = TargetOptions(user_check=ScriptedCheck)
    machine = machine_for(
        machine_env, UserCheckRules, OrphanRules, *mixins, options=options, name="UserCheckMachine"
    )
    run_machine(machine, **_budget(length))
