"""The state machines, on every target ``--target`` selected (plain_pool by default).

Each machine runs twice: a short version with the ``fast`` budget (the
default test run) and a long one marked ``chaos`` with the loaded profile's
budget (``tox -e chaos``; skipped under the fast profile, where it would only
repeat the short one). The machines themselves are built in main_machines.py.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from main_machines import (
    lifetime_machine,
    prepared_machine,
    server_machine,
    sessions_machine,
    user_check_machine,
)

from chaos.hypothesis_profiles import budget

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
    run_machine(sessions_machine(machine_env, health_checks=health_checks), **_budget(length))


@pytest.mark.restarts_server
@pytest.mark.parametrize("health_checks", HEALTH_CHECKS)
@pytest.mark.parametrize("length", LENGTHS)
def test_server_faults(private_machine_env, run_machine, length, health_checks):
    """The same with restarts (fast, immediate), crashes and terminated backends too."""
    machine = server_machine(private_machine_env, health_checks=health_checks)
    run_machine(machine, **_budget(length))


@pytest.mark.parametrize("health_checks", HEALTH_CHECKS)
@pytest.mark.parametrize("length", LENGTHS)
def test_max_lifetime(machine_env, run_machine, length, health_checks):
    """Connections returned after a short max_lifetime are never handed out again."""
    run_machine(lifetime_machine(machine_env, health_checks=health_checks), **_budget(length))


@pytest.mark.parametrize("threshold", [0, 5])
@pytest.mark.parametrize("length", LENGTHS)
def test_prepared_statements_survive_the_reset(machine_env, run_machine, length, threshold):
    """Prepared statements on, repeated queries: the reset must not strand psycopg's cache.

    threshold 0 prepares every query at once; 5 is psycopg's default. Server-side
    binding is on: plain_pool's default ClientCursor never prepares anything.
    """
    run_machine(prepared_machine(machine_env, prepare_threshold=threshold), **_budget(length))


@pytest.mark.reference_target  # POSTGRES_POOL["check"]: plain_pool's own option
@pytest.mark.parametrize("length", LENGTHS)
def test_user_check(machine_env, run_machine, length):
    """A user ``check`` in POSTGRES_POOL that rules make fail (ValueError, RuntimeError, a
    psycopg.Error, closing the connection...): checkouts discard and retry, never raise
    the check's error, never hand its connection out; with proxy faults too."""
    run_machine(user_check_machine(machine_env), **_budget(length))
