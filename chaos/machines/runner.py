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
"""

from __future__ import annotations

from typing import Any

from hypothesis import seed as use_seed
from hypothesis import settings as Settings
from hypothesis.stateful import run_state_machine_as_test

from chaos.machines.errors import InvariantViolation


def record_violation(env: Any, exc: BaseException | None, steps: list[str]) -> None:
    """Keep the run's first violation (a machine's teardown runs while it propagates)."""
    if isinstance(exc, InvariantViolation) and env.first_violation is None:
        env.first_violation = exc
        env.first_violation_example = env.examples
        env.first_violation_steps = list(steps)


def run_machine_as_test(machine: type, settings: Settings, *, seed: int | None = None) -> None:
    """``run_state_machine_as_test`` that never hides the violation behind a replay error."""
    env: Any = machine.env
    env.first_violation = None
    runnable = use_seed(seed)(machine) if seed is not None else machine
    try:
        run_state_machine_as_test(runnable, settings=settings)
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
