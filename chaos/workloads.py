"""Workloads for scenarios: what callers do while faults happen.

A workload is ``fn(ctx)`` that runs until ``ctx.stop`` is set; most run one
*request body* on several threads with ``ctx.run_threads(body)``. A request
body does one unit of work the way an application would (check out, query,
return) through ``db = ctx.db()``, the target's client for this thread
(:class:`chaos.targets.base.Client`: ``ensure_connection()``, ``cursor()``,
``atomic()``, ``set_autocommit()``, ``close()``), so the same body runs on every
target; it records the work with ``ctx.op`` so the runner can judge errors and
recovery. Ledger writes go through :func:`chaos.ledger.recorded_write`.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from chaos.ledger import LedgerTable, recorded_write

if TYPE_CHECKING:  # pragma: no cover
    from chaos.scenarios._context import ScenarioContext

#: Pause between one worker's requests: keeps a 2-core machine responsive.
PACE_S = 0.002
#: The client-side deadline of :func:`select_with_deadline` (what an application sets).
QUERY_DEADLINE_S = 0.5
#: The query :func:`held_session` repeats on the connection it holds.
SESSION_QUERY = "SELECT pg_sleep(0.02)"


def select_one(ctx: ScenarioContext, worker: int) -> None:
    """One request: check out, ``SELECT 1``, return the connection."""
    with ctx.op("select", worker) as op:
        db = ctx.db()
        try:
            db.ensure_connection()
            op.checked_out()
            with db.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
        finally:
            db.close()
    ctx.sleep(PACE_S)


def select_with_deadline(ctx: ScenarioContext, worker: int) -> None:
    """:func:`select_one` with a client-side query deadline (:data:`QUERY_DEADLINE_S`).

    Nothing else bounds a query on a half-open link; past the deadline the
    socket is shut down, the query fails and the connection is discarded.
    """
    from chaos.faults import query_deadline

    with ctx.op("select", worker) as op:
        db = ctx.db()
        try:
            conn = db.ensure_connection()
            op.checked_out()
            with query_deadline(conn, QUERY_DEADLINE_S), db.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
        finally:
            db.close()
    ctx.sleep(PACE_S)


def held_session(ctx: ScenarioContext, worker: int) -> None:
    """Hold one connection and query it until stopped or a query fails; each query is one op.

    A fault then always finds every worker holding a connection (a query in
    flight, or the next one about to be sent on it), whatever the timing (a
    session of fixed length could end right at the fault and miss it).
    Returning the connection is recorded as its own ``return`` op.
    """
    db = ctx.db()
    with ctx.op("checkout", worker) as op:
        db.ensure_connection()
    if not op.op.ok:
        ctx.sleep(PACE_S)
        return
    held_at = op.op.ended
    try:
        while not ctx.stop.is_set():
            with ctx.op("query", worker) as op:
                op.checked_out(at=held_at)
                with db.cursor() as cur:
                    cur.execute(SESSION_QUERY)
            if not op.op.ok:
                break
    finally:
        with ctx.op("return", worker) as op:
            op.checked_out(at=held_at)
            db.close()
    ctx.sleep(PACE_S)


def ledger_write(ctx: ScenarioContext, worker: int, *, statements: int = 1) -> None:
    """One request writing a unique id in a transaction; the ledger records the outcome."""
    with ctx.op("write", worker) as op:
        db = ctx.db()
        try:
            with recorded_write(ctx.ledger, worker=str(worker)) as mark:
                db.ensure_connection()
                op.checked_out()
                with db.atomic(), db.cursor() as cur:
                    for _ in range(statements - 1):
                        cur.execute("SELECT pg_backend_pid()")
                    cur.execute(ctx.ledger_table.insert_sql(), (mark.write_id,))
                    mark("commit")  # leaving atomic() sends COMMIT
        finally:
            with contextlib.suppress(Exception):
                db.close()
    ctx.sleep(PACE_S)


def abandoned_write(ctx: ScenarioContext, worker: int) -> None:
    """A request that writes in a transaction, then fails and abandons it (recorded ``fail``).

    The connection goes back to the pool still inside the transaction: the
    pool must roll it back. A backend that commits it instead makes the
    abandoned write a phantom commit, which the ledger reports.
    """
    with ctx.op("abandon", worker) as op:
        db = ctx.db()
        try:
            with recorded_write(ctx.ledger, worker=str(worker)) as mark:
                db.ensure_connection()
                op.checked_out()
                db.set_autocommit(False)
                with db.cursor() as cur:
                    cur.execute(ctx.ledger_table.insert_sql(), (mark.write_id,))
                raise RuntimeError("the request failed before COMMIT")
        finally:
            with contextlib.suppress(Exception):
                db.close()
    ctx.sleep(PACE_S)


def abandon_and_write(ctx: ScenarioContext, worker: int) -> None:
    """Abandoned transactions interleaved with ordinary ledger writes."""
    if ctx.rng.random() < 0.5:
        abandoned_write(ctx, worker)
    else:
        ledger_write(ctx, worker)


def mixed(ctx: ScenarioContext, worker: int) -> None:
    """Reads and writes, 1 : 1, chosen deterministically from the worker's sequence."""
    if ctx.rng.random() < 0.5:
        select_one(ctx, worker)
    else:
        ledger_write(ctx, worker, statements=ctx.rng.randint(1, 3))


def backend_pid(ctx: ScenarioContext, worker: int) -> None:
    """A request that records which server session served it (for max_lifetime)."""
    with ctx.op("pid", worker) as op:
        db = ctx.db()
        try:
            db.ensure_connection()
            held_at = time.monotonic()
            op.checked_out(at=held_at)
            with db.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                pid = cur.fetchone()[0]
            ctx.metrics.setdefault("pids", {}).setdefault(str(pid), []).append(held_at - ctx.t0)
        finally:
            db.close()
    ctx.sleep(0.01)


# -- whole workloads (fn(ctx)) ---------------------------------------------------------------


def idle(ctx: ScenarioContext) -> None:
    """Nobody uses the pool; the runner's recovery probe is the first caller after a fault."""
    ctx.stop.wait()


def under_load(ctx: ScenarioContext) -> None:
    ctx.run_threads(select_one)


def under_load_with_deadlines(ctx: ScenarioContext) -> None:
    ctx.run_threads(select_with_deadline)


def held_sessions(ctx: ScenarioContext) -> None:
    ctx.run_threads(held_session)


def writes(ctx: ScenarioContext) -> None:
    ctx.run_threads(ledger_write)


def mixed_load(ctx: ScenarioContext) -> None:
    ctx.run_threads(mixed)


def lifetime_load(ctx: ScenarioContext) -> None:
    ctx.run_threads(backend_pid)


def slow_commit_writes(ctx: ScenarioContext) -> None:
    """Ledger writes whose COMMIT takes 20 ms (a deferred trigger), so resets hit COMMIT."""
    ctx.run_threads(ledger_write)


slow_commit_writes.ledger_table = LedgerTable("chaos_ledger_slow", commit_delay_ms=20)  # type: ignore[attr-defined]


def abandoning(ctx: ScenarioContext) -> None:
    ctx.run_threads(abandon_and_write)
