"""The scenario registry: a scenario is a name, a fault schedule, a workload and expectations.

Kept free of servers and pytest so that it can be imported (and unit-tested)
anywhere; :mod:`chaos.scenarios._runner` executes a scenario on a target, and the pytest
plugin (:mod:`chaos.fixtures.scenarios`) turns the registry into parametrized
tests whose ids are the scenario names.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from chaos.scenarios._checkers import Evidence, Finding
    from chaos.scenarios._context import ScenarioContext

__all__ = [
    "RESOURCES",
    "Expectations",
    "FaultStep",
    "RegistrationError",
    "Scenario",
    "ScenarioRegistry",
]

#: What a scenario may ask for; the plugin maps each to a fixture.
#: ``postgres``: the shared server (no server faults allowed);
#: ``private_postgres``: a server of its own (restart / crash / max_connections);
#: ``proxy``: a Toxiproxy proxy in front of the server, the pool connects through it.
RESOURCES = frozenset({"postgres", "private_postgres", "proxy"})

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


class RegistrationError(ValueError):
    """A scenario that cannot be registered; the message names the scenario and the problem."""


@dataclass(frozen=True)
class FaultStep:
    """One entry of a fault schedule.

    ``at``: seconds after the workload started. ``fault``: a name in the fault
    catalogue (:mod:`chaos.faults.catalogue`, ``python -c "import chaos.faults as f;
    print(f.describe())"``): the server faults ``restart_fast``,
    ``restart_immediate``, ``crash``, ``terminate_backends``, ``outage`` (alias
    ``stop``), the network faults ``latency``, ``bandwidth``, ``slow_close``,
    ``half_open``, ``timed_close``, ``reset_peer``, ``slicer``, ``limit_data``,
    ``down``, or one registered with ``chaos.faults.register``. ``params``: its
    constructor arguments. ``hold``: heal it after this many seconds (``None``:
    a one-shot fault, or healed when the schedule ends). Registration checks
    the name, the arguments and that the scenario ``needs`` what the fault
    acts on (``proxy`` for a network fault, ``private_postgres`` for a server one).
    """

    at: float
    fault: str
    params: Mapping[str, Any] = field(default_factory=dict)
    hold: float | None = None

    def describe(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.params.items())
        hold = f" for {self.hold:g}s" if self.hold is not None else ""
        return f"{self.fault}({args})@{self.at:g}s{hold}"


@dataclass(frozen=True)
class Expectations:
    """A recovery contract stated in numbers; the runner turns each into a verdict.

    - ``max_recovery_s``: from the server accepting again (or the fault healed)
      to the first successful query through the pool.
    - ``caller_errors``: ``"none"``; ``"in_flight"`` (only operations that held a
      connection when the fault hit, at most one per worker per fault);
      ``"per_connection"`` (at most one per pooled connection per fault, plus
      the in-flight ones); ``"any"``.
    - ``max_errors``: an absolute cap on errors callers saw.
    - ``ledger``: verify the write ledger (no lost write, no phantom commit).
    - ``sessions``: no session left in pg_stat_activity beyond what the pool holds.
    - ``min_ok``: at least this many successful operations.
    - ``extra``: more checks, pure functions of the run's
      :class:`~chaos.scenarios.Evidence` (ops, windows, metrics: read-only); each
      returns a list of violations (empty: fine) or a :class:`~chaos.scenarios.Finding`
      (violations, plus metrics and notes for the report).
    """

    max_recovery_s: float | None = None
    caller_errors: str = "any"
    max_errors: int | None = None
    ledger: bool = False
    sessions: bool = True
    min_ok: int = 1
    extra: tuple[Callable[[Evidence], list[str] | Finding], ...] = ()

    def __post_init__(self) -> None:
        if self.caller_errors not in {"none", "in_flight", "per_connection", "any"}:
            raise RegistrationError(
                f"caller_errors must be none/in_flight/per_connection/any, "
                f"not {self.caller_errors!r}"
            )


#: A workload runs until ``ctx.stop`` is set, recording each operation with ``ctx.op(...)``.
Workload = Callable[["ScenarioContext"], None]


@dataclass(frozen=True, repr=False)
class Scenario:
    """A named, deterministic fault scenario, run on any target (``--target``).

    What the target is asked for is a :class:`chaos.targets.base.TargetOptions`:
    ``pool`` holds its pool fields (``min_size``, ``max_size``, ``timeout``,
    ``max_lifetime``, ``max_idle``, ``reconnect_timeout``, ``reconnect_failed``;
    a scenario's pool is 4..4 with a 10 s timeout unless it says otherwise),
    ``options`` any other field (``health_checks``, ``connect_options``...);
    ``variant`` names a broken plain_pool wrapper of
    :data:`chaos.targets.variants.VARIANTS` (``TargetOptions.variant``: other
    targets skip the scenario). ``settings`` is the older, plain_pool-shaped
    spelling (``POSTGRES_CONN_HEALTH_CHECKS`` -> ``health_checks``,
    ``POSTGRES_OPTIONS`` -> ``connect_options``; other keys have no target option
    and are ignored with a note; their secrets are masked). ``reference_only``:
    why the scenario runs on plain_pool only (it is skipped with that reason on
    other targets). ``duration`` is how long the workload runs (the schedule must
    fit in it); ``marks`` are pytest mark names (``chaos`` puts it in ``tox -e
    chaos``); ``seeded``: the schedule is drawn from a seed
    (``PLAIN_POOL_CHAOS_SEED``), printed and used in the replay command.
    """

    name: str
    faults: Sequence[FaultStep]
    workload: Workload
    expect: Expectations
    description: str = ""
    needs: frozenset[str] = frozenset({"private_postgres"})
    pool: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    variant: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    reference_only: str | None = None
    server_settings: Mapping[str, str] = field(default_factory=dict)
    duration: float = 3.0
    threads: int = 4
    marks: tuple[str, ...] = ("chaos",)
    seeded: bool = False
    schedule_factory: Callable[[int], Sequence[FaultStep]] | None = None
    origin: str = ""

    def __repr__(self) -> str:
        """Every field, with secrets (a password in ``settings``) masked: pytest prints
        the parametrized scenario among a failing test's locals."""
        from plain_pool._redact import safe_repr

        fields = ", ".join(
            f"{f.name}={safe_repr(getattr(self, f.name))}" for f in dataclasses.fields(self)
        )
        return f"Scenario({fields})"

    def schedule(self, seed: int | None = None) -> list[FaultStep]:
        """The concrete fault schedule (drawn from ``seed`` for seeded scenarios)."""
        if self.schedule_factory is not None:
            return list(self.schedule_factory(0 if seed is None else seed))
        return list(self.faults)

    def describe_faults(self, seed: int | None = None) -> str:
        return "; ".join(s.describe() for s in self.schedule(seed)) or "-"


class ScenarioRegistry:
    """Named scenarios, in registration order. Duplicate names and bad fields are refused."""

    def __init__(self) -> None:
        self._scenarios: dict[str, Scenario] = {}

    def add(self, scenario: Scenario) -> Scenario:
        problems = validate(scenario)
        if problems:
            name = getattr(scenario, "name", None)
            where = f" (from {scenario.origin})" if getattr(scenario, "origin", "") else ""
            raise RegistrationError(
                f"scenario {name!r}{where} cannot be registered: " + "; ".join(problems)
            )
        existing = self._scenarios.get(scenario.name)
        if existing is not None and existing is not scenario:
            raise RegistrationError(
                f"duplicate scenario name {scenario.name!r}: already registered"
                f" from {existing.origin or '?'}, again from {scenario.origin or '?'}"
            )
        self._scenarios[scenario.name] = scenario
        return scenario

    def register(
        self,
        name: str | None = None,
        *,
        faults: Sequence[FaultStep] = (),
        workload: Workload | None = None,
        expect: Expectations | None = None,
        **options: Any,
    ) -> Scenario:
        """Keyword form of :meth:`add`; missing fields give a RegistrationError naming them."""
        missing = [
            label
            for label, value in (("name", name), ("workload", workload), ("expect", expect))
            if value is None
        ]
        if missing:
            raise RegistrationError(
                f"scenario {name!r} cannot be registered: missing field(s) {', '.join(missing)}"
            )
        try:
            scenario = Scenario(
                name=name,
                faults=tuple(faults),
                workload=workload,
                expect=expect,
                **options,  # type: ignore[arg-type]
            )
        except TypeError as exc:
            raise RegistrationError(f"scenario {name!r} cannot be registered: {exc}") from None
        return self.add(scenario)

    def scenario(self, name: str | None = None, **fields: Any) -> Callable[[Workload], Workload]:
        """Decorator: the decorated function is the workload; the name defaults to its name."""

        def decorate(fn: Workload) -> Workload:
            fields.setdefault("origin", f"{fn.__module__}.{fn.__qualname__}")
            doc = (fn.__doc__ or "").strip()
            fields.setdefault("description", doc.splitlines()[0] if doc else "")
            self.register(name or fn.__name__.replace("_", "-"), workload=fn, **fields)
            return fn

        return decorate

    def __getitem__(self, name: str) -> Scenario:
        try:
            return self._scenarios[name]
        except KeyError:
            raise KeyError(
                f"no scenario {name!r}; known: {', '.join(sorted(self._scenarios))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._scenarios

    def __iter__(self) -> Iterator[Scenario]:
        return iter(list(self._scenarios.values()))

    def __len__(self) -> int:
        return len(self._scenarios)

    def names(self) -> list[str]:
        return list(self._scenarios)


def _fault_problems(where: str, step: FaultStep, needs: Any) -> list[str]:
    """What would make the runner fail to apply ``step``: an unknown fault name (the
    message lists the catalogue), bad arguments, or a resource the scenario lacks."""
    from chaos.faults import FaultError, fault_class  # the catalogue, filled on import

    try:
        cls = fault_class(step.fault)
    except FaultError as exc:
        return [f"{where}: {exc}"]
    try:
        cls(**dict(step.params))
    except (TypeError, ValueError, FaultError) as exc:
        return [f"{where}: bad arguments for {step.fault!r} {dict(step.params)}: {exc}"]
    needed = {"proxy": "proxy", "server": "private_postgres"}.get(cls.target_kind)
    if needed is not None and needed not in set(needs or ()):
        return [
            f"{where}: {step.fault!r} acts on the {cls.target_kind}: needs must include {needed!r}"
        ]
    return []


#: ``Scenario.pool`` keys: the pool fields of TargetOptions.
POOL_FIELDS = frozenset(
    {"min_size", "max_size", "timeout", "max_lifetime", "max_idle", "reconnect_timeout"}
    | {"reconnect_failed"}
)


def _option_problems(scenario: Scenario) -> list[str]:
    """``pool`` / ``options`` keys that are no TargetOptions field (a typo would be ignored)."""
    from chaos.targets.base import TargetOptions

    fields = {f.name for f in dataclasses.fields(TargetOptions)}
    problems = []
    pool = set(scenario.pool or ()) - POOL_FIELDS
    if pool:
        problems.append(f"pool has unknown key(s) {sorted(pool)}; known: {sorted(POOL_FIELDS)}")
    options = set(scenario.options or ()) - fields
    if options:
        problems.append(
            f"options has unknown key(s) {sorted(options)}; TargetOptions fields: {sorted(fields)}"
        )
    return problems


def validate(scenario: Any) -> list[str]:
    """Every problem with a scenario, as short phrases naming the field."""
    if not isinstance(scenario, Scenario):
        return [f"expected a chaos.scenarios.Scenario, got {type(scenario).__name__}"]
    problems = []
    if not isinstance(scenario.name, str) or not _NAME.match(scenario.name):
        problems.append(
            f"name {scenario.name!r} must be lowercase letters, digits, '-', '_' or '.'"
        )
    if not callable(scenario.workload):
        problems.append(f"workload must be callable, got {type(scenario.workload).__name__}")
    if not isinstance(scenario.expect, Expectations):
        problems.append(f"expect must be an Expectations, got {type(scenario.expect).__name__}")
    steps = scenario.faults
    if isinstance(steps, FaultStep | str) or not isinstance(steps, Sequence):
        problems.append("faults must be a sequence of FaultStep")
        steps = ()
    for i, step in enumerate(steps):
        if not isinstance(step, FaultStep):
            problems.append(f"faults[{i}] is a {type(step).__name__}, not a FaultStep")
            continue
        if step.at < 0 or step.at > scenario.duration:
            problems.append(
                f"faults[{i}] ({step.fault}) at {step.at}s is outside the duration "
                f"{scenario.duration}s"
            )
        problems.extend(_fault_problems(f"faults[{i}]", step, scenario.needs))
    problems.extend(_option_problems(scenario))
    unknown = set(scenario.needs) - RESOURCES
    if unknown:
        problems.append(
            f"needs has unknown resource(s) {sorted(unknown)}; known: {sorted(RESOURCES)}"
        )
    if scenario.seeded and scenario.schedule_factory is None:
        problems.append("seeded scenarios need a schedule_factory(seed)")
    elif scenario.schedule_factory is not None:
        # Seeded schedules are drawn at run time; check one draw's faults now.
        try:
            drawn = list(scenario.schedule_factory(0))
        except Exception as exc:
            problems.append(f"schedule_factory(0) raised {type(exc).__name__}: {exc}")
            drawn = []
        for i, step in enumerate(drawn):
            if isinstance(step, FaultStep):
                problems.extend(_fault_problems(f"schedule(0)[{i}]", step, scenario.needs))
            else:
                problems.append(f"schedule(0)[{i}] is a {type(step).__name__}, not a FaultStep")
    if scenario.duration <= 0:
        problems.append(f"duration must be positive, got {scenario.duration}")
    if scenario.threads < 1:
        problems.append(f"threads must be at least 1, got {scenario.threads}")
    if isinstance(scenario.marks, str):
        problems.append("marks must be a tuple of mark names, not a string")
    return problems
