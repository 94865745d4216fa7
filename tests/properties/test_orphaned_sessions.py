"""Orphaned sessions: a replaced pool must be closed, not only forgotten.

Each program below walks one reconfiguration path - a zone change from a
control thread, a zone change from the thread of a request holding a
connection, ``close_pool``, a role change and back - and calls the
invariant itself, in the form Hypothesis prints failing programs (see
tests/properties/test_regressions.py). The reference backend passes every one;
the ``PoolForgottenNotClosed`` canary fails every one with
:class:`OrphanedSessions`: deterministic, no search (the canary in
test_canaries.py checks that the search gets there too).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chaos.machines.errors import OrphanedSessions
from chaos.machines.model import SettingsValue
from chaos.machines.orphan_rules import OrphanRules
from chaos.machines.pool_machine import MachineEnv, machine_for
from chaos.targets.base import TargetOptions

#: About plain_pool itself (its variants and programs): the reference target only.
pytestmark = pytest.mark.reference_target

UTC = SettingsValue("UTC", use_tz=False, role=None)
PARIS = SettingsValue("Europe/Paris", use_tz=False, role=None)
APP_UTC = SettingsValue("UTC", use_tz=False, role="chaos_app")
APP_PARIS = SettingsValue("Europe/Paris", use_tz=False, role="chaos_app")


def zone_change_from_control_thread(state) -> None:
    state.start(settings=UTC)
    state.no_orphaned_sessions()
    state.change_settings(settings=PARIS)
    state.no_orphaned_sessions()


def zone_change_from_request_thread(state) -> None:
    requests_0 = state.start(settings=UTC)
    state.checkout(request=requests_0)
    state.change_settings_in_request(request=requests_0, settings=PARIS)
    state.no_orphaned_sessions()
    state.give_back(request=requests_0)
    state.no_orphaned_sessions()


def close_pool(state) -> None:
    requests_0 = state.start(settings=UTC)
    state.checkout(request=requests_0)
    state.close_pool()
    state.no_orphaned_sessions()
    state.give_back(request=requests_0)
    state.no_orphaned_sessions()


def role_change_and_back(state) -> None:
    """A role change keeps the old role's pool registered (each role has its own); the
    zone change replaces the current one, and coming back replaces the old role's."""
    state.start(settings=UTC)
    state.change_settings(settings=APP_UTC)
    state.no_orphaned_sessions()
    state.change_settings(settings=APP_PARIS)
    state.no_orphaned_sessions()
    state.change_settings(settings=PARIS)
    state.no_orphaned_sessions()


PROGRAMS: dict[str, Callable] = {
    f.__name__: f
    for f in (
        zone_change_from_control_thread,
        zone_change_from_request_thread,
        close_pool,
        role_change_and_back,
    )
}


def _machine(env: MachineEnv, variant: str | None) -> type:
    options = TargetOptions(max_size=1, timeout=0.5, variant=variant)
    return machine_for(env, OrphanRules, options=options, name=f"{variant or 'Pool'}Machine")


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_reference_closes_what_it_replaces(machine_env, program):
    state = _machine(machine_env, None)()
    try:
        PROGRAMS[program](state)
    finally:
        state.teardown()


@pytest.mark.canary
@pytest.mark.parametrize("program", list(PROGRAMS))
def test_pool_forgotten_not_closed_is_caught(machine_env, program):
    state = _machine(machine_env, "PoolForgottenNotClosed")()
    try:
        with pytest.raises(OrphanedSessions, match="unregistered OPEN pool"):
            PROGRAMS[program](state)
    finally:
        state.teardown()
