"""What a workload sees: the target's per-thread client, the history, the ledger, the stop flag.

A workload is ``fn(ctx)`` running until ``ctx.stop`` is set; a request body does
one unit of work through ``db = ctx.db()`` (this thread's
:class:`chaos.targets.base.Client` of the target under test:
``db.ensure_connection()``, ``db.cursor()``, ``db.atomic()``, ``db.close()``) and
records it with ``with ctx.op(kind, worker) as op: ...`` (``op.checked_out()``
once a connection is held). Nothing here knows which system the target is.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from chaos.ledger import Ledger, LedgerTable
from chaos.scenarios._history import History, Op, OpHandle
from chaos.scenarios._registry import Scenario
from chaos.targets.base import Client, Target, TargetOptions

#: How long the workload may take to notice ``stop`` before it counts as hung.
WATCHDOG_S = 8.0


class ScenarioContext:
    """The target, the history, the ledger, the stop flag; ``metrics``/``notes`` for the report."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        target: Target,
        server: Any,
        options: TargetOptions,
        host: str = "",
        port: int = 0,
        proxy: Any = None,
        nemesis: Any = None,
        seed: int | None = None,
        settings: Mapping[str, Any] | None = None,
        target_name: str = "",
    ) -> None:
        self.scenario = scenario
        self.target = target
        self.target_name = target_name
        self.options = options
        self.server = server
        self.host, self.port = host, port
        self.proxy = proxy
        self.nemesis = nemesis
        self.seed = seed
        #: The scenario's own ``settings`` mapping, as registered (plain_pool-shaped).
        self.settings: dict[str, Any] = dict(settings or {})
        self.rng = random.Random(seed)
        self.alias = f"chaos-{scenario.name}-{uuid.uuid4().hex[:6]}"
        #: The target's sessions in pg_stat_activity (the sessions-left check counts them).
        self.application_name = target.application_name or self.alias[:63]
        self.stop = threading.Event()
        self.history = History()
        self.ledger = Ledger()
        self.ledger_table = getattr(scenario.workload, "ledger_table", None) or LedgerTable()
        self.metrics: dict[str, Any] = {}
        self.notes: list[str] = []
        self.t0 = time.monotonic()
        self.threads: list[threading.Thread] = []

    # -- the database ------------------------------------------------------------------
    def db(self) -> Client:
        """This thread's client of the target under test (one per thread, kept)."""
        return self.target.thread_client()

    def admin(self) -> psycopg.Connection:
        """A direct autocommit superuser connection to the server (never through the proxy)."""
        return self.server.connect()

    def pool_stats(self) -> dict[str, Any]:
        """The target's pool counters ({} if it cannot tell)."""
        try:
            return dict(self.target.pool_counters() or {})
        except Exception:
            return {}

    # -- recording ---------------------------------------------------------------------
    def op(self, kind: str, worker: int = -1) -> contextlib.AbstractContextManager[OpHandle]:
        """Record one operation; an exception is recorded and swallowed (callers retry)."""
        return self.history.op(kind, worker)

    def add_op(self, op: Op) -> None:
        """Record an operation done elsewhere (e.g. in a child process)."""
        self.history.add(op)

    @property
    def ops(self) -> tuple[Op, ...]:
        return self.history.view()

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
        self.threads.extend(threads)
        for thread in threads:
            thread.start()
        self.stop.wait()
        deadline = time.monotonic() + WATCHDOG_S  # one watchdog for all, not WATCHDOG_S each
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Close the target: every thread's client, its pools and connections."""
        self.target.close()
