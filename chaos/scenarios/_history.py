"""The history of a scenario: what every caller did, as frozen records appended in order.

Jepsen's shape (a history of operations, checked after the run): workloads
record operations through :meth:`History.op` (or :meth:`History.add` for one
done elsewhere, e.g. in a child process); a record is built once, when the
operation ended, and never changes. Checkers read a :meth:`History.view`, a
tuple: they cannot change what happened.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from chaos.faults.outcomes import root_cause


@dataclass(frozen=True)
class Op:
    """One operation a caller did, with monotonic times.

    ``checked_out``: when the operation held a connection (None: it never got
    one); an error is *in flight* at a fault when the connection was held
    before the fault ended (see :func:`chaos.scenarios._checkers.classify_errors`).
    """

    worker: int
    kind: str
    started: float
    ended: float = 0.0
    ok: bool = False
    checked_out: float | None = None
    error_type: str | None = None
    error: str | None = None


class OpHandle:
    """Yielded by :meth:`History.op`: mark the checkout; read the record once it ended."""

    def __init__(self, worker: int, kind: str) -> None:
        self.worker, self.kind = worker, kind
        self.started = time.monotonic()
        self._checked_out: float | None = None
        #: The frozen record, once the ``with`` block ended (None inside it).
        self.record: Op | None = None

    def checked_out(self, at: float | None = None) -> None:
        """The operation holds a connection from now (or since ``at``, monotonic)."""
        self._checked_out = time.monotonic() if at is None else at

    @property
    def op(self) -> Op:
        """The record (after the block): ``op.op.ok``, ``op.op.ended``..."""
        if self.record is None:
            raise RuntimeError(f"operation {self.kind!r} has not ended yet")
        return self.record

    @property
    def ok(self) -> bool:
        return self.record is not None and self.record.ok

    def _end(self, exc: BaseException | None) -> Op:
        """Freeze the record. An error is recorded by its root cause (Django and SQLAlchemy
        wrap psycopg's errors: a pool timeout must read ``PoolTimeout`` on every target)."""
        error = None
        if exc is not None:
            root = root_cause(exc)
            text = str(root).strip()
            error = text.splitlines()[0][:200] if text else ""
            if root is not exc:
                error = f"(raised as {type(exc).__name__}) {error}"[:200]
            exc = root
        self.record = Op(
            worker=self.worker,
            kind=self.kind,
            started=self.started,
            ended=time.monotonic(),
            ok=exc is None,
            checked_out=self._checked_out,
            error_type=None if exc is None else type(exc).__name__,
            error=error,
        )
        return self.record


class History:
    """Append-only, thread-safe; :meth:`view` is what checkers get."""

    def __init__(self) -> None:
        self._ops: list[Op] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def op(self, kind: str, worker: int = -1) -> Iterator[OpHandle]:
        """Record one operation; an exception is recorded and swallowed (callers retry)."""
        handle = OpHandle(worker, kind)
        try:
            yield handle
        except Exception as exc:
            record = handle._end(exc)
        else:
            record = handle._end(None)
        self.add(record)

    def add(self, op: Op) -> None:
        """Append a record made elsewhere (e.g. an operation a child process reported)."""
        if not isinstance(op, Op):
            raise TypeError(f"a history holds Op records, not {type(op).__name__}")
        with self._lock:
            self._ops.append(op)

    def view(self) -> tuple[Op, ...]:
        """Every record so far, in the order they ended (a snapshot: later ones not in it)."""
        with self._lock:
            return tuple(self._ops)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)
