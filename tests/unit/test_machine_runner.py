"""A failing machine always reports the invariant that failed, even when Hypothesis cannot
replay it: against real servers a replay may diverge (a fault lands later), and Hypothesis
then raises a Flaky error in place of the violation (chaos.machines.runner)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, rule

from chaos.machines.errors import InvariantViolation, SessionLeak
from chaos.machines.runner import record_violation, run_machine_as_test


@dataclass
class Env:
    examples: int = 0
    first_violation: InvariantViolation | None = None
    first_violation_example: int = 0
    first_violation_steps: list[str] = field(default_factory=list)


class FailsOnce(RuleBasedStateMachine):
    """Fails in its third example only: the replay Hypothesis makes cannot reproduce it."""

    env: ClassVar[Any]

    def __init__(self) -> None:
        super().__init__()
        self.env.examples += 1

    @rule()
    def step(self) -> None:
        if self.env.examples == 3:
            raise SessionLeak("the session kept work_mem = 8MB")

    def teardown(self) -> None:
        record_violation(self.env, sys.exc_info()[1], ["step"])


def machine_with(env: Env) -> type:
    return type("FailsOnceMachine", (FailsOnce,), {"env": env})


QUICK = settings(max_examples=10, database=None, phases=[Phase.generate], deadline=None)


def test_an_unreplayable_failure_reports_the_original_violation():
    env = Env()
    with pytest.raises(SessionLeak, match="work_mem") as raised:
        run_machine_as_test(machine_with(env), QUICK, seed=1234)
    note = "\n".join(getattr(raised.value, "__notes__", []))
    assert "could not replay" in note
    assert "example 3" in note
    assert "--hypothesis-seed=1234" in note
    assert "1. step" in note


def test_without_a_recorded_violation_hypothesis_error_is_raised_as_is():
    class Plain(RuleBasedStateMachine):
        env: ClassVar[Any] = Env()

        @rule()
        def step(self) -> None:
            raise ValueError("a harness bug, not a violation")

    with pytest.raises(ValueError, match="harness bug"):
        run_machine_as_test(Plain, QUICK)
