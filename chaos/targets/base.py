"""The target adapter: the seam between the state machines and a pooled backend.

The machines never call plain_pool directly. They talk to a :class:`Target`
(the backend as a whole: settings, pool, stats) and to :class:`TargetRequest`
objects (one simulated web request each: check out, run SQL, give back,
finish). Another backend - bare psycopg_pool, Django's pooled backend,
PgBouncer in front - runs the same properties by implementing these two
classes.

Every request runs on a thread of its own (:class:`RequestThread`) and the
machine drives it synchronously, one call at a time. Why a real thread rather
than several wrapper objects in the machine's thread: plain_pool's (and
Django's) handler keeps one wrapper per *thread*; only real threads exercise
that thread-local lookup, ``request_started``/``request_finished`` per thread,
and settings changed in one thread being seen by another thread's wrapper. The
machine still decides the order of every step, so runs stay deterministic and
shrinkable. A call that does not return within the step bound is reported to
the machine (:class:`StepTimeout`), which decides whether an active fault
explains it.
"""

from __future__ import annotations

import abc
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from chaos.machines.model import Backend, SettingsValue

if TYPE_CHECKING:
    from chaos.targets.forking import ChildReport

T = TypeVar("T")
#: The client type a target hands the scenarios (its own wrapper, or a :class:`Client`).
ClientT = TypeVar("ClientT")


class StepTimeout(Exception):
    """A request thread did not finish a call within the step bound."""


@dataclass(frozen=True)
class CheckoutResult:
    """What a checkout observed: the session fingerprint and the backend identity.

    ``age``: seconds since the connection was opened, on the client's monotonic
    clock (stamp it when the system's connect/configure hook runs, or at first
    sight), compared with ``max_lifetime`` by the lifetime invariant.
    ``pool_id``: the identity of the pool that lent the connection (None: no pool).
    """

    fingerprint: Any
    backend: Backend
    age: float
    pool_id: int | None


@dataclass(frozen=True)
class TargetOptions:
    """Pool and backend options a machine run asks the target for."""

    min_size: int = 1
    max_size: int = 3
    timeout: float = 1.5
    max_lifetime: float = 600.0
    max_idle: float = 600.0
    reconnect_timeout: float = 30.0
    health_checks: bool = True
    prepare_threshold: int | None = None
    #: Server-side binding (psycopg.Cursor): without it plain_pool uses ClientCursor,
    #: which never prepares, so prepare_threshold would change nothing.
    server_side_binding: bool = False
    #: A broken backend for the canaries: a name in chaos.targets.variants.VARIANTS, or a class.
    variant: str | type | None = None
    #: Run a subclass that overrides the backend's connection-setup hook (as framework
    #: subclasses do): every checkout, on every path, must show what the override sets.
    configure_override: bool = False
    #: A factory of the user's pool ``check`` (POSTGRES_POOL["check"]), called once per
    #: target as ``user_check(identify=...)`` (``identify(conn)`` -> the connection's
    #: :class:`Backend`), so every machine run gets a check with a state of its own.
    user_check: Callable[..., Any] | None = None
    #: The pool's ``reconnect_failed(pool)`` callback (psycopg_pool's): called when the
    #: pool gave up reconnecting for ``reconnect_timeout`` (the outage scenario checks it).
    reconnect_failed: Callable[[Any], None] | None = None
    #: libpq connection options over the harness's chaos-safe ones
    #: (:data:`chaos.faults.CHAOS_TIMEOUTS`); a None value removes a harness default
    #: (e.g. ``{"connect_timeout": None, "options": "-c statement_timeout=1000"}``).
    connect_options: Mapping[str, Any] | None = None
    #: Put a fault proxy on the client hop of a target with a middle hop (PgBouncer):
    #: called with the middle hop's address, it returns the address the app connects to
    #: instead. A target with no middle hop never calls it (the probe then reads n/a).
    client_hop: Callable[[str, int], tuple[str, int]] | None = None


@dataclass(frozen=True)
class SessionCapacity:
    """What a target's live pools and requests may hold on the server, and its parts."""

    #: Upper bound of the target's sessions: registered pools' sizes + connections held
    #: by requests from pools no longer registered.
    sessions: int
    #: Human-readable parts, for the violation message.
    detail: str


class RequestThread:
    """A thread that runs the calls it is given, one at a time, and returns their results."""

    def __init__(self, name: str) -> None:
        self._calls: queue.Queue[tuple[Callable[[], Any], Future] | None] = queue.Queue()
        self._pending: Future | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    @property
    def pending(self) -> bool:
        return self._pending is not None and not self._pending.done()

    def settle(self, timeout: float) -> None:
        """Wait for the call that timed out; raise StepTimeout if it still runs."""
        future = self._pending
        if future is None:
            return
        try:
            future.result(timeout)
        except FutureTimeout:
            raise StepTimeout(f"{self._thread.name}: still blocked") from None
        finally:
            if future.done():
                self._pending = None

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        if self._pending is not None:
            with contextlib.suppress(Exception):
                self.settle(timeout)
            if self.pending:
                raise StepTimeout(f"{self._thread.name}: an earlier call is still blocked")
        future: Future = Future()
        self._calls.put((fn, future))
        try:
            return future.result(timeout)
        except FutureTimeout:
            self._pending = future
            raise StepTimeout(f"{self._thread.name}: no answer within {timeout:.1f}s") from None

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to end after its current call; True if it ended in time."""
        self._calls.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class ControlThreads:
    """Threads for pool operations that no request makes (close_pool, pool.check(), ...).

    A call stuck under a blocking fault keeps its thread; the next call gets a
    new one, as a web app's other threads would go on while one is blocked.
    :meth:`settle` waits for the stuck ones after the fault is healed.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._stuck: list[RequestThread] = []
        self._current = RequestThread(name)

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        if self._current.pending:
            self._stuck.append(self._current)
            self._current = RequestThread(f"{self.name}-{len(self._stuck)}")
        return self._current.call(fn, timeout)

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s in all for stuck calls; True when none is left."""
        deadline = time.monotonic() + timeout
        for thread in [*self._stuck, self._current]:
            with contextlib.suppress(Exception):
                thread.settle(max(0.0, deadline - time.monotonic()))
            if thread.pending:
                return False
        for thread in self._stuck:
            thread.stop(1.0)
        self._stuck.clear()
        return True

    def stop(self, timeout: float = 1.0) -> None:
        for thread in [*self._stuck, self._current]:
            thread.stop(timeout if not thread.pending else 0.0)


class Session(abc.ABC):
    """One simulated request's view of the backend; every method runs IN the request's thread."""

    @abc.abstractmethod
    def checkout(self) -> CheckoutResult:
        """Make sure the request holds a connection; fingerprint it before anything else runs."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Any = None, *, prepare: bool | None = None) -> list[tuple]:
        """Run user SQL on the request's connection (checking one out if needed)."""

    @abc.abstractmethod
    def set_client_attr(self, name: str, value: Any) -> None:
        """Set autocommit / isolation_level / read_only / deferrable on the raw connection."""

    @abc.abstractmethod
    def begin(self, how: str) -> None:
        """Open a transaction: ``"begin"`` (raw BEGIN) or ``"autocommit_off"`` (the wrapper)."""

    @abc.abstractmethod
    def ensure_timezone(self) -> None:
        """Apply a settings change from this thread (the backend's hook).

        Called by the target's own ``change_settings(settings, via, bound)``
        through ``via.run(lambda s: s.ensure_timezone(), bound)``: the machines
        never call it directly, so a target that applies settings another way
        may leave it empty.
        """

    @abc.abstractmethod
    def give_back(self) -> None:
        """Return the connection (the wrapper's close) but keep the request open."""

    @abc.abstractmethod
    def finish(self) -> None:
        """End the request (request_finished: what should not outlive it goes back)."""

    @abc.abstractmethod
    def holds_connection(self) -> bool:
        """Whether the request's wrapper holds a connection now."""


class TargetRequest:
    """A :class:`Session` bound to a thread of its own, driven from the machine's thread.

    Every call takes a ``bound`` (seconds); past it :class:`StepTimeout` is
    raised and the call stays pending: :meth:`settle` waits for it later.
    """

    def __init__(self, number: int, make_session: Callable[[], Session]) -> None:
        self.number = number
        self.thread = RequestThread(f"request-{number}")
        self.session: Session = self.thread.call(make_session, 30.0)

    def run(self, fn: Callable[[Session], T], bound: float) -> T:
        return self.thread.call(lambda: fn(self.session), bound)

    def settle(self, timeout: float) -> None:
        """Wait for a call that timed out earlier; re-raise how it ended."""
        self.thread.settle(timeout)

    def checkout(self, bound: float) -> CheckoutResult:
        return self.run(lambda s: s.checkout(), bound)

    def give_back(self, bound: float) -> None:
        self.run(lambda s: s.give_back(), bound)

    def holds_connection(self, bound: float = 5.0) -> bool:
        try:
            return self.run(lambda s: s.holds_connection(), bound)
        except StepTimeout:
            return True

    def finish(self, bound: float) -> None:
        """request_finished, then the thread ends (even if finishing failed)."""
        try:
            self.run(lambda s: s.finish(), bound)
        finally:
            self.thread.stop(0.0 if self.thread.pending else 1.0)


class Client(Protocol):
    """What a fault scenario's workload holds in one thread: a Django-like database client.

    ``Target.thread_client()`` returns this thread's; every call runs in that thread.
    A request is ``db.ensure_connection()`` (check out; returns the DB-API connection,
    a psycopg one for every target here), ``db.cursor()`` / ``db.atomic()`` (a
    transaction committed on exit, rolled back on an exception) /
    ``db.set_autocommit(False)`` (the next statement opens a transaction the request
    may walk away from), then ``db.close()`` (give the connection back the way the
    system's users do). ``connection`` is the connection held now, or None. Errors
    are the system's own (wrapped as it wraps them): the scenarios classify by cause.
    """

    connection: Any

    def ensure_connection(self) -> Any: ...

    def cursor(self) -> Any: ...

    def atomic(self) -> contextlib.AbstractContextManager[Any]: ...

    def set_autocommit(self, autocommit: bool) -> None: ...

    def close(self) -> None: ...


class ConnectionClient:
    """A :class:`Client` over a system's own checkout call, for a target whose system hands
    out DB-API connections directly: ``checkout()`` returns ``(connection, give_back)``
    (``pool = current(); return pool.getconn(), pool.putconn`` for psycopg_pool: back to
    the pool that lent it); transactions are psycopg's own."""

    def __init__(self, checkout: Callable[[], tuple[Any, Callable[[Any], None]]]) -> None:
        self._checkout = checkout
        self._give_back: Callable[[Any], None] | None = None
        self.connection: Any = None

    def ensure_connection(self) -> Any:
        if self.connection is None:
            self.connection, self._give_back = self._checkout()
        return self.connection

    def cursor(self) -> Any:
        return self.ensure_connection().cursor()

    def atomic(self) -> contextlib.AbstractContextManager[Any]:
        return self.ensure_connection().transaction()  # type: ignore[no-any-return]

    def set_autocommit(self, autocommit: bool) -> None:
        self.ensure_connection().autocommit = autocommit

    def close(self) -> None:
        conn, give_back = self.connection, self._give_back
        self.connection = self._give_back = None
        if conn is not None and give_back is not None:
            give_back(conn)


class ThreadClients(Generic[ClientT]):
    """One :class:`Client` per thread (made by ``make`` on first use), and all of them
    for :meth:`close_all`: a target's ``thread_client()`` is usually ``self.clients.get()``."""

    def __init__(self, make: Callable[[], ClientT]) -> None:
        self._make = make
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[ClientT] = []

    def get(self) -> ClientT:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._make()
            with self._lock:
                self._all.append(client)
        return client  # type: ignore[no-any-return]

    def close_all(self) -> None:
        """Give back what every thread's client holds (from any thread: the scenario is over)."""
        with self._lock:
            clients = list(self._all)
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()


class Target(abc.ABC):
    """A pooled backend under test, as the machines see it."""

    #: Short description printed in failure reports (backend, variant, versions).
    description: str = "?"

    #: Everything the expected fingerprint depends on (server address, options), for the
    #: cache the machines share; the machine adds the target's class to the key itself.
    cache_key: Any = None

    #: The application_name of every session the target's pools open (unique per target,
    #: so pg_stat_activity tells them apart from admin and other tests' sessions); None if
    #: the target cannot tell its sessions apart.
    application_name: str | None = None

    #: The installed user check (made by ``TargetOptions.user_check``), or None.
    user_check: Any = None

    def session_capacity(self) -> SessionCapacity | None:
        """How many server sessions the target's live pools and requests may hold now.

        None: the target cannot tell (the orphaned-sessions invariant is skipped).
        """
        return None

    @abc.abstractmethod
    def open_request(self, number: int) -> TargetRequest: ...

    @abc.abstractmethod
    def change_settings(
        self, settings: SettingsValue, via: TargetRequest | None, bound: float
    ) -> None:
        """Put new settings in force and apply them from ``via``'s thread (or a control thread)."""

    @abc.abstractmethod
    def current_pool_id(self) -> int | None:
        """Identity of the pool a checkout would use now (as in CheckoutResult.pool_id)."""

    @abc.abstractmethod
    def close_pool(self, bound: float) -> None: ...

    @abc.abstractmethod
    def check_pool(self, bound: float) -> None: ...

    @abc.abstractmethod
    def settle_control(self, timeout: float) -> bool:
        """Wait for pool operations stuck under a healed fault; True when none is left."""

    @abc.abstractmethod
    def stats(self) -> dict[str, int]: ...

    @abc.abstractmethod
    def expected_fingerprint(self, settings: SettingsValue) -> Any:
        """Fingerprint of a fresh connection configured for ``settings`` (no pool, no faults)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop every thread and close every pool and connection."""

    # -- scenarios (optional: a scenario on a target without them is skipped) -------------
    def thread_client(self) -> Client:
        """This thread's :class:`Client` for the fault scenarios (chaos.scenarios).

        One per thread, made on first use and kept: the workloads call it from many
        threads at once. A target that does not implement it has its scenarios skipped
        with this error's message.
        """
        raise NotImplementedError(
            f"{type(self).__qualname__} has no thread_client(): the fault scenarios need one "
            "(chaos.targets.base.Client)"
        )

    def pool_counters(self) -> dict[str, int]:
        """The pool's counters for a scenario's report and checks (connections lost,
        checks failed...): :meth:`stats` unless the system keeps more of its own."""
        return self.stats()

    # -- fork (optional: the fork rules skip a target that raises NotImplementedError) --------
    def parent_sessions(self) -> dict[int, str]:
        """Backend pids of the sessions this process holds (``"held"``) or pools (``"idle"``)."""
        raise NotImplementedError

    def ping_sessions(self, pids: Iterable[int], bound: float) -> dict[int, str]:
        """Send each of those sessions an empty query (no state change, any transaction
        status), bounded; return the pids that did not answer, with why."""
        raise NotImplementedError

    def fork_child(
        self, work: str, ending: str, bound: float, parent_pids: frozenset[int]
    ) -> ChildReport:
        """Fork from a control thread; the child does ``work`` (one of
        :data:`chaos.targets.forking.CHILD_WORKS`) with what it inherited, ends as
        ``ending`` says and reports; the parent waits at most ``bound`` (+ a grace) and
        reaps it. ``parent_pids``: the parent's sessions (the child reports using one)."""
        raise NotImplementedError


class ThreadedTarget(Target, Generic[ClientT]):
    """A target whose requests each run on a :class:`RequestThread` (``requests``, appended
    by ``open_request``) and whose scenario clients are one per thread (``clients``).

    Every such target hands out and ends those the same way, so that lives here once;
    what each system closes after them (pools, engines, PgBouncer) stays in its ``close()``.
    """

    requests: list[TargetRequest]
    clients: ThreadClients[ClientT]

    def thread_client(self) -> ClientT:
        """This thread's client for the fault scenarios (:class:`Client`)."""
        return self.clients.get()

    def stop_requests(self) -> None:
        """The first half of ``close()``: the scenario clients give back what they hold,
        then every request's thread is told to end, without waiting (one stuck under a
        fault stays blocked; what it holds is closed by the rest of ``close()``)."""
        self.clients.close_all()
        for request in self.requests:
            with contextlib.suppress(Exception):
                request.thread.stop(0.0)

    def close_session_connections(self) -> None:
        """Close the connection each request's session still holds as ``session.conn``
        (a stuck request's: its thread never gave it back), for sessions that keep one."""
        for request in self.requests:
            conn = getattr(request.session, "conn", None)
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
