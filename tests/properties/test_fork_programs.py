"""The fork rule as explicit programs: the deterministic half of its canary.

Each program is a rule sequence written as Hypothesis prints failing programs.
Against plain_pool, a child doing any work with any ending (see
chaos.targets.forking.CHILD_WORKS / CHILD_ENDINGS) leaves the parent's held
and pooled sessions alone, so the programs pass; against the SharedAcrossFork
variant (no fork detection in the pool registry: the child uses the parent's
pool, whose idle connections are the parent's sessions) the first fork must
raise :class:`ChildTouchedParentSessions`, for every work and ending; against
ForkUnaware (no pid check in the wrapper either) a child closing what it
inherited must be caught on the session a request of the parent's holds.
"""

from __future__ import annotations

import pytest

from chaos.machines.errors import ChildTouchedParentSessions
from chaos.machines.fork_rules import ForkRules
from chaos.machines.model import SettingsValue
from chaos.machines.pool_machine import machine_for
from chaos.targets.base import TargetOptions
from chaos.targets.forking import CHILD_ENDINGS, CHILD_WORKS

#: About plain_pool itself (its variants and programs): the reference target only.
pytestmark = pytest.mark.reference_target

UTC = SettingsValue("UTC", use_tz=False, role=None)

works = pytest.mark.parametrize("work", CHILD_WORKS)
endings = pytest.mark.parametrize("ending", CHILD_ENDINGS)


@works
@endings
def test_fork_leaves_the_parents_sessions_alone(machine_env, work, ending):
    """Three held connections (one idle, one in a transaction, one in a failed transaction),
    then one of them back in the pool: the child forks twice, the parent is untouched."""
    options = TargetOptions(max_size=3, timeout=0.5)
    ForkMachine = machine_for(machine_env, ForkRules, options=options, name="ForkMachine")
    state = ForkMachine()
    try:
        r0 = state.start(settings=UTC)
        r1 = state.open_request()
        r2 = state.open_request()
        state.checkout(request=r0)
        state.leave_transaction_open(request=r1, how="begin", then_give_back=False)
        state.fail_transaction(request=r2)
        state.fork_child(work=work, ending=ending)
        state.give_back(request=r0)
        state.fork_child(work=work, ending=ending)
        state.checkout(request=r0)
    finally:
        state.teardown()


@pytest.mark.canary
@works
@endings
def test_shared_across_fork_is_caught(machine_env, work, ending):
    """The canary's program: one idle pooled connection, one fork."""
    options = TargetOptions(max_size=1, timeout=0.5, variant="SharedAcrossFork")
    SharedAcrossForkMachine = machine_for(
        machine_env, ForkRules, options=options, name="SharedAcrossForkMachine"
    )
    state = SharedAcrossForkMachine()
    try:
        state.start(settings=UTC)
        with pytest.raises(ChildTouchedParentSessions) as caught:
            state.fork_child(work=work, ending=ending)
        assert "pooled backend" in str(caught.value)  # seen from the parent's side
    finally:
        state.teardown()


@pytest.mark.canary
@endings
def test_fork_unaware_wrapper_is_caught_on_a_held_session(machine_env, ending):
    """The held half: one connection, held by a request, none pooled. A child whose wrapper
    does not check the pid (ForkUnaware) resets and closes the parent's held session."""
    options = TargetOptions(max_size=1, timeout=0.5, variant="ForkUnaware")
    ForkUnawareMachine = machine_for(
        machine_env, ForkRules, options=options, name="ForkUnawareMachine"
    )
    state = ForkUnawareMachine()
    try:
        r0 = state.start(settings=UTC)
        state.checkout(request=r0)
        with pytest.raises(ChildTouchedParentSessions) as caught:
            state.fork_child(work="close_all", ending=ending)
        assert "Request(1)'s backend" in str(caught.value)
    finally:
        state.teardown()
