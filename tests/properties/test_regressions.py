"""Failing programs the machines printed, pasted as regression tests.

The body of each test below is Hypothesis' "Falsifying example" output, copied
as printed (steps, invariant calls and all): the machines' step reprs are valid
Python. Only the first line changes: ``state = PoolMachine()`` needs the class
bound to this test's servers, so it is made with ``machine_for`` under the
name the printout used.
"""

from __future__ import annotations

import pytest

from chaos.machines.dirt import SetGuc
from chaos.machines.errors import SessionLeak
from chaos.machines.model import SettingsValue
from chaos.machines.pool_machine import machine_for
from chaos.targets.base import TargetOptions

#: About plain_pool itself (its variants and programs): the reference target only.
pytestmark = pytest.mark.reference_target


def test_role_change_and_back_keeps_configuration(machine_env):
    """The machines found this plain_pool bug (fixed): a connection returned to a pool
    that was no longer current was reset and configured for the settings in force
    then; when the settings came back, that pool handed it out with the wrong role.
    Shrunk by hand from the machine's finding (one connection makes it deterministic).
    """
    options = TargetOptions(max_size=1, timeout=0.5)
    PoolMachine = machine_for(machine_env, options=options, name="PoolMachine")
    state = PoolMachine()
    requests_0 = state.start(settings=SettingsValue("UTC", use_tz=False, role="chaos_app"))
    state.checkout(request=requests_0)
    state.change_settings(settings=SettingsValue("UTC", use_tz=False, role=None))
    state.give_back(request=requests_0)
    try:
        state.change_settings(settings=SettingsValue("UTC", use_tz=False, role="chaos_app"))
    finally:
        state.teardown()


def test_no_reset_on_return_leaks_a_guc(machine_env):
    """The canary's printed program: the broken backend must keep failing it."""
    options = TargetOptions(max_size=1, timeout=0.5, variant="NoResetOnReturn")
    NoResetOnReturnMachine = machine_for(
        machine_env, options=options, name="NoResetOnReturnMachine"
    )
    with pytest.raises(SessionLeak, match="work_mem"):
        # --- pasted from the printed failing program ---
        state = NoResetOnReturnMachine()
        requests_0 = state.start(settings=SettingsValue("UTC", use_tz=False, role=None))
        state.no_phantom_commits()
        state.pool_within_bounds()
        state.dirty_session(
            dirt=SetGuc(name="work_mem", value="8MB"), request=requests_0, then_give_back=True
        )
    state.teardown()


def test_pool_check_stuck_under_half_open_then_settings_change(machine_env):
    """The chaos run once crashed the harness here (``assert request is not None``): under
    a half-open link psycopg_pool's ``check()`` blocks the control thread, and the next
    settings change from a control thread found it busy. Now the stuck check is a modelled
    state (another control thread serves the change, the stuck one must come free on heal)
    and the settings change itself must end within the reconfiguration bound."""
    if machine_env.proxy is None:
        pytest.skip("needs the fault proxy")
    from canary_programs import UTC, Checked

    from chaos.faults.network import HalfOpen
    from chaos.machines.pool_machine import NetworkFaults

    options = TargetOptions(max_size=2, timeout=0.5)
    PoolMachine = machine_for(machine_env, NetworkFaults, options=options, name="PoolMachine")
    state = PoolMachine()
    try:
        steps = Checked(state)
        requests_0 = steps.start(settings=UTC)
        steps.checkout(request=requests_0)
        steps.give_back(request=requests_0)
        steps.inject_network_fault(fault=HalfOpen(), blip=False)
        steps.check_pool()
        assert state.model.control_stuck == 1, "pool.check() over a half-open link returned"
        steps.change_settings(settings=SettingsValue("Europe/Paris", use_tz=False, role=None))
        steps.heal()
        assert state.model.control_stuck == 0
    finally:
        state.teardown()


def test_zone_change_on_a_held_connection_with_autocommit_off_opens_no_transaction(machine_env):
    """The chaos run found this plain_pool bug (fixed): ``ensure_timezone()`` ran
    ``SET TIME ZONE`` through psycopg on a connection a request held with autocommit
    off, which sent ``BEGIN`` first: the request found itself in a transaction it never
    began (changing isolation_level then failed). The printed program, minus its
    repeated ``close_pool()`` steps."""
    from canary_programs import Checked

    from chaos.machines.dirt import ClientAttr

    options = TargetOptions(max_size=1, timeout=0.5)
    LifetimeMachine = machine_for(machine_env, options=options, name="LifetimeMachine")
    state = LifetimeMachine()
    try:
        steps = Checked(state)
        requests_0 = steps.start(settings=SettingsValue("UTC", use_tz=False, role=None))
        steps.change_settings_in_request(
            request=requests_0, settings=SettingsValue("Europe/Paris", use_tz=False, role=None)
        )
        steps.dirty_session(
            dirt=ClientAttr(attr="autocommit", value=False),
            request=requests_0,
            then_give_back=False,
        )
        steps.change_settings_in_request(
            request=requests_0, settings=SettingsValue("UTC", use_tz=False, role=None)
        )
        steps.dirty_session(
            dirt=ClientAttr(attr="isolation_level", value="SERIALIZABLE"),
            request=requests_0,
            then_give_back=False,
        )
    finally:
        state.teardown()
