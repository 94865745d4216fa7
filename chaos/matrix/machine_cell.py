"""A session-state or configuration cell: one narrow machine, searched from a fixed seed.

The machine is the suite's own (:func:`chaos.machines.pool_machine.machine_for`),
narrowed to the rules that reach the row's property (``focus``), one kind of
dirt, one connection (``max_size=1``: every checkout reuses the session the
last request left) and two requests. Hypothesis searches it from a fixed seed
with no example database (a stored failure would replay a sibling's: machines
share database keys by class name), so a cell's verdict never depends on luck
or on an earlier run: the budgets in :mod:`chaos.matrix.properties` were
measured to reach each failure in the first examples, with a margin.

The minimal failing program is what Hypothesis printed while reporting the
failure (captured with :func:`hypothesis.reporting.with_reporter`): valid
Python that pastes into tests/properties/test_regressions.py.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis.reporting import with_reporter

from chaos.machines.errors import InvariantViolation
from chaos.machines.pool_machine import MachineEnv, machine_for, note
from chaos.machines.runner import run_machine_as_test
from chaos.matrix.cell import Outcome
from chaos.matrix.properties import MachineCheck

#: Lines of Hypothesis' report that are not the program (the blob, its advice).
_NOISE = re.compile(r"^(You can reproduce this example|@reproduce_failure|Trying example|$)")


def cell_settings(check: MachineCheck) -> settings:
    """The cell's budget: no database, one bug reported, shrinking on (minimal program)."""
    return settings(
        deadline=None,
        database=None,
        derandomize=False,
        print_blob=False,
        report_multiple_bugs=False,
        max_examples=check.max_examples,
        stateful_step_count=check.steps,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )


def owns(check: MachineCheck, violation: BaseException) -> bool:
    """Whether a violation is the row's own (its classes, or its ``also`` pattern)."""
    if isinstance(violation, check.violations):
        return True
    return bool(check.also and re.search(check.also, str(violation)))


class RowInvariants:
    """Only the row's invariants fail a checkout; another one is noted and the run goes on.

    Why: a row asks one question. Django's stale zone after a settings change from
    another thread is the timezone row's finding; in the own-pool row it would end
    the run at the probe before the connection held across the change goes back.
    Errors the judge rejects (``_failed``) still end the run, named as another
    invariant unless the row's ``also`` pattern claims them.
    """

    row_check: ClassVar[MachineCheck]

    def _check_checkout(self, request: Any, result: Any, exhausted: bool) -> None:
        try:
            super()._check_checkout(request, result, exhausted)  # type: ignore[misc]
        except InvariantViolation as exc:
            if owns(self.row_check, exc):
                raise
            first = str(exc).strip().splitlines()[0][:200]
            note(f"not this row's invariant, ignored: {type(exc).__name__}: {first}")


def build_machine(env: MachineEnv, check: MachineCheck, name: str) -> type:
    return machine_for(
        env,
        RowInvariants,
        *check.mixins,
        options=check.options,
        roles=check.roles,
        max_requests=check.max_requests,
        focus=check.focus,
        name=name,
        row_check=check,
        **({"dirt": check.dirt} if check.dirt else {}),
        **dict(check.narrow),
    )


def program_from(lines: list[str]) -> str:
    """The printed program: Hypothesis' report lines without the blob advice."""
    kept = [line for line in lines if not _NOISE.match(line.strip())]
    return "\n".join(kept).strip()


def run_machine_cell(env: MachineEnv, check: MachineCheck, name: str) -> Outcome:
    """pass when the budget runs clean; fail with the violation and the printed program."""
    machine = build_machine(env, check, name)
    printed: list[str] = []
    violation: InvariantViolation | None = None
    with with_reporter(lambda text: printed.append(str(text))):
        try:
            run_machine_as_test(machine, cell_settings(check), seed=check.seed)
        except InvariantViolation as exc:
            violation = exc
    runs = f"{env.examples} examples, {env.steps} steps, seed {check.seed}"
    if violation is None:
        return Outcome("pass", f"held: {runs}", metrics={"examples": env.examples})
    program = program_from(printed + list(getattr(violation, "__notes__", ())))
    first = str(violation).strip().splitlines()
    summary = " ".join(line.strip() for line in first[:3])[:300]
    kind = type(violation).__name__
    own = owns(check, violation)
    detail = f"{kind}: {summary}" if own else f"{kind} (not this row's invariant): {summary}"
    found_in = env.first_violation_example
    detail += f" (found in example {found_in} of {check.max_examples}, seed {check.seed})"
    return Outcome(
        "fail",
        detail,
        program=program or None,
        metrics={"violation": kind, "found_in_example": found_in},
    )


def describe(check: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in vars(check).items())
