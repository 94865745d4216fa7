"""Running a machine as a test, so that a failure always names the invariant that broke.

Hypothesis replays a failing example to shrink it and to print it. Against
real servers the replay can diverge from the original run (a fault lands a
millisecond later, an outcome the model learned differs), and Hypothesis then
raises ``FlakyStrategyDefinition`` or ``FlakyFailure`` *instead of* the
violation that started it all. The machines record their first violation
(``MachineEnv.first_violation``, set in teardown); here, when Hypothesis ends
with anything but an :class:`InvariantViolation`, that original violation is
raised in its place, with the seed, the example and the steps that produced it
and Hypothesis' own complaint chained as its cause.

The run's example database is seen through the machine's ``database_key`` (set
by :func:`chaos.machines.pool_machine.machine_for`: name, target, hash of the
options): Hypothesis keys a state machine by its class ``__name__``, so two
machines called ``PoolMachine`` on different targets would otherwise replay each
other's stored failures.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hypothesis import seed as use_seed
from hypothesis import settings as Settings
from hypothesis.database import ExampleDatabase
from hypothesis.stateful import run_state_machine_as_test

from chaos.machines.errors import InvariantViolation


def record_violation(env: Any, exc: BaseException | None, steps: list[str]) -> None:
    """Keep the run's first violation (a machine's teardown runs while it propagates)."""
    if isinstance(exc, InvariantViolation) and env.first_violation is None:
        env.first_violation = exc
        env.first_violation_example = env.examples
        env.first_violation_steps = list(steps)


class KeyedDatabase(ExampleDatabase):
    """Another database's examples under a prefix: one machine's keys apart from another's."""

    def __init__(self, inner: ExampleDatabase, prefix: str) -> None:
        super().__init__()
        self.inner = inner
        self.prefix = prefix.encode() + b"\0"

    def __repr__(self) -> str:
        return f"KeyedDatabase({self.inner!r}, {self.prefix[:-1].decode()!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, KeyedDatabase)
            and self.inner == other.inner
            and self.prefix == other.prefix
        )

    def __hash__(self) -> int:
        return hash(self.prefix)

    def fetch(self, key: bytes) -> Iterable[bytes]:
        return self.inner.fetch(self.prefix + key)

    def save(self, key: bytes, value: bytes) -> None:
        self.inner.save(self.prefix + key, value)

    def delete(self, key: bytes, value: bytes) -> None:
        self.inner.delete(self.prefix + key, value)

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        self.inner.move(self.prefix + src, self.prefix + dest, value)


def keyed_settings(machine: type, settings: Settings) -> Settings:
    """``settings`` with its database seen through the machine's ``database_key`` (if any)."""
    key = getattr(machine, "database_key", None)
    if key is None or settings.database is None:
        return settings
    return Settings(settings, database=KeyedDatabase(settings.database, key))


def run_machine_as_test(machine: type, settings: Settings, *, seed: int | None = None) -> None:
    """``run_state_machine_as_test`` that never hides the violation behind a replay error."""
    env: Any = machine.env
    env.first_violation = None
    runnable = use_seed(seed)(machine) if seed is not None else machine
    try:
        run_state_machine_as_test(runnable, settings=keyed_settings(machine, settings))
    except InvariantViolation:
        raise
    except Exception as exc:
        original = env.first_violation
        if original is None:
            raise
        steps = "\n".join(f"    {n}. {step}" for n, step in enumerate(env.first_violation_steps, 1))
        original.add_note(
            f"Hypothesis could not replay this failure ({type(exc).__name__}); this is the "
            f"original, from example {env.first_violation_example} of the run"
            + (f" with --hypothesis-seed={seed}" if seed is not None else "")
            + f". Its steps:\n{steps}"
        )
        raise original from exc
