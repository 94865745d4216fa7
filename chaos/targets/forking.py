"""Forking a child of the test process: bounded, reported, always reaped.

A target's ``fork_child`` uses this to let the machines fork the way an app
server does (gunicorn ``--preload``, ``multiprocessing`` with the fork start
method): a child that inherits the backend's handler, wrappers, pools and
their sockets. Such a child is a copy of a multi-threaded process (only the
forking thread exists in it: psycopg_pool's workers do not) that also inherits
the harness's ``atexit`` and SIGTERM handlers, which stop the Postgres
servers. So the child:

- resets SIGTERM, SIGINT and SIGALRM to their defaults, arms an alarm (its own
  bound: even stuck in libpq, it dies) and asks the kernel for SIGKILL when the
  forking thread goes away (``PR_SET_PDEATHSIG``);
- runs only its work, writes a one-line JSON report on a pipe and ends with
  ``os._exit(code)``, the code saying how the work went: no atexit handler, no
  buffer flush, nothing of the parent's test run ever runs in it.

The parent waits with a deadline (``waitpid`` with ``WNOHANG``), kills the
child past it and always reaps it (:meth:`ForkedChild.reap`, idempotent).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: What a child does with what it inherited (a target's ``fork_child(work=...)``):
#: ``request``: check out, query, give back (request_started/finished) through the handler;
#: ``no_cleanup``: check out and query, then end holding the connection;
#: ``close_pool``: close the alias's pool, nothing else (a shutdown hook);
#: ``close_all``: a request, then close every connection and pool it can reach.
CHILD_WORKS: tuple[str, ...] = ("request", "no_cleanup", "close_pool", "close_all")
#: How the child ends: ``os_exit`` at once, or ``gc``: first drop what it inherited and
#: collect, as a normal interpreter exit finalises it (then ``os._exit`` all the same).
CHILD_ENDINGS: tuple[str, ...] = ("os_exit", "gc")

#: A child's exit codes: how its own work went.
EXIT_OK = 0
#: The work raised (the report's ``error`` says what).
EXIT_FAILED = 3
#: The child was handed a session of the parent's (its report's ``shared`` pids).
EXIT_SHARED = 4
#: The child could not even run its work (set up failed).
EXIT_CRASHED = 5

_PR_SET_PDEATHSIG = 1
#: Children forked and not reaped yet: :func:`reap_all` (a target's close) gets stragglers.
_unreaped: dict[int, ForkedChild] = {}
#: Longest report the child writes (one atomic pipe write).
_REPORT_LIMIT = 4096


@dataclass(frozen=True)
class ChildReport:
    """How a forked child ended, in its own words (the pipe) and the kernel's (the status)."""

    work: str
    ending: str
    #: ``os.waitstatus_to_exitcode``: negative when a signal ended it (-14: its own alarm).
    exit_code: int
    #: The parent killed it at the deadline.
    killed: bool
    seconds: float
    #: Backend pids of the sessions the child used (its own, or the parent's: ``shared``).
    backends: frozenset[int] = frozenset()
    shared: frozenset[int] = frozenset()
    #: The work's exception, ``Type: first line`` (never a DSN: psycopg's messages have none).
    error: str = ""

    @property
    def hung(self) -> bool:
        return self.killed or self.exit_code == -signal.SIGALRM

    def describe(self) -> str:
        how = (
            f"killed after {self.seconds:.1f}s"
            if self.killed
            else f"exit {self.exit_code} after {self.seconds:.2f}s"
        )
        extra = f", error {self.error}" if self.error else ""
        return f"child ({self.work}, {self.ending}): {how}{extra}"


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this child when the thread that forked it ends, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(EXIT_CRASHED)


def _child_main(
    work: Callable[[dict[str, Any]], None], write_fd: int, parent_pid: int, bound: float
) -> None:  # pragma: no cover - runs in the forked child
    code = EXIT_CRASHED
    report: dict[str, Any] = {"backends": [], "shared": []}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent(parent_pid)
        signal.alarm(max(1, math.ceil(bound)))
        try:
            work(report)
            code = EXIT_SHARED if report["shared"] else EXIT_OK
        except BaseException as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            report["error"] = f"{type(exc).__name__}: {first[:200]}"
            code = EXIT_FAILED
        os.write(write_fd, json.dumps(report).encode()[:_REPORT_LIMIT])
    finally:
        os._exit(code)


@dataclass
class ForkedChild:
    """The parent's handle on a forked child: wait for it, read its report, reap it."""

    pid: int
    read_fd: int
    bound: float
    started: float = field(default_factory=time.monotonic)
    status: int | None = None
    killed: bool = False

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the child to exit; kill it past that. Always reaps."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                _unreaped.pop(self.pid, None)
                return
            if time.monotonic() >= deadline:
                self.kill()
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def kill(self) -> None:
        """SIGKILL the child (if still running) and reap it."""
        if self.status is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
            self.killed = True
        _, self.status = os.waitpid(self.pid, 0)
        _unreaped.pop(self.pid, None)

    def reap(self) -> None:
        """Make sure the child is gone and its pipe closed (idempotent; for ``finally``)."""
        try:
            self.kill()
        finally:
            if self.read_fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self.read_fd)
                self.read_fd = -1

    def _read_report(self) -> dict[str, Any]:
        chunks = []
        with contextlib.suppress(OSError):
            os.set_blocking(self.read_fd, False)
            while chunk := os.read(self.read_fd, _REPORT_LIMIT):
                chunks.append(chunk)
        try:
            return dict(json.loads(b"".join(chunks) or b"{}"))
        except ValueError:
            return {}

    def report(self, work: str, ending: str) -> ChildReport:
        """The child's report; call after :meth:`wait` (then the child has exited)."""
        assert self.status is not None, "wait() first"
        raw = self._read_report() if self.read_fd >= 0 else {}
        return ChildReport(
            work=work,
            ending=ending,
            exit_code=os.waitstatus_to_exitcode(self.status),
            killed=self.killed,
            seconds=time.monotonic() - self.started,
            backends=frozenset(int(p) for p in raw.get("backends", ())),
            shared=frozenset(int(p) for p in raw.get("shared", ())),
            error=str(raw.get("error", "")),
        )


def fork(work: Callable[[dict[str, Any]], None], *, bound: float) -> ForkedChild:
    """Fork in the calling thread. The child runs ``work(report)`` and exits; the parent
    gets the child's handle at once (and must :meth:`~ForkedChild.reap` it, even on error).

    ``work`` fills ``report``: ``backends`` (pids of the sessions it used), ``shared``
    (those that were the parent's). ``bound``: the child's own alarm, in seconds.
    """
    read_fd, write_fd = os.pipe()
    parent_pid = os.getpid()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns that forking a multi-threaded process may deadlock the
            # child: that is the situation under test, and the child's alarm bounds it.
            warnings.filterwarnings(
                "ignore", "This process .* is multi-threaded", DeprecationWarning
            )
            pid = os.fork()
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        _child_main(work, write_fd, parent_pid, bound)
    os.close(write_fd)
    child = _unreaped[pid] = ForkedChild(pid=pid, read_fd=read_fd, bound=bound)
    return child


def reap_all() -> None:
    """Kill and reap every child not reaped yet (a call that timed out lost its handle)."""
    for child in list(_unreaped.values()):
        child.reap()
