"""The write ledger: proves no write was lost and none committed behind a caller's back.

Workloads write unique ids inside transactions and record, for each id, what the
caller was told (Jepsen's ok / fail / info, :class:`chaos.faults.outcomes.Outcome`):

- ``ok``: COMMIT returned; the write must be in the table exactly once.
- ``fail``: the caller saw an error before COMMIT was sent, or COMMIT was
  definitely refused by the server (the transaction was abandoned); the write
  must be absent. A failed write that is present is a *phantom commit*: some
  later user of the same connection committed a transaction it never started,
  i.e. a connection was handed back still inside someone else's transaction.
- ``info``: the connection broke during COMMIT, so nobody knows; the write
  may be present (once) or absent. Which errors mean that is
  :func:`chaos.faults.outcomes.classify`'s one rule, shared with the state machines.

After the faults are healed, :func:`check` compares the ledger with the rows
read back. It is pure (no database), so it is unit-tested on its own;
:class:`LedgerTable` does the small amount of SQL around it.

The table deliberately has no unique constraint on the id: a duplicate must be
visible to the checker, not turned into an error by the server.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from chaos.faults.outcomes import Outcome, classify

__all__ = [
    "Ledger",
    "LedgerEntry",
    "LedgerTable",
    "LedgerVerdict",
    "SessionVerdict",
    "check",
    "check_sessions",
    "recorded_write",
]


@dataclass(frozen=True)
class LedgerEntry:
    """One attempted write and what its caller was told."""

    write_id: str
    outcome: Outcome
    started: float = 0.0
    ended: float = 0.0
    worker: str = ""
    error: str | None = None


@dataclass
class Ledger:
    """A thread-safe record of attempted writes.

    Ids are unique across processes and runs (``<run>-<n>``), so rows left by an
    earlier run never look like this run's writes.
    """

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    _entries: dict[str, LedgerEntry] = field(default_factory=dict, repr=False)
    _pending: dict[str, float] = field(default_factory=dict, repr=False)
    _counter: Iterator[int] = field(default_factory=itertools.count, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def new_id(self) -> str:
        """A fresh id; counted as pending until :meth:`record` is called for it."""
        with self._lock:
            write_id = f"{self.run_id}-{next(self._counter)}"
            self._pending[write_id] = time.monotonic()
            return write_id

    def record(
        self, write_id: str, outcome: Outcome, *, worker: str = "", error: str | None = None
    ) -> LedgerEntry:
        """Record what the caller was told. Each id is recorded exactly once."""
        now = time.monotonic()
        with self._lock:
            if write_id in self._entries:
                raise ValueError(f"write {write_id!r} recorded twice")
            started = self._pending.pop(write_id, now)
            entry = LedgerEntry(write_id, Outcome(outcome), started, now, worker, error)
            self._entries[write_id] = entry
            return entry

    def entries(self) -> list[LedgerEntry]:
        """Every recorded entry; ids still pending count as uncertain (the caller never heard)."""
        with self._lock:
            pending = [
                LedgerEntry(i, Outcome.INFO, t, t, error="never recorded")
                for i, t in self._pending.items()
            ]
            return [*self._entries.values(), *pending]

    def counts(self) -> Counter[str]:
        return Counter(e.outcome.value for e in self.entries())


@dataclass(frozen=True)
class LedgerVerdict:
    """The checker's findings; ``ok`` only when no invariant is broken."""

    #: How many writes were recorded ok / fail / info, and how many info ones were committed.
    oks: int
    fails: int
    infos: int
    infos_committed: int
    lost: tuple[str, ...] = ()
    duplicated: tuple[tuple[str, int], ...] = ()
    phantoms: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.phantoms or self.unknown)

    def problems(self) -> list[str]:
        """Human-readable violations, each naming the ids involved (first few)."""

        def few(ids: Iterable[Any]) -> str:
            ids = list(ids)
            more = f" (+{len(ids) - 5} more)" if len(ids) > 5 else ""
            return ", ".join(map(str, ids[:5])) + more

        out = []
        if self.lost:
            out.append(f"{len(self.lost)} acknowledged write(s) missing: {few(self.lost)}")
        if self.duplicated:
            dups = few(f"{i} x{n}" for i, n in self.duplicated)
            out.append(f"{len(self.duplicated)} write(s) present more than once: {dups}")
        if self.phantoms:
            out.append(
                f"{len(self.phantoms)} phantom commit(s): failed write(s) present "
                f"(a connection was reused inside another caller's transaction): "
                f"{few(self.phantoms)}"
            )
        if self.unknown:
            out.append(f"{len(self.unknown)} row(s) nobody wrote: {few(self.unknown)}")
        return out

    def summary(self) -> str:
        head = (
            f"ledger: {self.oks} ok, {self.fails} fail, {self.infos} info "
            f"({self.infos_committed} of them committed)"
        )
        problems = self.problems()
        return head + ("; " + "; ".join(problems) if problems else "; all invariants hold")


def check(
    entries: Iterable[LedgerEntry], found: Mapping[str, int] | Iterable[str]
) -> LedgerVerdict:
    """Compare what callers were told with the rows read back (id -> count).

    - every ``ok`` id present exactly once (absent: lost; more: duplicated);
    - every ``fail`` id absent (present: phantom commit);
    - ``info`` ids present at most once;
    - every row present belongs to an entry (else ``unknown``: someone wrote
      with this run's ids, which only a bug in the workload can do).
    """
    counts: Counter[str] = Counter(found)
    by_id = {}
    for entry in entries:
        if entry.write_id in by_id:
            raise ValueError(f"ledger has two entries for {entry.write_id!r}")
        by_id[entry.write_id] = entry
    lost, phantoms, dup = [], [], []
    n_ok = n_fail = n_info = info_committed = 0
    for write_id, entry in by_id.items():
        n = counts.get(write_id, 0)
        if n > 1:
            dup.append((write_id, n))
        if entry.outcome is Outcome.OK:
            n_ok += 1
            if n == 0:
                lost.append(write_id)
        elif entry.outcome is Outcome.FAIL:
            n_fail += 1
            if n:
                phantoms.append(write_id)
        else:
            n_info += 1
            info_committed += n > 0
    unknown = sorted(i for i, n in counts.items() if n and i not in by_id)
    return LedgerVerdict(
        oks=n_ok,
        fails=n_fail,
        infos=n_info,
        infos_committed=info_committed,
        lost=tuple(sorted(lost)),
        duplicated=tuple(sorted(dup)),
        phantoms=tuple(sorted(phantoms)),
        unknown=tuple(unknown),
    )


# -- sessions left behind ----------------------------------------------------------


@dataclass(frozen=True)
class SessionVerdict:
    """Sessions in pg_stat_activity for an application name versus what the pool holds."""

    application_name: str
    in_server: int
    pool_holds: int

    @property
    def ok(self) -> bool:
        return self.in_server <= self.pool_holds

    def summary(self) -> str:
        verdict = "ok" if self.ok else "LEAK"
        return (
            f"sessions[{self.application_name}]: {self.in_server} in pg_stat_activity, "
            f"pool holds {self.pool_holds}: {verdict}"
        )


def check_sessions(application_name: str, in_server: int, pool_holds: int) -> SessionVerdict:
    """No session may exist beyond what the pool holds (a leaked connection otherwise)."""
    return SessionVerdict(application_name, in_server, pool_holds)


# -- the table -----------------------------------------------------------------------


class LedgerTable:
    """The SQL side: create the table, write one id in a transaction, read everything back."""

    def __init__(self, name: str = "chaos_ledger", *, commit_delay_ms: int = 0) -> None:
        self.name = name
        self.commit_delay_ms = commit_delay_ms
        self._ident = sql.Identifier(name)

    def create(self, conn: psycopg.Connection) -> None:
        """Create the table (autocommit admin connection); rows of other runs stay and are ignored.

        With ``commit_delay_ms`` a deferred constraint trigger sleeps at COMMIT,
        so that a fault has a real chance to hit a transaction *during* COMMIT.
        """
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (seq bigserial PRIMARY KEY, write_id text NOT NULL,"
                " written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ).format(self._ident)
        )
        if self.commit_delay_ms:
            function = sql.Identifier(f"{self.name}_slow_commit")
            conn.execute(
                sql.SQL(
                    "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$BEGIN PERFORM pg_sleep({}); RETURN NULL; END$$"
                ).format(function, sql.Literal(self.commit_delay_ms / 1000))
            )
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS slow_commit ON {}").format(self._ident))
            conn.execute(
                sql.SQL(
                    "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON {}"
                    " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {}()"
                ).format(self._ident, function)
            )

    def insert_sql(self) -> sql.Composed:
        return sql.SQL("INSERT INTO {} (write_id) VALUES (%s)").format(self._ident)

    def read(self, conn: psycopg.Connection, run_id: str) -> Counter[str]:
        """Rows of one run (id -> count)."""
        rows = conn.execute(
            sql.SQL("SELECT write_id, count(*) FROM {} WHERE write_id LIKE %s GROUP BY 1").format(
                self._ident
            ),
            (run_id + "-%",),
        ).fetchall()
        return Counter({r[0]: r[1] for r in rows})

    def verify(self, conn: psycopg.Connection, ledger: Ledger) -> LedgerVerdict:
        return check(ledger.entries(), self.read(conn, ledger.run_id))

    @staticmethod
    def count_sessions(conn: psycopg.Connection, application_name: str) -> int:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchone()
        return int(row[0]) if row else 0


@contextmanager
def recorded_write(ledger: Ledger, *, worker: str = "") -> Iterator[Callable[[str], None]]:
    """Bracket one write: ``with recorded_write(ledger) as mark: ... mark("commit") ...``.

    The body calls ``mark("commit")`` right before sending COMMIT. The outcome is
    ``ok`` when the body returns, ``fail`` when it raises before the mark, and
    :func:`~chaos.faults.outcomes.classify` of the error (a write was sent) when
    it raises after it. The id is available as ``mark.write_id``. The exception
    propagates.
    """
    write_id = ledger.new_id()
    phase = {"commit": False}

    def mark(stage: str) -> None:
        if stage == "commit":
            phase["commit"] = True

    mark.write_id = write_id  # type: ignore[attr-defined]
    try:
        yield mark
    except BaseException as exc:
        outcome = classify(exc, wrote=True) if phase["commit"] else Outcome.FAIL
        ledger.record(write_id, outcome, worker=worker, error=f"{type(exc).__name__}: {exc}")
        raise
    else:
        ledger.record(write_id, Outcome.OK, worker=worker)
