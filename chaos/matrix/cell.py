"""One cell of the matrix: a target, a property, the verdict and what backs it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: The verdict vocabulary (see :mod:`chaos.matrix` for what each means).
VERDICTS = ("pass", "fail", "na", "not_run")
#: How the terminal table and the page print each verdict.
LABELS = {"pass": "pass", "fail": "FAIL", "na": "n/a", "not_run": "not run"}


@dataclass
class Cell:
    """A verdict with its one-line detail; a fail also carries the failing program."""

    target: str
    property: str
    verdict: str
    detail: str
    replay: str = ""
    program: str | None = None
    #: Measurements (ms, counts) of the fault rows, for the page and the README.
    metrics: dict[str, Any] = field(default_factory=dict)
    expected: str | None = None
    reason: str | None = None
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.verdict != "fail":
            data.pop("program")
        return {k: v for k, v in data.items() if v not in (None, {})}


@dataclass(frozen=True)
class Outcome:
    """What a row's check found for one target, before the cell is labelled."""

    verdict: str
    detail: str
    program: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
