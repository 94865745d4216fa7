"""A failing user ``check``: the checkout discards the connection and retries.

Programs run directly, in the form Hypothesis prints failing programs (see
tests/properties/test_regressions.py): the reference backend passes each for
every way a check fails; the canaries fail them deterministically -
``CatchesOnlyPsycopgErrorsInCheck`` with :class:`CheckFailureRaised` when the
check raises anything but a psycopg.Error, ``TrustsUserCheck`` with
:class:`FailedCheckHandedOut` when the check closes the connection and
returns. test_canaries.py checks that the search gets there too.
"""

from __future__ import annotations

import pytest

from chaos.machines.check_rules import HOWS, ScriptedCheck, UserCheckRules
from chaos.machines.errors import CheckFailureRaised, FailedCheckHandedOut
from chaos.machines.model import SettingsValue
from chaos.machines.orphan_rules import OrphanRules
from chaos.machines.pool_machine import MachineEnv, machine_for
from chaos.targets.base import TargetOptions

#: About plain_pool itself (its variants and programs): the reference target only.
pytestmark = pytest.mark.reference_target

UTC = SettingsValue("UTC", use_tz=False, role=None)
#: How the canary that only catches psycopg.Error lets each failure through.
RAISED_PAST_PSYCOPG_ONLY = ("value_error", "runtime_error", "close_and_raise")


def _machine(env: MachineEnv, variant: str | None, max_size: int = 1) -> type:
    options = TargetOptions(
        max_size=max_size, timeout=1.0, user_check=ScriptedCheck, variant=variant
    )
    return machine_for(
        env, UserCheckRules, OrphanRules, options=options, name=f"{variant or 'Pool'}Machine"
    )


def fail_next(state, how: str) -> None:
    """Two failing calls in a row: the checkout must get past both."""
    requests_0 = state.start(settings=UTC)
    state.fail_next_checks(how=how, times=2, skip=0)
    state.checkout(request=requests_0)
    state.give_back(request=requests_0)
    state.no_orphaned_sessions()


def fail_later(state, how: str) -> None:
    """The failure lands in a request's checkout (skip the probe), not in the probe."""
    requests_0 = state.start(settings=UTC)
    state.fail_next_checks(how=how, times=1, skip=1)
    state.checkout(request=requests_0)
    state.give_back(request=requests_0)


def fail_backend(state, how: str) -> None:
    """The backend a request held fails every later check: it is never handed out again."""
    requests_0 = state.start(settings=UTC)
    state.checkout(request=requests_0)
    state.fail_checks_of(request=requests_0, how=how, then_give_back=True)
    state.checkout(request=requests_0)
    state.give_back(request=requests_0)
    state.no_orphaned_sessions()


PROGRAMS = {f.__name__: f for f in (fail_next, fail_later, fail_backend)}


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("program", list(PROGRAMS))
def test_reference_discards_and_retries(machine_env, program, how):
    state = _machine(machine_env, None)()
    try:
        PROGRAMS[program](state, how)
        failed = [c for c in state.target.user_check.calls if c.how]
        assert failed, "the program never made the check fail"
    finally:
        state.teardown()


@pytest.mark.canary
@pytest.mark.parametrize("how", RAISED_PAST_PSYCOPG_ONLY)
@pytest.mark.parametrize("program", list(PROGRAMS))
def test_catching_only_psycopg_errors_is_caught(machine_env, program, how):
    state = _machine(machine_env, "CatchesOnlyPsycopgErrorsInCheck")()
    try:
        with pytest.raises(CheckFailureRaised):
            PROGRAMS[program](state, how)
    finally:
        state.teardown()


@pytest.mark.canary
@pytest.mark.parametrize("program", list(PROGRAMS))
def test_trusting_a_check_that_closed_is_caught(machine_env, program):
    state = _machine(machine_env, "TrustsUserCheck")()
    try:
        with pytest.raises(FailedCheckHandedOut):
            PROGRAMS[program](state, "close_and_return")
    finally:
        state.teardown()
