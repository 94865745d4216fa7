"""Runs one scenario: resources, workload threads, the fault schedule, the verdict.

The runner owns time. It starts the workload in a background thread, applies
each :class:`~chaos.scenarios.FaultStep` at its offset through a
:class:`chaos.faults.Nemesis` (so the fault journal has every apply and heal),
runs a *recovery probe* right after every fault that ends (a server back
accepting, a network fault healed), stops the workload after the scenario's
duration, heals everything, then checks the contract:

- recovery: from the server accepting again (or the heal) to the first
  successful query through the pool;
- caller errors (see :class:`~chaos.scenarios.Expectations`): an error is *in
  flight* when the operation held a connection it had checked out before the
  fault ended; any other error (a checkout after the server was back handing
  out a dead connection, a PoolTimeout) counts against the contract;
- the write ledger and the sessions left in ``pg_stat_activity``.

A result never prints a password: :meth:`ScenarioResult.as_dict` and
:meth:`~ScenarioResult.explain` mask the settings' secrets and any URL or
``password=`` they find (``plain_pool._redact``), and its repr is short.

A watchdog bounds the workload: threads still blocked after the scenario
are reported (the half-open hazard) and abandoned as daemons, never joined
forever.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

from chaos.ledger import Ledger, LedgerTable, LedgerVerdict, check_sessions
from chaos.scenarios._registry import FaultStep, Scenario
from plain_pool._redact import redact, redact_data, secrets_of

#: How long the recovery probe keeps trying after a fault ends.
PROBE_DEADLINE_S = 20.0
#: How long the workload may take to notice ``stop`` before it counts as hung.
WATCHDOG_S = 8.0
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


@dataclass
class Op:
    """One operation a caller did, with monotonic times."""

    worker: int
    kind: str
    started: float
    ended: float = 0.0
    ok: bool = False
    checked_out: float | None = None
    error_type: str | None = None
    error: str | None = None


class OpHandle:
    """Yielded by :meth:`ScenarioContext.op`; call :meth:`checked_out` once a connection is held."""

    def __init__(self, op: Op) -> None:
        self.op = op

    def checked_out(self) -> None:
        self.op.checked_out = time.monotonic()


@dataclass
class FaultWindow:
    """A fault as the verdict sees it: from apply to the moment it ended."""

    step: FaultStep
    applied_at: float
    ended_at: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    recovery_s: float | None = None
    error: str | None = None


class ScenarioContext:
    """What a workload sees: the database, the ledger, the stop flag and op recording."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        settings: dict[str, Any],
        server: Any,
        proxy: Any = None,
        nemesis: Any = None,
        seed: int | None = None,
        wrapper_class: type | None = None,
    ) -> None:
        self.scenario = scenario
        self.settings = settings
        self.server = server
        self.proxy = proxy
        self.nemesis = nemesis
        self.seed = seed
        self.rng = random.Random(seed)
        self.alias = f"chaos-{scenario.name}-{uuid.uuid4().hex[:6]}"
        self.application_name = self.alias[:63]
        self.stop = threading.Event()
        self.ledger = Ledger()
        self.ledger_table = getattr(scenario.workload, "ledger_table", None) or LedgerTable()
        self.metrics: dict[str, Any] = {}
        self.notes: list[str] = []
        self.t0 = time.monotonic()
        self._ops: list[Op] = []
        self._ops_lock = threading.Lock()
        self._local = threading.local()
        self._wrappers: list[Any] = []
        self._wrappers_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        if wrapper_class is None:
            from plain_pool import DatabaseWrapper

            wrapper_class = DatabaseWrapper
        self.wrapper_class = wrapper_class

    # -- the database ------------------------------------------------------------------
    def db(self) -> Any:
        """This thread's DatabaseWrapper (they share one pool per alias)."""
        wrapper = getattr(self._local, "db", None)
        if wrapper is None:
            wrapper = self.wrapper_class(self.settings, alias=self.alias)
            self._local.db = wrapper
            with self._wrappers_lock:
                self._wrappers.append(wrapper)
        return wrapper

    def admin(self) -> psycopg.Connection:
        """A direct autocommit superuser connection to the server (never through the proxy)."""
        return self.server.connect()

    def pool_stats(self) -> dict[str, Any]:
        try:
            return dict(self.db().pool_stats() or {})
        except Exception:
            return {}

    # -- recording ---------------------------------------------------------------------
    @contextlib.contextmanager
    def op(self, kind: str, worker: int = -1) -> Iterator[OpHandle]:
        """Record one operation; an exception is recorded and swallowed (callers retry)."""
        op = Op(worker=worker, kind=kind, started=time.monotonic())
        handle = OpHandle(op)
        try:
            yield handle
        except Exception as exc:
            op.ended = time.monotonic()
            op.error_type = type(exc).__name__
            op.error = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        else:
            op.ended = time.monotonic()
            op.ok = True
        with self._ops_lock:
            self._ops.append(op)

    def add_op(self, op: Op) -> None:
        """Record an operation done elsewhere (e.g. in a child process)."""
        with self._ops_lock:
            self._ops.append(op)

    @property
    def ops(self) -> list[Op]:
        with self._ops_lock:
            return list(self._ops)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True when the scenario is stopping."""
        return self.stop.wait(seconds)

    def run_threads(
        self, body: Callable[[ScenarioContext, int], None], n: int | None = None
    ) -> None:
        """Run ``body(ctx, worker)`` in a loop on ``n`` threads until stopped; then return."""
        n = n or self.scenario.threads

        def loop(worker: int) -> None:
            try:
                while not self.stop.is_set():
                    body(self, worker)
            finally:
                with contextlib.suppress(Exception):
                    self.db().close()

        threads = [
            threading.Thread(target=loop, args=(i,), name=f"{self.alias}-w{i}", daemon=True)
            for i in range(n)
        ]
        self._threads.extend(threads)
        for thread in threads:
            thread.start()
        self.stop.wait()
        deadline = time.monotonic() + WATCHDOG_S  # one watchdog for all, not WATCHDOG_S each
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        for wrapper in self._wrappers:
            with contextlib.suppress(Exception):
                wrapper.close()
        if self._wrappers:
            with contextlib.suppress(Exception):
                self._wrappers[0].close_pool()


@dataclass(repr=False)
class ScenarioResult:
    """Everything the report needs; ``as_dict()`` is JSON-friendly (and free of secrets)."""

    name: str
    faults: str
    verdict: str
    violations: list[str]
    windows: list[FaultWindow]
    ops: list[Op]
    t0: float
    duration_s: float
    seed: int | None
    seeded: bool
    ledger: LedgerVerdict | None
    sessions: str | None
    notes: list[str]
    metrics: dict[str, Any]
    hung_threads: int = 0
    ports: list[int] = field(default_factory=list)
    fault_journal: str = ""
    #: Passwords of the settings the scenario ran with: masked in everything printed.
    secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        # Short on purpose: pytest prints it in assertion explanations.
        return f"<ScenarioResult {self.name} {self.verdict}>"

    @property
    def errors(self) -> list[Op]:
        return [o for o in self.ops if not o.ok]

    @property
    def recovery_s(self) -> float | None:
        values = [w.recovery_s for w in self.windows if w.recovery_s is not None]
        return max(values) if values else None

    def as_dict(self) -> dict[str, Any]:
        kinds = Counter(o.error_type for o in self.errors)
        ops = self.ops
        if len(ops) > 4000:  # keep reports small: every error, a sample of successes
            oks = [o for o in ops if o.ok]
            step = max(1, len(oks) // 3000)
            ops = sorted([*oks[::step], *self.errors], key=lambda o: o.started)
        events = []
        for w in self.windows:
            t = w.applied_at - self.t0
            accepting = w.detail.get("accepting_again_at")
            end = (w.ended_at - self.t0) if w.ended_at and w.step.hold else None
            events.append({"t": round(t, 4), "kind": "fault", "label": w.step.fault, "end": end})
            if accepting:
                events.append(
                    {"t": round(accepting - self.t0, 4), "kind": "accepting", "label": "accepting"}
                )
            elif w.ended_at and w.step.hold:
                events.append(
                    {"t": round(w.ended_at - self.t0, 4), "kind": "heal", "label": "healed"}
                )
        return redact_data(self._as_dict(ops, kinds, events), self.secrets)

    def _as_dict(self, ops: list[Op], kinds: Counter, events: list[dict]) -> dict[str, Any]:
        return {
            "name": self.name,
            "faults": self.faults,
            "verdict": self.verdict,
            "violations": self.violations,
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 4),
            "recoveries_s": [
                None if w.recovery_s is None else round(w.recovery_s, 4) for w in self.windows
            ],
            "errors_seen": len(self.errors),
            "error_kinds": dict(kinds),
            "ops": len(self.ops),
            "ok_ops": sum(o.ok for o in self.ops),
            "duration_s": round(self.duration_s, 3),
            "seed": self.seed,
            "seeded": self.seeded,
            "ledger": self.ledger.summary() if self.ledger else None,
            "sessions": self.sessions,
            "notes": self.notes,
            "metrics": self.metrics,
            "hung_threads": self.hung_threads,
            "ports": self.ports,
            "fault_journal": self.fault_journal,
            "timeline": {
                "events": events,
                "ops": [
                    [
                        round(o.started - self.t0, 4),
                        round(o.ended - self.t0, 4),
                        int(o.ok),
                        o.worker,
                    ]
                    for o in ops
                ],
            },
        }

    def explain(self) -> str:
        seed = f", seed {self.seed}" if self.seeded else ""
        lines = [f"scenario {self.name}: {self.verdict.upper()} (faults: {self.faults}{seed})"]
        lines += [f"  - {v}" for v in self.violations]
        if self.ledger:
            lines.append(f"  {self.ledger.summary()}")
        if self.sessions:
            lines.append(f"  {self.sessions}")
        lines += [f"  note: {n}" for n in self.notes]
        errors = Counter(f"{o.error_type}: {o.error}" for o in self.errors)
        lines += [f"  error x{n}: {e}" for e, n in errors.most_common(5)]
        if self.fault_journal:
            lines.append("  fault journal:\n" + self.fault_journal)
        return redact("\n".join(lines), self.secrets)


class ScenarioRunner:
    """Builds the context from the fixtures a scenario needs, runs it, judges it."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        server: Any,
        proxy: Any = None,
        nemesis: Any = None,
        db_settings: dict[str, Any],
        seed: int | None = None,
    ) -> None:
        self.scenario = scenario
        self.server = server
        self.proxy = proxy
        self.nemesis = nemesis
        self.db_settings = db_settings
        self.seed = seed
        if scenario.seeded and seed is None:
            self.seed = random.SystemRandom().randrange(1, 2**31)

    @classmethod
    def from_request(cls, request: Any, scenario: Scenario, *, seed: int | None = None):
        """Resolve ``scenario.needs`` into fixtures (private server, proxy, nemesis)."""
        from chaos.faults import SERVER_FAULTS_NEED_PERMISSION, Nemesis

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
        host, port = (server.host, server.port)
        if proxy is not None:
            from chaos.faults import proxy_address

            host, port = proxy_address(proxy)
        return cls(
            scenario,
            server=server,
            proxy=proxy,
            nemesis=nemesis,
            db_settings=build_settings(scenario, server, host, port),
            seed=seed,
        )

    # -- running ---------------------------------------------------------------------------
    def run(self) -> ScenarioResult:
        scenario = self.scenario
        wrapper_class = None
        if scenario.variant:
            from chaos.targets.variants import VARIANTS

            wrapper_class = VARIANTS[scenario.variant]
        settings = dict(self.db_settings)
        ctx = ScenarioContext(
            scenario,
            settings=settings,
            server=self.server,
            proxy=self.proxy,
            nemesis=self.nemesis,
            seed=self.seed,
            wrapper_class=wrapper_class,
        )
        settings["POSTGRES_OPTIONS"] = {
            **settings.get("POSTGRES_OPTIONS", {}),
            "application_name": ctx.application_name,
        }
        if scenario.expect.ledger:
            with ctx.admin() as admin:
                ctx.ledger_table.create(admin)
        schedule = scenario.schedule(self.seed)
        windows: list[FaultWindow] = []
        violations: list[str] = []
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
        ctx.t0 = time.monotonic()
        if self.nemesis is not None:
            self.nemesis.schedule.t0 = ctx.t0
        thread = threading.Thread(target=workload, name=f"{ctx.alias}-workload", daemon=True)
        thread.start()
        probes: list[threading.Thread] = []
        try:
            pending_heals: list[tuple[float, FaultWindow, Any]] = []
            for step in sorted(schedule, key=lambda s: s.at):
                self._wait_until(ctx, step.at, pending_heals, probes)
                window, handle = self._apply(ctx, step)
                windows.append(window)
                if handle is not None and step.hold is not None:
                    pending_heals.append((step.at + step.hold, window, handle))
                elif window.ended_at is not None:
                    probes.append(self._probe(ctx, window))
            self._wait_until(ctx, scenario.duration, pending_heals, probes)
            for _, window, handle in pending_heals:
                self._heal(ctx, window, handle, probes)
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
        hung = [t for t in ctx._threads if t.is_alive()] + ([thread] if thread.is_alive() else [])
        # the pool's own view (checks failed, resets failed, connections lost...) for the checks
        ctx.metrics["pool"] = {
            k: v for k, v in ctx.pool_stats().items() if k in POOL_COUNTERS and v
        }
        end = time.monotonic()
        if heal_error:
            violations.append(heal_error)
        if crash:
            violations.append("workload raised:\n" + crash[0])
        if hung:
            ctx.metrics["hung_threads"] = len(hung)
        ledger_verdict, sessions = self._post_checks(ctx, violations)
        result = ScenarioResult(
            name=scenario.name,
            faults=scenario.describe_faults(self.seed),
            verdict="pass",
            violations=violations,
            windows=windows,
            ops=ctx.ops,
            t0=ctx.t0,
            duration_s=end - ctx.t0,
            seed=self.seed,
            seeded=scenario.seeded,
            ledger=ledger_verdict,
            sessions=sessions,
            notes=ctx.notes,
            metrics=ctx.metrics,
            hung_threads=len(hung),
            # the leftovers check: only a server the harness owns must be gone at the end
            ports=[
                p
                for p in (getattr(self.server, "port", None),)
                if p and getattr(self.server, "mode", "owned") == "owned"
            ],
            fault_journal=self.nemesis.schedule.format() if self.nemesis else "",
            secrets=tuple(secrets_of(self.db_settings)),
        )
        ctx.close()
        judge(result, scenario, self.pool_max_size())
        return result

    def pool_max_size(self) -> int:
        pool = self.db_settings.get("POSTGRES_POOL")
        if isinstance(pool, dict):
            return int(pool.get("max_size", pool.get("min_size", 4)))
        return 4

    def _wait_until(self, ctx, offset, pending_heals, probes) -> None:
        while True:
            now = time.monotonic() - ctx.t0
            due = [h for h in pending_heals if h[0] <= now]
            for item in due:
                pending_heals.remove(item)
                self._heal(ctx, item[1], item[2], probes)
            if now >= offset:
                return
            nxt = min([offset, *[h[0] for h in pending_heals]])
            time.sleep(max(0.0, min(nxt - now, 0.05)))

    def _apply(self, ctx: ScenarioContext, step: FaultStep) -> tuple[FaultWindow, Any]:
        from chaos.faults import make

        applied_at = time.monotonic()
        window = FaultWindow(step, applied_at)
        try:
            fault = make(step.fault, **step.params)
            handle = self.nemesis.apply(fault)
        except Exception as exc:
            window.error = f"{step.describe()} could not be applied: {type(exc).__name__}: {exc}"
            window.ended_at = time.monotonic()
            return window, None
        window.applied_at = handle.applied_at
        window.detail = dict(handle.detail)
        if not handle.active:  # instantaneous: over when apply returned
            window.ended_at = window.detail.get("accepting_again_at") or time.monotonic()
            return window, None
        return window, handle

    def _heal(self, ctx, window: FaultWindow, handle: Any, probes: list) -> None:
        try:
            handle.heal()
        except Exception as exc:
            window.error = f"heal of {window.step.describe()} failed: {exc}"
        detail = getattr(handle, "detail", {}) or {}
        window.ended_at = detail.get("accepting_again_at") or time.monotonic()
        window.detail.update(detail)
        probes.append(self._probe(ctx, window))

    def _probe(self, ctx: ScenarioContext, window: FaultWindow) -> threading.Thread:
        """Query through the pool until it works: the first success after the fault ended."""

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
                if op.op.ok:
                    return
                time.sleep(0.005)

        thread = threading.Thread(target=probe, name=f"{ctx.alias}-probe", daemon=True)
        thread.start()
        return thread

    def _post_checks(
        self, ctx: ScenarioContext, violations: list[str]
    ) -> tuple[LedgerVerdict | None, str | None]:
        expect = self.scenario.expect
        verdict = sessions = None
        try:
            with ctx.admin() as admin:
                if expect.ledger:
                    verdict = ctx.ledger_table.verify(admin, ctx.ledger)
                    if not verdict.ok:
                        violations.extend(verdict.problems())
                if expect.sessions:
                    stats = ctx.pool_stats()
                    holds = int(stats.get("pool_size", 0))
                    # give returned connections a moment to be closed by the pool's workers
                    deadline = time.monotonic() + 3.0
                    while True:
                        n = LedgerTable.count_sessions(admin, ctx.application_name)
                        if n <= holds or time.monotonic() > deadline:
                            break
                        time.sleep(0.1)
                        holds = int(ctx.pool_stats().get("pool_size", holds))
                    session_verdict = check_sessions(ctx.application_name, n, holds)
                    sessions = session_verdict.summary()
                    if not session_verdict.ok:
                        violations.append(sessions)
        except Exception as exc:
            violations.append(f"post-checks failed: {type(exc).__name__}: {exc}")
        return verdict, sessions


def server_kwargs(scenario: Scenario) -> dict[str, Any]:
    """A private server's settings: the scenario's, over the harness's crash-safe
    defaults (chaos.postgres.BASE_SETTINGS keeps synchronous_commit on)."""
    return {"settings": dict(scenario.server_settings)}


def build_settings(scenario: Scenario, server: Any, host: str, port: int) -> dict[str, Any]:
    """plain_pool settings for a scenario: chaos-safe connect options, its pool and overrides."""
    from chaos.faults import CHAOS_TIMEOUTS

    pool = {"min_size": 4, "max_size": 4, "timeout": 10.0, **scenario.pool}
    settings: dict[str, Any] = {
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": int(port),
        "POSTGRES_DATABASE": getattr(server, "dbname", "postgres"),
        "POSTGRES_USER": getattr(server, "superuser", "postgres"),
        "POSTGRES_PASSWORD": "",
        "POSTGRES_OPTIONS": CHAOS_TIMEOUTS.connect_kwargs(),
        "POSTGRES_POOL": pool,
        "POSTGRES_CONN_HEALTH_CHECKS": True,
    }
    overrides = dict(scenario.settings)
    options = overrides.pop("POSTGRES_OPTIONS", None)
    if options is not None:
        merged = {**settings["POSTGRES_OPTIONS"], **options}
        settings["POSTGRES_OPTIONS"] = {k: v for k, v in merged.items() if v is not None}
    settings.update(overrides)
    return settings


# -- the verdict ---------------------------------------------------------------------------


def judge(result: ScenarioResult, scenario: Scenario, pool_max_size: int) -> None:
    """Turn the expectations into violations; sets ``result.verdict``."""
    expect = scenario.expect
    violations = result.violations
    for window in result.windows:
        if window.error:
            violations.append(window.error)
        if window.ended_at is not None:
            oks = [o.ended for o in result.ops if o.ok and o.ended >= window.ended_at]
            window.recovery_s = (min(oks) - window.ended_at) if oks else None
            if window.recovery_s is None:
                violations.append(f"never recovered after {window.step.describe()}")
    if expect.max_recovery_s is not None:
        for window in result.windows:
            if window.recovery_s is not None and window.recovery_s > expect.max_recovery_s:
                violations.append(
                    f"recovery after {window.step.describe()} took "
                    f"{window.recovery_s * 1000:.0f} ms > {expect.max_recovery_s * 1000:.0f} ms"
                )
    in_flight, other = classify_errors(result)
    if expect.caller_errors == "none" and result.errors:
        violations.append(f"{len(result.errors)} caller error(s), none allowed: {_top(result)}")
    elif expect.caller_errors == "in_flight" and other:
        violations.append(
            f"{len(other)} caller error(s) not in flight at a fault (e.g. "
            f"{_describe_op(result, other[0])})"
        )
    elif expect.caller_errors == "per_connection":
        allowed = pool_max_size * max(1, len(result.windows))
        if len(other) > allowed:
            violations.append(
                f"{len(other)} caller errors beyond those in flight; at most one per pooled "
                f"connection ({allowed}) allowed"
            )
    if expect.max_errors is not None and len(result.errors) > expect.max_errors:
        violations.append(f"{len(result.errors)} caller errors > {expect.max_errors} allowed")
    ok_ops = sum(o.ok for o in result.ops)
    if ok_ops < expect.min_ok:
        violations.append(f"only {ok_ops} successful operation(s), expected {expect.min_ok}+")
    for extra in expect.extra:
        try:
            violations.extend(extra(result))
        except Exception as exc:
            violations.append(f"check {getattr(extra, '__name__', extra)} raised {exc!r}")
    result.metrics["errors_in_flight"] = len(in_flight)
    result.metrics["errors_other"] = len(other)
    result.verdict = "fail" if violations else "pass"


def classify_errors(result: ScenarioResult) -> tuple[list[Op], list[Op]]:
    """Split caller errors into (in flight at a fault, everything else).

    In flight: the operation checked its connection out before a fault ended
    and failed after that fault began; at most one per worker per fault.
    """
    in_flight: list[Op] = []
    other: list[Op] = []
    used: set[tuple[int, int]] = set()
    for op in sorted(result.errors, key=lambda o: o.ended):
        matched = False
        for i, w in enumerate(result.windows):
            end = w.ended_at if w.ended_at is not None else float("inf")
            if (
                op.checked_out is not None
                and op.checked_out < end
                and op.ended >= w.applied_at
                and (i, op.worker) not in used
            ):
                used.add((i, op.worker))
                matched = True
                break
        (in_flight if matched else other).append(op)
    return in_flight, other


def _describe_op(result: ScenarioResult, op: Op) -> str:
    held = (
        "no connection"
        if op.checked_out is None
        else f"checked out t={op.checked_out - result.t0:.3f}s"
    )
    return (
        f"{op.kind} by worker {op.worker} t={op.started - result.t0:.3f}.."
        f"{op.ended - result.t0:.3f}s ({held}): {op.error_type}: {op.error}"
    )


def _top(result: ScenarioResult) -> str:
    kinds = Counter(f"{o.error_type}" for o in result.errors)
    return ", ".join(f"{k} x{n}" for k, n in kinds.most_common(3))
