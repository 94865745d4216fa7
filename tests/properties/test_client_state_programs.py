"""Client-side dirt through the state machine, as explicit programs (no search, no luck).

For every kind of dirt the machines draw (:data:`chaos.machines.dirt.DIRT`),
the two-step program "dirty the only connection, give it back" is run
directly, the way Hypothesis prints a failing program:

- against plain_pool: the probe checkout after the return must pass;
- against a backend with no reset (``NoResetOnReturn``): it must raise
  :class:`SessionLeak` - the machine's check sees every kind;
- against a reset that forgets only the notice handlers
  (``KeepsNoticeHandlers``, the canary of the client-side fingerprint): it must
  raise :class:`SessionLeak` naming ``notice_handlers``, and pass for every
  other kind.
"""

from __future__ import annotations

import pytest

from chaos.machines.dirt import DIRT, ClientAttr, Dirt
from chaos.machines.errors import SessionLeak
from chaos.machines.model import SettingsValue
from chaos.machines.pool_machine import machine_for
from chaos.targets.base import TargetOptions

#: About plain_pool itself (its variants and programs): the reference target only.
pytestmark = pytest.mark.reference_target

NOTICE_HANDLER = ClientAttr("notice_handler", "ignore_notice")


def _dirty_and_give_back(machine_env, variant: str | None, dirt: Dirt) -> None:
    options = TargetOptions(max_size=1, timeout=0.5, variant=variant)
    name = f"{variant or 'PoolMachine'}Machine"
    machine = machine_for(machine_env, options=options, roles=(None,), name=name)
    state = machine()
    try:
        requests_0 = state.start(settings=SettingsValue("UTC", use_tz=False, role=None))
        state.dirty_session(request=requests_0, dirt=dirt, then_give_back=True)
    finally:
        state.teardown()


@pytest.mark.parametrize("dirt", DIRT, ids=repr)
def test_plain_pool_resets_every_kind(dirt, machine_env):
    _dirty_and_give_back(machine_env, None, dirt)


@pytest.mark.canary
@pytest.mark.parametrize("dirt", DIRT, ids=repr)
def test_canary_no_reset_leaks_every_kind(dirt, machine_env):
    with pytest.raises(SessionLeak):
        _dirty_and_give_back(machine_env, "NoResetOnReturn", dirt)


@pytest.mark.canary
def test_canary_reset_forgetting_notice_handlers(machine_env):
    with pytest.raises(SessionLeak, match=r"notice_handlers: extra .*ignore_notice"):
        _dirty_and_give_back(machine_env, "KeepsNoticeHandlers", NOTICE_HANDLER)


@pytest.mark.parametrize("dirt", [d for d in DIRT if d != NOTICE_HANDLER], ids=repr)
def test_reset_forgetting_notice_handlers_forgets_nothing_else(dirt, machine_env):
    _dirty_and_give_back(machine_env, "KeepsNoticeHandlers", dirt)
