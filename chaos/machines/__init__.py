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

from typing import Any

from chaos.machines.errors import ALL_VIOLATIONS, InvariantViolation
from chaos.machines.model import Backend, Model, SettingsValue

_FROM_POOL_MACHINE = (
    "LifetimeRules",
    "MachineEnv",
    "NetworkFaults",
    "PoolMachine",
    "PreparedRules",
    "Request",
    "ServerFaults",
    "machine_for",
)


def __getattr__(name: str) -> Any:
    """The machine's names on first use: chaos.targets imports this package's model, and
    the machine imports chaos.targets, so importing it here would make a cycle."""
    if name in _FROM_POOL_MACHINE:
        from chaos.machines import pool_machine

        return getattr(pool_machine, name)
    raise AttributeError(f"module 'chaos.machines' has no attribute {name!r}")


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
