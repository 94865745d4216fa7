"""Fault rows: target-agnostic probes through the Target API and the fault controls.

Each probe builds the target with the options it needs, drives it only with
:class:`~chaos.targets.base.TargetRequest` calls (checkout, run, give_back,
finish), applies one fault with the :class:`~chaos.faults.Nemesis` (server
faults on a server of the cell's own, network faults on the proxy in front
of the shared server) and measures what a caller sees: errors (by root
cause: Django and SQLAlchemy wrap psycopg's) and times. Its steps are logged;
a failing cell shows them as its program.

Tolerances (honest, not tuned to pass): the recovery budget is the reference's
contract (:data:`chaos.scenarios.restart.RECOVERY_S`, 0.5 s: measured 9-48 ms,
bare psycopg_pool's reconnect backoff takes seconds); a checkout under a
blocking fault must end within its pool timeout + :data:`TIMEOUT_SLACK_S`
(the timeouts scenario allows 0.5 s on one worker; the matrix runs two).

A server fault lands on a settled pooler: before it, a target with a PgBouncer
waits until no query and no server login is in flight there
(:func:`settle_pooler`), the same for every PgBouncer column.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from chaos.faults.base import Fault
from chaos.faults.connect import CHAOS_TIMEOUTS, proxy_address
from chaos.faults.nemesis import Nemesis
from chaos.faults.network import Down, HalfOpen
from chaos.faults.outcomes import Outcome as Told
from chaos.faults.server import Crash, RestartFast
from chaos.ledger import Ledger, LedgerTable, recorded_write
from chaos.matrix.cell import Outcome
from chaos.scenarios.restart import RECOVERY_S
from chaos.targets.base import StepTimeout, Target, TargetOptions, TargetRequest

#: A checkout under a blocking fault: its pool timeout + this, or it hung.
TIMEOUT_SLACK_S = 1.0
#: How long a probe waits for a blocked call before it calls it a hang (then heals).
HANG_AFTER_S = 8.0
#: A step with no fault active.
STEP_S = 20.0
#: The recovery probes' pool timeout: long enough that a reconnect backoff shows as
#: time to first success, not as PoolTimeout errors.
RECOVERY_POOL_TIMEOUT_S = 10.0
#: Give up waiting for a first success after the server is up again.
RECOVERY_GIVE_UP_S = 25.0
#: Requests beyond the bound in the too-many-connections probe.
EXTRA_REQUESTS = 2
#: How long a probe waits for a target's PgBouncer to finish what the warm-up sent.
POOLER_SETTLE_S = 2.0


@dataclass
class ProbeContext:
    """What a probe may use: the target factory, the server, the fault controls."""

    make: Callable[[TargetOptions], Target]
    server: Any
    nemesis: Any = None
    #: ``proxy_to(host, port)`` -> a new fault proxy in front of that address (client-hop rows).
    proxy_to: Callable[[str, int], Any] | None = None
    steps: list[str] = field(default_factory=list)

    def step(self, text: str) -> None:
        self.steps.append(text)

    def admin(self) -> psycopg.Connection:
        return self.server.connect()

    def program(self) -> str:
        return "\n".join(f"{n}. {s}" for n, s in enumerate(self.steps, 1))


def root_cause(exc: BaseException) -> BaseException:
    """The psycopg / psycopg_pool error under a framework's wrapper (or ``exc`` itself)."""
    from chaos.faults import outcomes

    shared = getattr(outcomes, "root_cause", None)
    if shared is not None:
        return shared(exc)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, psycopg.Error):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return exc


def is_pool_timeout(exc: BaseException) -> bool:
    """psycopg_pool's PoolTimeout, SQLAlchemy's QueuePool TimeoutError, ... (by root cause)."""
    from chaos.faults import outcomes

    shared = getattr(outcomes, "is_pool_timeout", None)
    if shared is not None:
        return bool(shared(exc))
    return type(root_cause(exc)).__name__ == "PoolTimeout"


def label(exc: BaseException) -> str:
    """``PoolTimeout`` / ``OperationalError`` / ``TooManyConnections (53300)``; a pool's
    own timeout is labelled ``pool timeout (<its class>)``."""
    root = root_cause(exc)
    if is_pool_timeout(exc):
        return f"pool timeout ({type(root).__name__})"
    sqlstate = getattr(root, "sqlstate", None)
    return f"{type(root).__name__} ({sqlstate})" if sqlstate else type(root).__name__


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _release(requests: list[TargetRequest]) -> None:
    for request in requests:
        with contextlib.suppress(Exception):
            request.settle(2.0)
        with contextlib.suppress(Exception):
            request.finish(5.0)


def _query(request: TargetRequest, bound: float) -> None:
    """Check out, SELECT 1, give back: one caller's round."""
    request.checkout(bound)
    request.run(lambda s: s.execute("SELECT 1", prepare=False), bound)
    request.give_back(bound)


def _warm(ctx: ProbeContext, target: Target, n: int) -> list[TargetRequest]:
    """``n`` requests each check out (holding together), then give back: n pooled sessions."""
    requests = [target.open_request(number) for number in range(1, n + 1)]
    for request in requests:
        request.checkout(STEP_S)
    for request in requests:
        request.give_back(STEP_S)
    ctx.step(f"{n} requests check out together, then give back ({n} pooled connections)")
    return requests


def settle_pooler(ctx: ProbeContext, target: Target) -> None:
    """Before a server fault: wait (at most :data:`POOLER_SETTLE_S`) until the target's
    PgBouncer, if it has one, has no client waiting, no server connection linked and
    none logging in (``SHOW POOLS``: ``cl_waiting``, ``sv_active``, ``sv_login`` all 0).

    Why: a server login PgBouncer starts in the milliseconds before a restart fails
    (the backend dies in its startup: "server conn crashed?" or "login failed" in
    PgBouncer's log), and PgBouncer then refuses every new client ("server login has
    been failing, try again later") until ``server_login_retry`` (15 s) after that login
    (evidence/pgbouncer/restart_login_retry.py). plain_pool's give-back leaves its
    ``DISCARD ALL`` in flight: behind PgBouncer the second of the warm-up's two resets
    made it open a second server connection at the restart's instant in about a third
    of the runs, and the cell flipped. The contract's pool is idle; this makes it idle
    at the pooler too. The admin console's own login takes several round trips, so a
    query sent before the call is already in PgBouncer's counts.
    """
    bouncer = getattr(target, "bouncer", None)
    if bouncer is None:
        return
    started = time.monotonic()
    while True:
        pools = [p for p in bouncer.show("pools") if p["database"] != "pgbouncer"]
        busy = {k: sum(int(p[k]) for p in pools) for k in ("cl_waiting", "sv_active", "sv_login")}
        waited = time.monotonic() - started
        if not any(busy.values()) or waited > POOLER_SETTLE_S:
            break
        time.sleep(0.005)
    state = "settled" if not any(busy.values()) else f"NOT settled {busy}"
    ctx.step(f"PgBouncer {state} after {_ms(waited)} ms (no query, no server login in flight)")


# -- restart / crash: caller errors and time to first success ------------------------------
def recovery(ctx: ProbeContext, fault: Fault) -> Outcome:
    target = ctx.make(
        TargetOptions(min_size=2, max_size=2, timeout=RECOVERY_POOL_TIMEOUT_S, health_checks=True)
    )
    requests: list[TargetRequest] = []
    try:
        requests = _warm(ctx, target, 2)
        settle_pooler(ctx, target)
        handle = ctx.nemesis.apply(fault)
        up = float(handle.detail.get("accepting_again_at") or time.monotonic())
        downtime = handle.detail.get("downtime_s")
        ctx.step(f"{fault!r}, returning once the server accepts connections again")
        caller = target.open_request(10)
        requests.append(caller)
        errors: list[str] = []
        first: float | None = None
        while time.monotonic() < up + RECOVERY_GIVE_UP_S:
            try:
                _query(caller, RECOVERY_POOL_TIMEOUT_S + 5.0)
            except StepTimeout:
                errors.append("hang")
                break
            except Exception as exc:
                errors.append(label(exc))
                with contextlib.suppress(Exception):
                    caller.give_back(5.0)
                time.sleep(0.01)
                continue
            first = time.monotonic()
            break
        ctx.step(
            f"one caller: check out, SELECT 1, give back, until it works: errors {errors or 0}"
        )
    finally:
        _release(requests)
        with contextlib.suppress(Exception):
            target.close()
    metrics: dict[str, Any] = {
        "caller_errors": len(errors),
        "error_kinds": errors[:6],
        "downtime_s": downtime,
    }
    if first is None:
        return Outcome(
            "fail",
            f"no success within {RECOVERY_GIVE_UP_S:.0f} s of up; caller errors: {errors[:4]}",
            program=ctx.program(),
            metrics=metrics,
        )
    after_ms = _ms(first - up)
    metrics["first_success_ms"] = after_ms
    kinds = f" ({', '.join(sorted(set(errors)))})" if errors else ""
    detail = f"{len(errors)} caller error(s){kinds}, first success {after_ms} ms after up"
    ok = not errors and first - up <= RECOVERY_S
    if ok:
        return Outcome("pass", detail, metrics=metrics)
    budget = f" (contract: 0 errors, <= {_ms(RECOVERY_S)} ms)"
    return Outcome("fail", detail + budget, program=ctx.program(), metrics=metrics)


def restart(ctx: ProbeContext) -> Outcome:
    return recovery(ctx, RestartFast())


def crash(ctx: ProbeContext) -> Outcome:
    return recovery(ctx, Crash())


# -- half-open / outage: a checkout ends within its timeout ---------------------------------
def blocked_checkout(
    ctx: ProbeContext, fault: Fault, *, client_hop: Callable[[str, int], Any] | None = None
) -> Outcome:
    """A caller checks out and runs SELECT 1 while ``fault`` blocks the link: on the
    server hop (``ctx.nemesis``' proxy), or, with ``client_hop``, on a proxy between the
    app and the target's middle hop (PgBouncer), made when the target asks for one."""
    timeout = 1.0
    hops: list[Any] = []
    through = None
    if client_hop is not None:

        def through(host: str, port: int) -> tuple[str, int]:
            hops.append(client_hop(host, port))
            return proxy_address(hops[-1])

    target = ctx.make(TargetOptions(min_size=1, max_size=1, timeout=timeout, client_hop=through))
    requests: list[TargetRequest] = []
    ended: float | None = None
    how = "?"
    nemesis = ctx.nemesis
    try:
        if client_hop is not None:
            if not hops:
                return Outcome("na", "no middle hop: the app talks to Postgres itself")
            nemesis = Nemesis(hops[0], None)
        requests = _warm(ctx, target, 1)
        pooled = target.current_pool_id() is not None
        nemesis.apply(fault)
        caller = target.open_request(10)
        requests.append(caller)
        started = time.monotonic()
        try:
            _query(caller, HANG_AFTER_S)
            how = "succeeded"
        except StepTimeout:
            how = f"still blocked after {HANG_AFTER_S:.0f} s"
        except Exception as exc:
            how = label(exc)
        else:
            pass
        if not how.startswith("still"):
            ended = time.monotonic() - started
        where = " on the client hop" if client_hop is not None else ""
        ctx.step(
            f"{fault!r}{where}; a caller checks out and runs SELECT 1 (pool timeout {timeout} s)"
        )
    finally:
        with contextlib.suppress(Exception):
            nemesis.heal_all()
        _release(requests)
        with contextlib.suppress(Exception):
            target.close()
    metrics: dict[str, Any] = {"ended_ms": None if ended is None else _ms(ended)}
    # A system with no pool connects per request: its caller's bound is connect_timeout.
    own = (
        f"pool timeout {timeout} s"
        if pooled
        else f"no pool: connect_timeout {CHAOS_TIMEOUTS.connect_timeout} s"
    )
    bound = (timeout if pooled else CHAOS_TIMEOUTS.connect_timeout) + TIMEOUT_SLACK_S
    if ended is None:
        detail = f"the caller hung: {how} ({own}); the heal released it"
        return Outcome("fail", detail, program=ctx.program(), metrics=metrics)
    detail = f"ended in {_ms(ended)} ms: {how} ({own}, bound {bound} s)"
    if ended <= bound:
        return Outcome("pass", detail, metrics=metrics)
    return Outcome("fail", detail, program=ctx.program(), metrics=metrics)


def half_open(ctx: ProbeContext) -> Outcome:
    return blocked_checkout(ctx, HalfOpen())


def outage(ctx: ProbeContext) -> Outcome:
    return blocked_checkout(ctx, Down())


def half_open_client_hop(ctx: ProbeContext) -> Outcome:
    """The half-open row on the app -> PgBouncer hop (n/a for a target with no middle hop)."""
    if ctx.proxy_to is None:
        raise ValueError("half_open_client_hop needs ProbeContext.proxy_to (a proxy factory)")
    return blocked_checkout(ctx, HalfOpen(), client_hop=ctx.proxy_to)


# -- too many connections ---------------------------------------------------------------------
_SESSIONS = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE application_name = %s AND backend_type = 'client backend'"
)


def too_many_connections(ctx: ProbeContext) -> Outcome:
    max_size = 2
    target = ctx.make(TargetOptions(min_size=1, max_size=max_size, timeout=0.5))
    name = getattr(target, "application_name", None)
    requests: list[TargetRequest] = []
    errors: list[str] = []
    try:
        if name is None:
            return Outcome("na", "the target does not name its sessions (application_name)")
        for number in range(1, max_size + EXTRA_REQUESTS + 1):
            request = target.open_request(number)
            requests.append(request)
            try:
                request.checkout(STEP_S)
            except Exception as exc:
                errors.append(label(exc))
        pooled = target.current_pool_id() is not None
        ctx.step(
            f"{len(requests)} requests each check out and hold (max_size {max_size}): "
            f"errors {errors or 0}"
        )
        with ctx.admin() as conn:
            sessions = int(conn.execute(_SESSIONS, [name]).fetchone()[0])
        ctx.step(f"pg_stat_activity: {sessions} session(s) with the target's application_name")
    finally:
        _release(requests)
        with contextlib.suppress(Exception):
            target.close()
    metrics = {"sessions": sessions, "bound": max_size, "errors": errors}
    detail = "no pool: a session per request thread; " if not pooled else ""
    detail += (
        f"{sessions} server session(s) for {len(requests)} holding requests (bound {max_size}); "
        f"extra callers got: {', '.join(errors) or 'no error'}"
    )
    refused = [e for e in errors if "53300" in e]
    others = [e for e in errors if not e.startswith("pool timeout")]
    if sessions <= max_size and not refused and not others and len(errors) == EXTRA_REQUESTS:
        return Outcome("pass", detail, metrics=metrics)
    return Outcome("fail", detail, program=ctx.program(), metrics=metrics)


# -- the ledger across a restart -------------------------------------------------------------
def ledger_restart(ctx: ProbeContext) -> Outcome:
    """Writes in explicit transactions before and after a fast restart: every ``ok`` write
    present once, every ``fail`` write absent (:func:`chaos.ledger.check`)."""
    table = LedgerTable("chaos_matrix_ledger")
    with ctx.admin() as conn:
        table.create(conn)
    target = ctx.make(TargetOptions(min_size=2, max_size=2, timeout=RECOVERY_POOL_TIMEOUT_S))
    ledger = Ledger()
    requests: list[TargetRequest] = []
    # Plain text, not a psycopg Composed: every target's execute() takes a string.
    insert = f"INSERT INTO {table.name} (write_id) VALUES (%s)"

    def write(request: TargetRequest) -> None:
        with recorded_write(ledger, worker=f"request-{request.number}") as mark:

            def run(session: Any) -> None:
                session.begin("begin")
                session.execute(insert, [mark.write_id], prepare=False)
                mark("commit")
                session.execute("COMMIT", prepare=False)

            request.checkout(STEP_S)
            try:
                request.run(run, STEP_S)
            finally:
                with contextlib.suppress(Exception):
                    request.give_back(STEP_S)

    try:
        requests = _warm(ctx, target, 2)
        for request in requests:
            for _ in range(3):
                write(request)
        ctx.step("2 requests: 3 writes each (BEGIN; INSERT; COMMIT)")
        settle_pooler(ctx, target)
        ctx.nemesis.apply(RestartFast())
        ctx.step("RestartFast()")
        for request in requests:
            for _ in range(3):
                with contextlib.suppress(Exception):
                    write(request)
        ctx.step("2 requests: 3 writes each, errors recorded as fail / info")
        with ctx.admin() as conn:
            verdict = table.verify(conn, ledger)
    finally:
        _release(requests)
        with contextlib.suppress(Exception):
            target.close()
    counts = {
        Told.OK.value: verdict.oks,
        Told.FAIL.value: verdict.fails,
        Told.INFO.value: verdict.infos,
    }
    metrics = {"ledger": counts}
    if verdict.ok:
        return Outcome("pass", verdict.summary(), metrics=metrics)
    return Outcome("fail", verdict.summary(), program=ctx.program(), metrics=metrics)


PROBES: dict[str, Callable[[ProbeContext], Outcome]] = {
    "restart": restart,
    "crash": crash,
    "half_open": half_open,
    "outage": outage,
    "half_open_client_hop": half_open_client_hop,
    "too_many_connections": too_many_connections,
    "ledger_restart": ledger_restart,
}
