"""``dirty_everything``: every kind of dirt on one session in one step. plain_pool's reset
undoes all of them together (twice in a row); a reset that forgets one kind is caught."""

import pytest
from canary_programs import UTC, Checked
from main_machines import sessions_machine

from chaos.machines.errors import SessionLeak

#: About plain_pool itself (its variants and programs): the reference target only.
pytestmark = pytest.mark.reference_target


@pytest.mark.parametrize(
    "variant", [None, "KeepsNoticeHandlers", "NoResetOnReturn", "KeepsRowFactory"]
)
def test_dirty_everything_is_reset_or_caught(machine_env, variant):
    state = sessions_machine(machine_env, variant=variant)()
    try:
        s = Checked(state)
        r0 = s.start(settings=UTC)
        if variant is None:
            s.dirty_everything(request=r0)
            s.dirty_everything(request=r0)
        else:
            with pytest.raises(SessionLeak):
                s.dirty_everything(request=r0)
    finally:
        state.teardown()
