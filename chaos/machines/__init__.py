"""Hypothesis state machines over a pooled backend, reusable by other projects.

- :mod:`~chaos.machines.model`: what the machines expect (settings, holdings, faults).
- :mod:`~chaos.machines.pool_machine`: ``PoolMachine`` plus rule mixins
  (``NetworkFaults``, ``ServerFaults``, ``LifetimeRules``, ``PreparedRules``) and
  ``machine_for(env, *mixins, options=...)``.
- :mod:`~chaos.machines.dirt`: user SQL that dirties a session, one kind per fingerprint item.
- :mod:`~chaos.machines.checks`: judging a checkout's fingerprint.
- :mod:`~chaos.machines.errors`: one exception per invariant.

The backend is reached through :mod:`chaos.targets` (plain_pool by default).
"""

from chaos.machines.errors import ALL_VIOLATIONS, InvariantViolation
from chaos.machines.model import Backend, Model, SettingsValue
from chaos.machines.pool_machine import (
    LifetimeRules,
    MachineEnv,
    NetworkFaults,
    PoolMachine,
    PreparedRules,
    Request,
    ServerFaults,
    machine_for,
)

__all__ = [
    "ALL_VIOLATIONS",
    "Backend",
    "InvariantViolation",
    "LifetimeRules",
    "MachineEnv",
    "Model",
    "NetworkFaults",
    "PoolMachine",
    "PreparedRules",
    "Request",
    "ServerFaults",
    "SettingsValue",
    "machine_for",
]
