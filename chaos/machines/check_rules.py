"""A user ``check`` that fails on purpose, the rules that arm it, and what a checkout owes it.

``POSTGRES_POOL["check"]`` is user code, and it wins over the default health
check (Django #37075). User code fails in its own ways: ``ValueError``,
``RuntimeError``, a ``psycopg.Error`` subclass, or closing the connection and
returning normally. Whatever it does, the checkout must discard that
connection and retry (within the pool's timeout):

- :class:`~chaos.machines.errors.CheckFailureRaised`: the check's own
  exception reached the caller;
- :class:`~chaos.machines.errors.FailedCheckHandedOut`: a connection that
  failed the check was handed out (again), or the checkout failed on the
  connection the check had just closed.

:class:`ScriptedCheck` is that user check; a machine run gets a fresh one
through ``TargetOptions(user_check=ScriptedCheck)``. Rules arm it
deterministically, never by a timer: :meth:`UserCheckRules.fail_next_checks`
(the next ``times`` calls after ``skip`` passing ones fail) and
:meth:`UserCheckRules.fail_checks_of` (every later check of the backend a
request holds fails). An unarmed call probes the connection with plain_pool's
bounded probe, so dead connections are still caught under network faults.

Usage: ``machine_for(env, UserCheckRules, options=TargetOptions(user_check=ScriptedCheck))``.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from chaos.machines.errors import CheckFailureRaised, FailedCheckHandedOut
from chaos.machines.model import Backend, Model
from chaos.machines.pool_machine import PoolMachine
from plain_pool.health import check_connection

#: How an armed check fails.
HOWS = ("value_error", "runtime_error", "psycopg_error", "close_and_return", "close_and_raise")
#: The unarmed probe's bound: below the machines' blocked-step bound even after a retry.
PROBE_TIMEOUT = 1.0


class CheckRejected(psycopg.OperationalError):
    """The psycopg.Error subclass a user check raises (``how="psycopg_error"``)."""


@dataclass(frozen=True)
class CheckCall:
    """One call of the check: on which backend, how it failed (None: passed)."""

    number: int
    backend: Backend | None
    how: str | None
    error: BaseException | None = None

    def __repr__(self) -> str:
        outcome = "passed" if self.how is None else f"failed ({self.how})"
        return f"check call {self.number} on {self.backend!r}: {outcome}"


class ScriptedCheck:
    """A user check whose failures rules arm; every call is recorded in :attr:`calls`.

    Thread-safe: requests call it from their threads, rules arm it from the machine's.
    """

    _serial: ClassVar[itertools.count] = itertools.count(1)

    def __init__(
        self,
        identify: Callable[[psycopg.Connection], Backend] | None = None,
        probe: Callable[[psycopg.Connection], Any] | None = None,
    ) -> None:
        self.number = next(self._serial)
        self.identify = identify
        self.probe = probe or (lambda conn: check_connection(conn, PROBE_TIMEOUT))
        self._lock = threading.Lock()
        self._skip = 0
        self._next: deque[str] = deque()
        self._backends: dict[Backend, str] = {}
        self.calls: list[CheckCall] = []

    def __repr__(self) -> str:
        # Stable whatever is armed: the repr is part of plain_pool's pool identity.
        return f"ScriptedCheck(#{self.number})"

    # -- arming (the machine's thread) ---------------------------------------------
    def arm_next(self, how: str, times: int, skip: int = 0) -> None:
        """After ``skip`` passing calls, the next ``times`` calls fail with ``how``."""
        with self._lock:
            self._skip = skip
            self._next = deque([how] * times)

    def arm_backend(self, backend: Backend, how: str) -> None:
        """Every later call on ``backend`` fails with ``how``."""
        with self._lock:
            self._backends[backend] = how

    # -- what the invariants read ------------------------------------------------
    def failed_backends(self) -> set[Backend]:
        with self._lock:
            return {c.backend for c in self.calls if c.how is not None and c.backend}

    def call_raising(self, exc: BaseException) -> CheckCall | None:
        """The call that raised ``exc`` (or an exception it was raised from), if any."""
        chain: list[BaseException] = []
        seen = exc
        while seen is not None and len(chain) < 10:
            chain.append(seen)
            seen = seen.__cause__ or seen.__context__
        with self._lock:
            for call in reversed(self.calls):
                if call.error is not None and any(call.error is e for e in chain):
                    return call
        return None

    # -- the check (a request's thread) ---------------------------------------------
    def _backend(self, conn: psycopg.Connection) -> Backend | None:
        if self.identify is None:
            return None
        try:
            return self.identify(conn)
        except Exception:  # a closed connection has no pid to tell
            return None

    def __call__(self, conn: psycopg.Connection) -> None:
        backend = self._backend(conn)
        with self._lock:
            how = self._backends.get(backend) if backend is not None else None
            if how is None and self._next:
                if self._skip:
                    self._skip -= 1
                else:
                    how = self._next.popleft()
            number = len(self.calls) + 1
        try:
            if how is None:
                self.probe(conn)
            else:
                self._fail(conn, how)
        except BaseException as exc:
            self._record(CheckCall(number, backend, how or "probe", exc))
            raise
        self._record(CheckCall(number, backend, how))

    def _record(self, call: CheckCall) -> None:
        with self._lock:
            self.calls.append(call)

    @staticmethod
    def _fail(conn: psycopg.Connection, how: str) -> None:
        if how == "value_error":
            raise ValueError("user check: connection rejected")
        if how == "runtime_error":
            raise RuntimeError("user check: connection rejected")
        if how == "psycopg_error":
            raise CheckRejected("user check: connection rejected")
        conn.close()
        if how == "close_and_raise":
            raise ValueError("user check: closed the connection")
        # close_and_return: the check "handled" it by closing, and returns normally.


#: The machine's own choice of failures (``check_hows``).
_hows = st.runner().flatmap(lambda machine: st.sampled_from(machine.check_hows))


class UserCheckRules:
    """Arm the user check; judge checkouts against what it did (run with a ScriptedCheck)."""

    model: Model
    target: Any
    options: Any
    #: The ways the check fails (a machine class may narrow them: a canary does).
    check_hows: ClassVar[tuple[str, ...]] = HOWS
    _check_mark: int = 0

    @precondition(lambda self: self.options.user_check is not None)
    @rule(how=_hows, times=st.integers(1, 2), skip=st.integers(0, 2))
    def fail_next_checks(self, how: str, times: int, skip: int) -> None:
        """The check's next ``times`` calls after ``skip`` passing ones fail; then a probe."""
        self._step(f"fail next checks: {times} x {how} after {skip}")  # type: ignore[attr-defined]
        self.target.user_check.arm_next(how, times, skip)
        self._probe_after(f"after arming {times} x {how}")  # type: ignore[attr-defined]

    @precondition(lambda self: self.options.user_check is not None)
    @rule(
        request=PoolMachine.requests,
        how=_hows,
        then_give_back=st.booleans(),
    )
    def fail_checks_of(self, request: Any, how: str, then_give_back: bool) -> None:
        """Every later check of the backend ``request`` holds fails with ``how``."""
        self._step(f"fail checks of {request!r}'s backend: {how}")  # type: ignore[attr-defined]
        state = self.model.requests[request.number]
        holding = state.holding
        if state.stuck or holding is None or holding.backend is None or holding.broken:
            return
        self.target.user_check.arm_backend(holding.backend, how)
        if then_give_back:
            self.give_back(request)  # type: ignore[attr-defined]

    # -- the judgement (overrides PoolMachine's, then defers to it) --------------------
    def _check_checkout(self, request: Any, result: Any, exhausted: bool) -> None:
        super()._check_checkout(request, result, exhausted)  # type: ignore[misc]
        check = self.target.user_check
        if check is None:
            return
        if result.backend in check.failed_backends():
            failed = [c for c in check.calls if c.backend == result.backend and c.how]
            raise FailedCheckHandedOut(
                f"{request!r} got {result.backend!r}, which failed the user check "
                f"({failed[-1]!r}): it should have been discarded"
            )
        for call in check.calls[self._check_mark :]:
            if call.how is not None:
                self._outcome("user check", f"failed ({call.how}), checkout retried")  # type: ignore[attr-defined]
        self._check_mark = len(check.calls)

    def _failed(self, request: Any, what: str, exc: BaseException, **kw: Any) -> Any:
        check = self.target.user_check
        if check is not None:
            self._judge_check(check, request, what, exc)
        return super()._failed(request, what, exc, **kw)  # type: ignore[misc]

    def _judge_check(
        self, check: ScriptedCheck, request: Any, what: str, exc: BaseException
    ) -> None:
        call = check.call_raising(exc)
        if call is not None:
            raise CheckFailureRaised(
                f"{what} of {request!r} raised the user check's own exception "
                f"({call!r}: {type(exc).__name__}: {exc}); the connection should have been "
                "discarded and the checkout retried"
            ) from exc
        if what != "checkout":
            return
        since = check.calls[self._check_mark :]
        self._check_mark = len(check.calls)
        if since and since[-1].how == "close_and_return" and not self.model.faults_active:
            raise FailedCheckHandedOut(
                f"checkout of {request!r} failed right after the user check closed "
                f"{since[-1].backend!r} and returned ({type(exc).__name__}: {exc}): the closed "
                "connection was handed out instead of discarded"
            ) from exc
