"""Runs one scenario on one target: resources, workload, fault clock, observations, verdict.

The parts, in Jepsen's shape:

- the *client*: the target's per-thread :class:`chaos.targets.base.Client`, which
  workloads reach through the :class:`~chaos.scenarios._context.ScenarioContext`;
- the *history*: every operation, a frozen record (:mod:`~chaos.scenarios._history`);
- the *nemesis* on a clock: :class:`~chaos.scenarios._clock.FaultClock` applies
  the schedule and calls back as each fault ends, when the runner starts a
  *recovery probe* (a query through the target until one succeeds);
- the *checkers*: pure functions (:mod:`~chaos.scenarios._checkers`) over the
  evidence, composed into a verdict once; then the
  :class:`~chaos.scenarios._result.ScenarioResult` is built, once.

The runner owns time: it starts the workload in a background thread, runs the
clock, stops the workload after the scenario's duration, heals everything,
observes what needs the server (the ledger table, the sessions left in
``pg_stat_activity``) and judges. A watchdog bounds the workload: threads still
blocked after the scenario are reported (the half-open hazard) and abandoned as
daemons, never joined forever.

The target is made from the scenario's :class:`~chaos.targets.base.TargetOptions`
(:func:`target_options`); a target that cannot honour one
(:class:`~chaos.targets.registry.UnsupportedOption`), has no ``thread_client()``,
or a scenario that runs on plain_pool only (``Scenario.reference_only``), raises
:class:`ScenarioSkipped` with the reason (the pytest fixture skips the test).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from chaos.ledger import LedgerVerdict
from chaos.scenarios._checkers import (
    Evidence,
    Finding,
    check_caller_errors,
    check_extra,
    check_faults_applied,
    check_ledger,
    check_recovery,
    check_sessions,
    classify_errors,
    compose,
    with_recoveries,
)
from chaos.scenarios._clock import FaultClock, FaultWindow
from chaos.scenarios._context import WATCHDOG_S, ScenarioContext
from chaos.scenarios._history import Op, OpHandle
from chaos.scenarios._registry import Scenario
from chaos.scenarios._result import ScenarioResult
from chaos.targets.base import Target, TargetOptions
from plain_pool._redact import secrets_of

__all__ = [
    "POOL_COUNTERS",
    "PROBE_DEADLINE_S",
    "WATCHDOG_S",
    "FaultWindow",
    "Op",
    "OpHandle",
    "ScenarioContext",
    "ScenarioResult",
    "ScenarioRunner",
    "ScenarioSkipped",
    "classify_errors",
    "server_kwargs",
    "target_options",
]

#: How long the recovery probe keeps trying after a fault ends.
PROBE_DEADLINE_S = 20.0
#: Pool counters copied into ``metrics["pool"]`` (evidence that a fault reached the pool).
POOL_COUNTERS = (
    "checks_failed",
    "drains",
    "reset_failures",
    "returns_bad",
    "connections_lost",
    "connections_errors",
    "requests_errors",
)
#: A scenario's pool unless it says otherwise (``Scenario.pool``).
SCENARIO_POOL = {"min_size": 4, "max_size": 4, "timeout": 10.0}
#: The plain_pool-shaped ``Scenario.settings`` keys that have a TargetOptions field.
LEGACY_SETTINGS = {"POSTGRES_CONN_HEALTH_CHECKS": "health_checks"}
#: How long the sessions check waits for returned connections to be closed by the pool.
SESSIONS_SETTLE_S = 3.0


class ScenarioSkipped(Exception):
    """The scenario cannot run on this target; the message says why."""


def target_options(scenario: Scenario) -> tuple[TargetOptions, list[str]]:
    """The scenario's TargetOptions, and notes on settings that have no target option.

    ``pool`` over :data:`SCENARIO_POOL`, then ``options``; ``variant`` becomes
    ``TargetOptions.variant``; the older ``settings`` (plain_pool's keys) map as
    :data:`LEGACY_SETTINGS` says, ``POSTGRES_OPTIONS`` to ``connect_options``.
    """
    fields: dict[str, Any] = {**SCENARIO_POOL, **scenario.pool}
    notes = []
    ignored = []
    for key, value in scenario.settings.items():
        if key in LEGACY_SETTINGS:
            fields[LEGACY_SETTINGS[key]] = value
        elif key == "POSTGRES_OPTIONS" and isinstance(value, Mapping):
            fields["connect_options"] = dict(value)
        else:
            ignored.append(key)
    if ignored:
        notes.append(f"scenario settings without a target option, not applied: {sorted(ignored)}")
    options = dict(scenario.options)
    if "connect_options" in options and "connect_options" in fields:
        options["connect_options"] = {**fields["connect_options"], **options["connect_options"]}
    fields.update(options)
    if scenario.variant:
        fields["variant"] = scenario.variant
    return TargetOptions(**fields), notes


def server_kwargs(scenario: Scenario) -> dict[str, Any]:
    """A private server's settings: the scenario's, over the harness's crash-safe
    defaults (chaos.postgres.BASE_SETTINGS keeps synchronous_commit on)."""
    return {"settings": dict(scenario.server_settings)}


class ScenarioRunner:
    """Makes the target, runs the scenario on it, judges it.

    ``make_target(server=, host=, port=, options=)`` is a target factory
    (:func:`chaos.targets.registry.factory`); ``host``/``port`` the address the
    target connects to (the proxy when there is one).
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        server: Any,
        make_target: Callable[..., Target],
        host: str | None = None,
        port: int | None = None,
        proxy: Any = None,
        nemesis: Any = None,
        target_name: str = "",
        seed: int | None = None,
    ) -> None:
        self.scenario = scenario
        self.server = server
        self.make_target = make_target
        self.host = host if host is not None else server.host
        self.port = int(port if port is not None else server.port)
        self.proxy = proxy
        self.nemesis = nemesis
        self.target_name = target_name
        self.seed = seed
        if scenario.seeded and seed is None:
            self.seed = random.SystemRandom().randrange(1, 2**31)
        self.options, self.option_notes = target_options(scenario)

    @classmethod
    def from_request(
        cls,
        request: Any,
        scenario: Scenario,
        *,
        make_target: Callable[..., Target],
        target_name: str = "",
        seed: int | None = None,
    ) -> ScenarioRunner:
        """Resolve ``scenario.needs`` into fixtures (private server, proxy, nemesis)."""
        from chaos.faults import SERVER_FAULTS_NEED_PERMISSION, Nemesis, proxy_address

        needs = scenario.needs
        proxy = None
        if "private_postgres" in needs:
            server = request.getfixturevalue("postgres_factory")(**server_kwargs(scenario))
            if "proxy" in needs:
                proxy = request.getfixturevalue("tcp_proxy_factory")(server.host, server.port)
        else:
            server = request.getfixturevalue("postgres")
            if "proxy" in needs:
                proxy = request.getfixturevalue("pg_proxy")
        nemesis = Nemesis(
            proxy,
            server,
            server_faults=True if "private_postgres" in needs else SERVER_FAULTS_NEED_PERMISSION,
        )
        host, port = (server.host, server.port) if proxy is None else proxy_address(proxy)
        return cls(
            scenario,
            server=server,
            make_target=make_target,
            host=host,
            port=port,
            proxy=proxy,
            nemesis=nemesis,
            target_name=target_name,
            seed=seed,
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(secrets_of({"settings": self.scenario.settings, "options": self.options_map}))

    @property
    def options_map(self) -> dict[str, Any]:
        return {"connect_options": dict(self.options.connect_options or {})}

    # -- the target ------------------------------------------------------------------------
    def make(self) -> Target:
        """The target for this scenario, or ScenarioSkipped saying why it cannot run it."""
        from chaos.targets.plain_pool import PlainPoolTarget
        from chaos.targets.registry import UnsupportedOption

        try:
            target = self.make_target(
                server=self.server, host=self.host, port=self.port, options=self.options
            )
        except UnsupportedOption as exc:
            raise ScenarioSkipped(str(exc)) from None
        why = self.scenario.reference_only
        if self.scenario.variant and not why:
            why = f"variant {self.scenario.variant!r} is a broken plain_pool wrapper"
        if why and not isinstance(target, PlainPoolTarget):
            target.close()
            raise ScenarioSkipped(f"scenario {self.scenario.name!r} runs on plain_pool only: {why}")
        try:
            target.thread_client()
        except NotImplementedError as exc:
            target.close()
            raise ScenarioSkipped(str(exc)) from None
        return target

    # -- running ---------------------------------------------------------------------------
    def run(self) -> ScenarioResult:
        scenario = self.scenario
        target = self.make()
        ctx = ScenarioContext(
            scenario,
            target=target,
            server=self.server,
            options=self.options,
            host=self.host,
            port=self.port,
            proxy=self.proxy,
            nemesis=self.nemesis,
            seed=self.seed,
            settings=scenario.settings,
            target_name=self.target_name,
        )
        try:
            return self._run(ctx)
        finally:
            ctx.close()

    def _run(self, ctx: ScenarioContext) -> ScenarioResult:
        scenario = self.scenario
        if scenario.expect.ledger:
            with ctx.admin() as admin:
                ctx.ledger_table.create(admin)
        crash: list[str] = []

        def workload() -> None:
            try:
                scenario.workload(ctx)
            except Exception:
                crash.append(traceback.format_exc())

        # warm the pool so that "idle" means "connections pooled, nobody using them"
        with contextlib.suppress(Exception):
            ctx.db().ensure_connection()
            ctx.db().close()
        probes: list[threading.Thread] = []
        clock = FaultClock(
            self.nemesis,
            scenario.schedule(self.seed),
            on_ended=lambda: probes.append(self._probe(ctx)),
        )
        ctx.t0 = time.monotonic()
        thread = threading.Thread(target=workload, name=f"{ctx.alias}-workload", daemon=True)
        thread.start()
        try:
            clock.run(ctx.t0, scenario.duration)
        finally:
            ctx.stop.set()
            heal_error = None
            if self.nemesis is not None:
                try:
                    self.nemesis.heal_all()
                except Exception as exc:
                    heal_error = f"heal_all failed: {exc}"
            thread.join(WATCHDOG_S)
            for probe in probes:
                probe.join(PROBE_DEADLINE_S)
        hung = [t for t in ctx.threads if t.is_alive()] + ([thread] if thread.is_alive() else [])
        # the pool's own view (checks failed, resets failed, connections lost...) for the checks
        ctx.metrics["pool"] = {
            k: v for k, v in ctx.pool_stats().items() if k in POOL_COUNTERS and v
        }
        if hung:
            ctx.metrics["hung_threads"] = len(hung)
        end = time.monotonic()
        ops = ctx.history.view()
        evidence = Evidence(
            name=scenario.name,
            t0=ctx.t0,
            ops=ops,
            windows=with_recoveries(ops, clock.windows()),
            metrics=ctx.metrics,
            hung_threads=len(hung),
        )
        runner_problems = ([heal_error] if heal_error else []) + [
            "workload raised:\n" + c for c in crash[:1]
        ]
        ledger_verdict, ledger_finding, sessions, sessions_finding = self._observe(ctx)
        verdict = compose(
            [
                Finding(tuple(runner_problems)),
                ledger_finding,
                sessions_finding,
                check_faults_applied(evidence),
                check_recovery(evidence, scenario.expect),
                check_caller_errors(evidence, scenario.expect, self.options.max_size),
                *(check_extra(evidence, extra) for extra in scenario.expect.extra),
            ]
        )
        return ScenarioResult(
            name=scenario.name,
            faults=scenario.describe_faults(self.seed),
            verdict=verdict.verdict,
            violations=list(verdict.violations),
            windows=list(evidence.windows),
            ops=list(ops),
            t0=ctx.t0,
            duration_s=end - ctx.t0,
            seed=self.seed,
            seeded=scenario.seeded,
            ledger=ledger_verdict,
            sessions=sessions,
            notes=[*self.option_notes, *ctx.notes, *verdict.notes],
            metrics={**ctx.metrics, **verdict.metrics},
            hung_threads=len(hung),
            # the leftovers check: only a server the harness owns must be gone at the end
            ports=[
                p
                for p in (getattr(self.server, "port", None),)
                if p and getattr(self.server, "mode", "owned") == "owned"
            ],
            fault_journal=self.nemesis.schedule.format() if self.nemesis else "",
            secrets=self.secrets,
            target=self.target_name,
            target_description=getattr(ctx.target, "description", ""),
        )

    def _probe(self, ctx: ScenarioContext) -> threading.Thread:
        """Query through the target until it works: the first success after the fault ended."""

        def probe() -> None:
            deadline = time.monotonic() + PROBE_DEADLINE_S
            while time.monotonic() < deadline:
                with ctx.op("probe", worker=-1) as op:
                    db = ctx.db()
                    try:
                        db.ensure_connection()
                        op.checked_out()
                        with db.cursor() as cur:
                            cur.execute("SELECT 1")
                    finally:
                        db.close()
                if op.ok:
                    return
                time.sleep(0.005)

        thread = threading.Thread(target=probe, name=f"{ctx.alias}-probe", daemon=True)
        thread.start()
        return thread

    def _observe(
        self, ctx: ScenarioContext
    ) -> tuple[LedgerVerdict | None, Finding, str | None, Finding]:
        """Read what the checks need from the server: the ledger's rows, the sessions left."""
        expect = self.scenario.expect
        ledger_verdict = sessions = None
        ledger_finding = sessions_finding = Finding()
        try:
            with ctx.admin() as admin:
                if expect.ledger:
                    committed = ctx.ledger_table.read(admin, ctx.ledger.run_id)
                    ledger_verdict, ledger_finding = check_ledger(ctx.ledger.entries(), committed)
                if expect.sessions:
                    in_server, holds = self._sessions_left(ctx, admin)
                    session_verdict, sessions_finding = check_sessions(
                        ctx.application_name, in_server, holds
                    )
                    sessions = session_verdict.summary()
        except Exception as exc:
            problem = f"post-checks failed: {type(exc).__name__}: {exc}"
            sessions_finding = Finding((*sessions_finding.violations, problem))
        return ledger_verdict, ledger_finding, sessions, sessions_finding

    def _sessions_left(self, ctx: ScenarioContext, admin: Any) -> tuple[int, int]:
        """(sessions of the target's application_name, what its pools may hold), after
        giving returned connections a moment to be closed by the pool's workers."""
        from chaos.ledger import LedgerTable

        holds = self._pool_holds(ctx)
        deadline = time.monotonic() + SESSIONS_SETTLE_S
        while True:
            n = LedgerTable.count_sessions(admin, ctx.application_name)
            if n <= holds or time.monotonic() > deadline:
                return n, holds
            time.sleep(0.1)
            holds = self._pool_holds(ctx, holds)

    @staticmethod
    def _pool_holds(ctx: ScenarioContext, default: int = 0) -> int:
        capacity = None
        with contextlib.suppress(Exception):
            capacity = ctx.target.session_capacity()
        if capacity is not None:
            return capacity.sessions
        return int(ctx.pool_stats().get("pool_size", default))
