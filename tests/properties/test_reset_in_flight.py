"""The reset in flight meets a fault: programs for the states it adds.

plain_pool sends ``DISCARD ALL`` on return and reads its answer at the next
checkout. Each program leaves a connection in the pool with its reset on the
wire, then breaks the link or the server before the next checkout: the answer
never comes, comes late, or the socket dies. The machine's invariants (checked
after every step) hold the backend to the same contract as without a fault:
no session handed out before its reset answered, errors only while a fault is
active (or one per dead pooled connection with health checks off), checkouts
working again within the recovery bound after the heal. The canaries for these
states are in test_canaries.py (ResetInFlightHandedOut, ResetFinishedByPoolCheck).
"""

from __future__ import annotations

import pytest
from canary_programs import UTC, Checked

from chaos.faults.base import Fault
from chaos.faults.network import Down, HalfOpen, Latency, ResetPeer
from chaos.faults.server import Crash, RestartFast
from chaos.machines.pool_machine import NetworkFaults, ServerFaults, machine_for
from chaos.targets.base import TargetOptions

#: About plain_pool itself (its variants and programs): the reference target only.
pytestmark = pytest.mark.reference_target

health_checks = pytest.mark.parametrize("checks", [True, False], ids=["checks_on", "checks_off"])


@health_checks
@pytest.mark.parametrize(
    "fault",
    [Down(), HalfOpen(), ResetPeer(), Latency(ms=30, jitter=10)],
    ids=lambda fault: fault.name,
)
def test_reset_in_flight_then_a_network_fault(machine_env, fault: Fault, checks: bool):
    if machine_env.proxy is None:
        pytest.skip("needs the fault proxy")
    options = TargetOptions(max_size=2, timeout=0.5, health_checks=checks)
    Machine = machine_for(machine_env, NetworkFaults, options=options, name="PoolMachine")
    state = Machine()
    try:
        steps = Checked(state)
        r0 = steps.start(settings=UTC)
        r1 = steps.open_request()
        steps.checkout(request=r0)
        steps.checkout(request=r1)
        steps.give_back(request=r0)  # two connections back, both with their reset on the wire
        steps.give_back(request=r1)
        steps.inject_network_fault(fault=fault, blip=False)
        steps.checkout(request=r0)
        steps.heal()
        steps.checkout(request=r1)
        steps.give_back(request=r1)
        steps.give_back(request=r0)
        steps.checkout(request=r0)
    finally:
        state.teardown()


@pytest.mark.restarts_server
@health_checks
@pytest.mark.parametrize("fault", [RestartFast(), Crash()], ids=lambda fault: fault.name)
def test_reset_in_flight_then_the_server_goes_away(private_machine_env, fault: Fault, checks: bool):
    options = TargetOptions(max_size=2, timeout=1.0, health_checks=checks)
    Machine = machine_for(private_machine_env, ServerFaults, options=options, name="PoolMachine")
    state = Machine()
    try:
        steps = Checked(state)
        r0 = steps.start(settings=UTC)
        r1 = steps.open_request()
        steps.checkout(request=r0)
        steps.checkout(request=r1)
        steps.give_back(request=r0)
        steps.give_back(request=r1)
        steps.inject_server_fault(fault=fault)
        steps.checkout(request=r0)
        steps.checkout(request=r1)
        steps.give_back(request=r0)
        steps.give_back(request=r1)
    finally:
        state.teardown()
