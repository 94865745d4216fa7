"""The machines the suite runs, built in one place: the reference run (test_pool_machine.py)
and the planted-bug run (test_planted_bugs.py) must drive exactly the same rules."""

from __future__ import annotations

from typing import Any

from chaos.machines.check_rules import ScriptedCheck, UserCheckRules
from chaos.machines.fork_rules import ForkRules
from chaos.machines.orphan_rules import OrphanRules
from chaos.machines.pool_machine import (
    LifetimeRules,
    MachineEnv,
    NetworkFaults,
    PreparedRules,
    ServerFaults,
    machine_for,
)
from chaos.targets.base import TargetOptions
from chaos.targets.registry import DEFAULT_TARGET


def _network(env: MachineEnv) -> tuple[type, ...]:
    return (NetworkFaults,) if env.proxy is not None else ()


def sessions_machine(env: MachineEnv, **options: Any) -> type:
    """Requests, session dirt, settings changes, pool maintenance, proxy faults, forks; on
    plain_pool the target is a subclass overriding the configuration hook (honoured on every
    path). Other targets run without the override unless asked (configure_override=True)."""
    options.setdefault("configure_override", env.target_name in (None, DEFAULT_TARGET))
    chosen = TargetOptions(**options)
    mixins = (OrphanRules, *_network(env), ForkRules)
    return machine_for(env, *mixins, options=chosen, name="PoolMachine")


def server_machine(env: MachineEnv, **options: Any) -> type:
    """The same faults plus restarts, crashes and terminated backends (a server of its own)."""
    chosen = TargetOptions(**options)
    mixins = (OrphanRules, NetworkFaults, ServerFaults)
    return machine_for(env, *mixins, options=chosen, name="ServerMachine")


def lifetime_machine(env: MachineEnv, **options: Any) -> type:
    chosen = TargetOptions(**{"max_lifetime": 1.0, **options})
    return machine_for(env, OrphanRules, LifetimeRules, options=chosen, name="LifetimeMachine")


def prepared_machine(env: MachineEnv, **options: Any) -> type:
    chosen = TargetOptions(server_side_binding=True, **options)
    return machine_for(env, OrphanRules, PreparedRules, options=chosen, name="PreparedMachine")


def user_check_machine(env: MachineEnv, **options: Any) -> type:
    chosen = TargetOptions(user_check=ScriptedCheck, **options)
    mixins = (UserCheckRules, OrphanRules, *_network(env))
    return machine_for(env, *mixins, options=chosen, name="UserCheckMachine")
