"""The state machines: arbitrary sequences of requests, session dirt, settings changes and faults.

``PoolMachine`` drives a :class:`~chaos.targets.base.Target` (plain_pool by
default) and checks after every step that the pooled backend keeps its
guarantees. Faults, the max_lifetime clock and prepared statements come as
mixins, so a test picks the rules it can afford (a proxy of its own, a server
of its own) with :func:`machine_for`::

    Machine = machine_for(env, NetworkFaults, ServerFaults, options=TargetOptions(...))
    run_state_machine_as_test(Machine, settings=settings(parent=settings()))

What the model predicts (:mod:`chaos.machines.model`) is compared with what
each step observed; a difference raises the invariant's own exception
(:mod:`chaos.machines.errors`). Preconditions read only the model.

Printed steps are valid Python: requests are bundle variables, faults and
dirt are frozen dataclasses with constructor reprs, settings are
``SettingsValue(...)``; so a failing program pastes into a regression test
(see tests/properties/test_regressions.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import psycopg
from hypothesis import event as _hypothesis_event
from hypothesis import note as _hypothesis_note
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)
from psycopg import errors as pgerrors

from chaos.faults.base import Effects, Fault
from chaos.faults.network import Down, HalfOpen, Latency, ResetPeer, TimedClose
from chaos.faults.outcomes import Outcome, combined_effects, is_pool_timeout, root_cause
from chaos.faults.schedule import FaultSchedule
from chaos.faults.server import Crash, RestartFast, RestartImmediate, TerminateBackends
from chaos.machines.checks import check_session
from chaos.machines.dirt import DIRT, Dirt
from chaos.machines.errors import (
    DoubleCheckout,
    Hang,
    InvariantViolation,
    LifetimeNotEnforced,
    NoRecoveryAfterHeal,
    PhantomCommit,
    PoolOutOfBounds,
    ReconfigurationHang,
    SlowReturn,
)
from chaos.machines.judge import Facts, judge
from chaos.machines.model import Holding, Model, SettingsValue
from chaos.machines.runner import record_violation
from chaos.targets.base import (
    CheckoutResult,
    Session,
    StepTimeout,
    Target,
    TargetOptions,
    TargetRequest,
)
from chaos.targets.registry import UnsupportedOption

#: Settings values the machines move between (each gets its expected fingerprint, cached).
TIME_ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata")
ROLES = (None, "chaos_app")
PHANTOM_TABLE = "chaos_phantom"

#: The machine's own probing request (not in the model: it never holds across steps).
PROBE = 0
#: How long after heal_all a checkout must succeed again.
RECOVERY_BOUND = 10.0
#: A step's bound when no blocking fault is active (timeouts must end every wait sooner).
STEP_BOUND = 20.0
#: A step's bound while a blocking fault (half_open) is active: the wait is expected.
BLOCKED_STEP_BOUND = 2.5
#: Under any fault, giving a connection back (rollback and reset included) must end within
#: this: plain_pool bounds the reset by a 2 s deadline; 1 s of slack for a noisy machine.
RETURN_BOUND = 3.0
#: Under any fault, ensure_timezone() / close_pool() from a thread holding no connection must
#: end within this: replacing a pool must not wait for its workers stuck in a connect.
RECONFIGURE_BOUND = 1.5
#: Slack on max_lifetime: the target's creation stamp vs the pool's own (jitter only shortens).
LIFETIME_SLACK = 0.05

#: Queries the prepared-statements machine repeats (each becomes a server-side _pg3_N).
REPEATED_QUERIES = (
    "SELECT 1",
    "SELECT %s::int + 1",
    "SELECT count(*) FROM pg_class WHERE relkind = %s",
)
#: Enough repeats in one step for psycopg to prepare a query (default prepare_threshold 5).
MAX_REPEATS = 6


@dataclass(frozen=True)
class Request:
    """A simulated request; printed as ``Request(1)``."""

    number: int

    def __repr__(self) -> str:
        return f"Request({self.number})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


@dataclass
class MachineEnv:
    """What a machine run is bound to: servers, proxy, target factory, and the run's record."""

    server: Any
    proxy: Any | None
    make_target: Callable[[TargetOptions], Target]
    server_faults: bool = False
    toxiproxy_kind: str = "?"
    #: The target's name (``--target``): machine_for puts it in each machine's example
    #: database key. None: made by hand; ``make_target``'s name stands in for it.
    target_name: str | None = None
    #: Set by every machine instance: the last one is the failing example's.
    last_schedule: FaultSchedule | None = None
    last_target: str = ""
    examples: int = 0
    steps: int = 0
    #: Faults the nemesis applied, and invariant checks run (the checkout's judgement and
    #: every @invariant evaluation): the chaos summary prints them per machine.
    faults_injected: int = 0
    checks: int = 0
    #: The run's first invariant violation, the example it happened in and that example's
    #: steps: reported even when Hypothesis cannot replay it (see chaos.machines.runner).
    first_violation: InvariantViolation | None = None
    first_violation_example: int = 0
    first_violation_steps: list[str] = field(default_factory=list)
    _prepared: set[str] = field(default_factory=set)

    def server_version(self) -> str:
        return str(getattr(self.server, "version", "?"))

    def describe(self) -> str:
        return (
            f"postgres {self.server_version()} at {getattr(self.server, 'host', '?')}:"
            f"{getattr(self.server, 'port', '?')}; toxiproxy {self.toxiproxy_kind}; "
            f"target {self.last_target}"
        )

    def admin(self) -> psycopg.Connection:
        """A fresh autocommit superuser connection straight to the server (no proxy)."""
        return self.server.connect()

    def prepare_database(self) -> None:
        """Roles and the phantom-write table every machine needs (idempotent, race-safe)."""
        key = f"{getattr(self.server, 'host', '')}:{getattr(self.server, 'port', '')}"
        if key in self._prepared:
            return
        from chaos.machines.dirt import INTRUDER_ROLE

        for role in (*[r for r in ROLES if r], INTRUDER_ROLE):
            _ignore_races(lambda role=role: self.server.create_role(role))
        with self.admin() as conn:
            _ignore_races(
                lambda: conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {PHANTOM_TABLE} (token text PRIMARY KEY)"
                )
            )
            conn.execute(f"GRANT ALL ON {PHANTOM_TABLE} TO PUBLIC")
        self._prepared.add(key)


def event(label: str) -> None:
    """hypothesis.event, or nothing outside a Hypothesis run (a pasted regression program)."""
    with contextlib.suppress(InvalidArgument):
        _hypothesis_event(label)


def note(text: str) -> None:
    """hypothesis.note, or print outside a Hypothesis run."""
    try:
        _hypothesis_note(text)
    except InvalidArgument:
        print(text)


def _ignore_races(fn: Callable[[], Any]) -> None:
    """Run an idempotent DDL; a concurrent creator's unique violation means done."""
    with contextlib.suppress(
        pgerrors.UniqueViolation, pgerrors.DuplicateObject, pgerrors.DuplicateTable
    ):
        fn()


def settings_values(
    time_zones: tuple[str, ...] = TIME_ZONES, roles: tuple[str | None, ...] = ROLES
) -> st.SearchStrategy[SettingsValue]:
    return st.builds(
        SettingsValue,
        time_zone=st.sampled_from(time_zones),
        use_tz=st.booleans(),
        role=st.sampled_from(roles),
    )


#: The machine's own settings choices (a machine class may narrow them: ``roles = (None,)``).
machine_settings_values = st.runner().flatmap(
    lambda machine: settings_values(machine.time_zones, machine.roles)
)


class PoolMachine(RuleBasedStateMachine):
    """Requests, session dirt, settings changes, pool maintenance; no faults (see the mixins)."""

    env: ClassVar[MachineEnv]
    options: ClassVar[TargetOptions] = TargetOptions()
    max_requests: ClassVar[int] = 4
    time_zones: ClassVar[tuple[str, ...]] = TIME_ZONES
    roles: ClassVar[tuple[str | None, ...]] = ROLES
    #: The dirt dirty_session draws from (a canary may narrow it to the kind its bug keeps).
    dirt: ClassVar[tuple[Dirt, ...]] = DIRT
    _expected_cache: ClassVar[dict[tuple, Any]] = {}

    requests = Bundle("requests")

    def __init__(self) -> None:
        super().__init__()
        env = self.env
        env.prepare_database()
        self.model = Model(max_size=self.options.max_size, max_lifetime=self.options.max_lifetime)
        self.schedule = FaultSchedule()
        env.last_schedule = self.schedule
        env.examples += 1
        self.nemesis = self._make_nemesis()
        self.target: Target = env.make_target(self.options)
        env.last_target = self.target.description
        self.handles: dict[int, TargetRequest] = {}
        self._probe_request: TargetRequest | None = None
        self._extra_probes: list[TargetRequest] = []
        self.limbo: list[TargetRequest] = []
        self.run_id = uuid.uuid4().hex[:8]
        self.tokens = 0
        self._admin: psycopg.Connection | None = None
        self.steps_taken: list[str] = []

    # -- plumbing ----------------------------------------------------------
    def _make_nemesis(self) -> Any:
        from chaos.faults.nemesis import Nemesis

        return Nemesis(
            self.env.proxy,
            self.env.server,
            schedule=self.schedule,
            server_faults=self.env.server_faults,
        )

    def _step(self, name: str) -> None:
        self.env.steps += 1
        self.steps_taken.append(name)

    def _effects(self) -> Effects:
        return combined_effects(self.model.active_faults.values())

    def _bound(self) -> float:
        return BLOCKED_STEP_BOUND if self._effects().blocks else STEP_BOUND

    def _outcome(self, what: str, outcome: Outcome | str, exc: BaseException | None = None) -> None:
        label = f"{what}: {outcome.value if isinstance(outcome, Outcome) else outcome}"
        if exc is not None:
            label += f" ({type(exc).__name__})"
        event(label)
        if exc is not None:
            note(f"{what} -> {outcome}: {type(exc).__name__}: {str(exc).strip()[:200]}")

    def expected(self, settings: SettingsValue) -> Any:
        # Keyed by the target's class too: one dict serves every machine and target.
        key = (type(self.target).__qualname__, self.target.cache_key, settings)
        cache = type(self)._expected_cache
        if key not in cache:
            cache[key] = self.target.expected_fingerprint(settings)
        return cache[key]

    def admin_query(self, sql: str, params: Any = None) -> list[tuple]:
        for attempt in range(3):
            try:
                if self._admin is None or self._admin.closed:
                    self._admin = self.env.admin()
                return self._admin.execute(sql, params).fetchall()
            except psycopg.OperationalError:
                with contextlib.suppress(Exception):
                    self._admin.close()  # type: ignore[union-attr]
                self._admin = None
                if attempt == 2:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def _handle(self, request: Request) -> TargetRequest:
        return self.handles[request.number]

    def _settle_stuck(self, request: Request, timeout: float) -> bool:
        """A stuck request: wait for its pending call; True when it is free again."""
        state = self.model.requests[request.number]
        if not state.stuck:
            return True
        try:
            self._handle(request).settle(timeout)
        except StepTimeout:
            return False
        except Exception as exc:  # the call it was stuck in ended in an error
            note(f"{request!r} unstuck with {type(exc).__name__}: {exc}")
        state.stuck = False
        self._resync(request)
        return True

    def _resync(self, request: Request) -> None:
        """After an uncertain outcome: ask the request whether it still holds a connection."""
        state = self.model.requests[request.number]
        holds = self._handle(request).holds_connection()
        if not holds:
            state.holding = None
        elif state.holding is None:
            state.holding = Holding(
                backend=None,
                pool_id=None,
                settings=self.model.settings,
                fault_epoch=self.model.fault_epoch,
                faults_active_at_checkout=True,
                age_at_checkout=0.0,
                checked_out_at=time.monotonic(),
                broken=True,
            )
        else:
            state.holding.broken = True

    def _failed(
        self,
        request: Request | None,
        what: str,
        exc: BaseException,
        *,
        wrote: bool = False,
    ) -> Outcome:
        """Judge an error (:func:`chaos.machines.judge.judge`): raise the invariant it
        breaks, or record it as allowed. A target that cannot run the step at all
        (``UnsupportedOption``: PgBouncer's statement mode and ``BEGIN``) is not judged:
        the run stops with it (the matrix cell reads ``na``, a test skips)."""
        if isinstance(exc, UnsupportedOption):
            raise exc
        verdict = judge(exc, self._judge_facts(request, what, wrote))
        if verdict.spends_dead_handout:
            self.model.dead_handouts_allowed -= 1
        verdict.raise_for(exc)
        self._outcome(what, verdict.outcome, exc)
        if verdict.resync:
            self._resync(request)  # type: ignore[arg-type]
        return verdict.outcome

    def _judge_facts(self, request: Request | None, what: str, wrote: bool) -> Facts:
        """What the model knows, for the judge."""
        state = self.model.requests.get(request.number) if request else None
        holding = state.holding if state else None
        current_pool = self.target.current_pool_id()
        return Facts(
            step=what,
            request=repr(request),
            wrote=wrote,
            effects=self._effects(),
            active_faults=tuple(self.model.active_faults.values()),
            tracked=state is not None,
            holding=holding is not None,
            exposed=holding is not None and holding.exposed(self.model),
            broken=holding is not None and holding.broken,
            lender=holding.pool_id if holding is not None else None,
            current_pool=current_pool,
            pool_exhausted=self.model.pool_exhausted(current_pool),
            recovery_pending=self.model.recovery_pending,
            health_checks=self.options.health_checks,
            dead_handouts_allowed=self.model.dead_handouts_allowed,
        )

    def _return_bound(self) -> float:
        return RETURN_BOUND if self.model.faults_active else STEP_BOUND

    def _slow_return(self, request: Request, what: str, bound: float) -> None:
        """A return did not end within its bound: under a fault that breaks the return
        deadline; with no fault at all, it is a hang."""
        if self.model.faults_active:
            raise SlowReturn(
                f"{what} of {request!r} did not return within {bound}s under "
                f"{list(self.model.active_faults.values())} (the return must be bounded)"
            )
        raise Hang(f"{what} of {request!r} did not return within {bound}s, no fault active")

    def _timed_out(self, request: Request, what: str) -> None:
        if self._effects().blocks:
            self.model.requests[request.number].stuck = True
            self._outcome(what, "stuck (blocking fault)")
            return
        raise Hang(f"{what} of {request!r} did not return within {STEP_BOUND}s, no blocking fault")

    # -- checkout and its invariants --------------------------------------
    def _checkout(self, request: Request) -> bool:
        """Make ``request`` hold a connection; run the checkout invariants. False if none."""
        state = self.model.requests[request.number]
        if state.stuck and not self._settle_stuck(request, 0.0):
            return False
        if state.holding is not None:
            return not state.holding.broken
        exhausted = self.model.pool_exhausted(self.target.current_pool_id())
        try:
            result = self._handle(request).checkout(self._bound())
        except StepTimeout:
            self._timed_out(request, "checkout")
            return False
        except Exception as exc:
            self._failed(request, "checkout", exc)
            return False
        self._outcome("checkout", Outcome.OK)
        self._check_checkout(request, result, exhausted)
        state.holding = Holding(
            backend=result.backend,
            pool_id=result.pool_id,
            settings=self.model.settings,
            fault_epoch=self.model.fault_epoch,
            faults_active_at_checkout=self.model.faults_active,
            age_at_checkout=result.age,
            checked_out_at=time.monotonic(),
        )
        return True

    def _check_checkout(self, request: Request, result: CheckoutResult, exhausted: bool) -> None:
        self.env.checks += 1
        settings = self.model.settings
        for other in self.model.holders():
            if other.holding.backend == result.backend and not other.holding.broken:
                raise DoubleCheckout(
                    f"{result.backend!r} handed to {request!r} while Request({other.number}) "
                    "still holds it"
                )
        check_session(
            result.fingerprint,
            self.expected(settings),
            context=(
                f"{request!r} checked out {result.backend!r}, settings in force {settings!r}; "
                "its session differs from a freshly configured one"
            ),
        )
        if result.backend in self.model.retired:
            raise LifetimeNotEnforced(
                f"{result.backend!r} was returned older than max_lifetime="
                f"{self.options.max_lifetime}s and handed out again (age now {result.age:.2f}s)"
            )
        if exhausted and not self.model.faults_active and not self.model.recovery_pending:
            raise PoolOutOfBounds(
                f"{request!r} got a connection although requests hold all "
                f"{self.model.max_size} connections of the current pool"
            )

    # -- the probe: a checkout by a request of the machine's own ----------------
    def _probe(self, why: str, recovery_bound: float | None = None) -> int:
        """Check out, check, give back; with ``recovery_bound``, retry until it passes.

        Run after every return and settings change (the next checkout must be
        clean and configured for the settings in force) and after every heal
        (checkouts must work again within the bound). Returns the attempts made.
        """
        if self._probe_request is None:
            self._probe_request = self.target.open_request(PROBE)
        probe = self._probe_request
        deadline = time.monotonic() + (recovery_bound or 0.0)
        attempts = 0
        while True:
            attempts += 1
            exhausted = self.model.pool_exhausted(self.target.current_pool_id())
            try:
                result = probe.checkout(STEP_BOUND)
            except Exception as exc:
                if is_pool_timeout(exc) and (exhausted or recovery_bound is None):
                    self._outcome("probe", Outcome.FAIL, exc)
                    return attempts  # every connection is held: nothing to prove
                # The failed checkout may have left a dead connection in the probe's
                # wrapper (health checks off): give it back before trying again.
                with contextlib.suppress(Exception):
                    probe.give_back(RETURN_BOUND)
                if recovery_bound is None:
                    self._failed(Request(PROBE), "checkout", exc)
                    return attempts
                if not is_pool_timeout(exc):
                    self._failed(Request(PROBE), "checkout", exc)
                if time.monotonic() > deadline:
                    raise NoRecoveryAfterHeal(
                        f"no checkout succeeded within {recovery_bound}s {why}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                time.sleep(0.05)
                continue
            try:
                self._check_checkout(Request(PROBE), result, exhausted)
            finally:
                with contextlib.suppress(Exception):
                    probe.give_back(STEP_BOUND)
            return attempts

    def _probe_after(self, why: str) -> None:
        """After a return or a settings change, EVERY idle pooled connection must be clean
        and configured, not only the one the next checkout gets: psycopg_pool hands out
        its oldest idle connection first, so the one just returned would wait its turn.
        The extra probes hold the older ones while the probe checks the newest."""
        if self.model.faults_active or self.model.recovery_pending:
            return  # the recovery probe after the heal does it
        idle = int(self.target.stats().get("pool_available", 1) or 1)
        held: list[TargetRequest] = []
        try:
            for number in range(1, idle):
                probe = self._extra_probe(number)
                exhausted = self.model.pool_exhausted(self.target.current_pool_id())
                try:
                    result = probe.checkout(STEP_BOUND)
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        probe.give_back(RETURN_BOUND)
                    if is_pool_timeout(exc):
                        break  # the pool shrank meanwhile (max_lifetime, max_idle): no more idle
                    self._failed(Request(PROBE), "checkout", exc)
                    break
                held.append(probe)
                self._check_checkout(Request(PROBE), result, exhausted)
            self._probe(why)
        finally:
            for probe in held:
                with contextlib.suppress(Exception):
                    probe.give_back(STEP_BOUND)

    def _extra_probe(self, number: int) -> TargetRequest:
        while len(self._extra_probes) < number:
            self._extra_probes.append(self.target.open_request(-len(self._extra_probes) - 1))
        return self._extra_probes[number - 1]

    # -- rules: requests ---------------------------------------------------
    @initialize(target=requests, settings=machine_settings_values)
    def start(self, settings: SettingsValue) -> Request:
        """Start from any settings value, with one request open (rules always have one)."""
        self._change_settings(settings, None)
        return self.open_request()

    @precondition(lambda self: len(self.model.requests) < self.max_requests)
    @rule(target=requests)
    def open_request(self) -> Request:
        self._step("open_request")
        number = self.model.open_request()
        self.handles[number] = self.target.open_request(number)
        return Request(number)

    @precondition(lambda self: len(self.model.requests) > 1)
    @rule(request=consumes(requests))
    def finish_request(self, request: Request) -> None:
        """request_finished: the connection goes back; the request's thread ends."""
        self._step(f"finish {request!r}")
        state = self.model.requests[request.number]
        if state.stuck and not self._settle_stuck(request, 0.0):
            # Still blocked: forget it now (preconditions must not depend on timing);
            # teardown finishes it once the heal has unblocked it.
            self.limbo.append(self.handles.pop(request.number))
            del self.model.requests[request.number]
            return
        holding = state.holding
        bound = self._return_bound()
        try:
            self._handle(request).finish(bound)
        except StepTimeout:
            self._slow_return(request, "finish", bound)
        except Exception as exc:
            self._failed(request, "finish", exc)
        self._returned(holding)
        del self.model.requests[request.number]
        self.handles.pop(request.number, None)
        if holding is not None:
            self._probe_after(f"after {request!r} finished")

    @rule(request=requests)
    def checkout(self, request: Request) -> None:
        self._step(f"checkout {request!r}")
        self._checkout(request)

    @rule(request=requests)
    def give_back(self, request: Request) -> None:
        """The wrapper's close(): return the connection, keep the request going."""
        self._step(f"give_back {request!r}")
        state = self.model.requests[request.number]
        if state.stuck and not self._settle_stuck(request, 0.0):
            return
        holding = state.holding
        if holding is None:
            return
        bound = self._return_bound()
        try:
            self._handle(request).give_back(bound)
        except StepTimeout:
            self._slow_return(request, "give_back", bound)
        except Exception as exc:
            self._failed(request, "give_back", exc)
        self._returned(holding)
        state.holding = None
        self._probe_after(f"after {request!r} gave its connection back")

    def _returned(self, holding: Holding | None) -> None:
        if holding is None:
            return
        self.model.abandoned_tokens.extend(holding.uncommitted_tokens)
        if holding.backend is not None and not holding.broken:
            age = holding.age_at_checkout + (time.monotonic() - holding.checked_out_at)
            if age > self.options.max_lifetime + LIFETIME_SLACK:
                self.model.retired.add(holding.backend)

    def _on_connection(
        self, request: Request, what: str, fn: Callable[[TargetRequest, float], Any], **kw: Any
    ) -> tuple[Outcome, Any]:
        if not self._checkout(request):
            return Outcome.FAIL, None
        try:
            result = fn(self._handle(request), self._bound())
        except StepTimeout:
            self._timed_out(request, what)
            return Outcome.INFO, None
        except Exception as exc:
            return self._failed(request, what, exc, **kw), exc
        self._outcome(what, Outcome.OK)
        return Outcome.OK, result

    @rule(
        request=requests,
        dirt=st.runner().flatmap(lambda machine: st.sampled_from(machine.dirt)),
        then_give_back=st.booleans(),
    )
    def dirty_session(self, request: Request, dirt: Dirt, then_give_back: bool) -> None:
        """User SQL leaving session state behind (GUC, role, temp table, lock, LISTEN, ...)."""
        self._step(f"dirty {request!r} {dirt!r}")
        state = self.model.requests[request.number]
        holding = state.holding
        if holding is not None and (holding.in_transaction or holding.tx_failed):
            # Inside a transaction: the dirt would be rolled back or refused; keep it simple.
            if then_give_back:
                self.give_back(request)
            return
        outcome, _ = self._on_connection(request, "dirty", lambda h, b: h.run(dirt.apply, b))
        holding = state.holding
        if outcome is Outcome.OK and holding is not None:
            attr = getattr(dirt, "attr", None)
            if attr == "autocommit":
                holding.autocommit = bool(dirt.value)
            elif attr == "read_only":
                holding.read_only = bool(dirt.value)
            elif attr is None and not holding.autocommit:
                holding.in_transaction = True  # psycopg began one implicitly
        if then_give_back:
            self.give_back(request)

    @rule(request=requests)
    def dirty_everything(self, request: Request) -> None:
        """Every kind of dirt on one session (server side first, client attributes last, so
        none refuses the next), then the connection goes back: whatever the reset forgets
        shows at the next checkout. One step reaches every kind, where drawing one of two
        dozen kinds at a time leaves the rarer ones unexamined in a whole chaos run."""
        self._step(f"dirty everything on {request!r}")
        state = self.model.requests[request.number]
        if not self._checkout(request):
            return  # no connection (every one held, or a fault): nothing to dirty
        ordered = sorted(self.dirt, key=lambda dirt: getattr(dirt, "attr", None) is not None)
        for dirt in ordered:
            holding = state.holding
            if state.stuck or holding is None or holding.broken:
                break
            self.dirty_session(request, dirt, then_give_back=False)
        self.give_back(request)

    @rule(
        request=requests,
        how=st.sampled_from(["begin", "autocommit_off"]),
        then_give_back=st.booleans(),
    )
    def leave_transaction_open(self, request: Request, how: str, then_give_back: bool) -> None:
        """Write in a transaction and never commit: the reset must roll it back."""
        self._step(f"open transaction {request!r} ({how})")
        state = self.model.requests[request.number]
        if state.holding is not None and (state.holding.in_transaction or state.holding.tx_failed):
            if then_give_back:
                self.give_back(request)
            return
        self.tokens += 1
        token = f"{self.run_id}-{self.tokens}"

        def write(session: Session) -> None:
            session.begin(how)
            session.execute(f"INSERT INTO {PHANTOM_TABLE} (token) VALUES (%s)", [token])

        if not self._checkout(request):
            return
        holding = state.holding
        assert holding is not None
        if holding.read_only:
            # The user made the session read-only: psycopg applies it to the transactions
            # it begins (autocommit off), not to a raw BEGIN. Either outcome is fine.
            try:
                self._handle(request).run(write, self._bound())
            except StepTimeout:
                self._timed_out(request, "write_uncommitted")
                return
            except Exception as exc:
                if isinstance(root_cause(exc), pgerrors.ReadOnlySqlTransaction):
                    holding.in_transaction = holding.tx_failed = True
                    self._outcome("write_uncommitted", "refused (read only)")
                    return
                self._failed(request, "write_uncommitted", exc, wrote=True)
                return
            holding.uncommitted_tokens.append(token)
            holding.in_transaction = True
        else:
            outcome, _ = self._on_connection(
                request, "write_uncommitted", lambda h, b: h.run(write, b), wrote=True
            )
            if outcome is not Outcome.FAIL:
                # Uncertain too: the INSERT may have run; it must never become visible.
                holding.uncommitted_tokens.append(token)
                holding.in_transaction = True
        if then_give_back:
            self.give_back(request)

    @rule(request=requests)
    def fail_transaction(self, request: Request) -> None:
        """Leave a failed transaction (an error inside BEGIN) for the reset to clean up."""
        self._step(f"fail transaction {request!r}")
        state = self.model.requests[request.number]
        if not self._checkout(request):
            return
        holding = state.holding
        assert holding is not None
        if holding.in_transaction or holding.tx_failed:
            return

        def fail(session: Session) -> None:
            session.begin("begin")
            try:
                session.execute("SELECT 1 / 0")
            except Exception as exc:  # Django wraps it in django.db.utils.DataError
                if isinstance(root_cause(exc), pgerrors.DivisionByZero):
                    return
                raise
            raise AssertionError("SELECT 1 / 0 did not fail")

        outcome, _ = self._on_connection(request, "fail_transaction", lambda h, b: h.run(fail, b))
        if outcome is Outcome.OK:
            holding.in_transaction = holding.tx_failed = True

    # -- rules: settings and pool maintenance --------------------------------
    @rule(settings=machine_settings_values)
    def change_settings(self, settings: SettingsValue) -> None:
        """update_settings + ensure_timezone from a thread holding no connection."""
        self._change_settings(settings, None)

    @rule(request=requests, settings=machine_settings_values)
    def change_settings_in_request(self, request: Request, settings: SettingsValue) -> None:
        """The same from a request's thread (its wrapper may hold a connection)."""
        state = self.model.requests[request.number]
        if state.stuck:
            return
        self._change_settings(settings, request)

    def _change_settings(self, settings: SettingsValue, request: Request | None) -> None:
        self._step(f"change settings {settings!r} via {request!r}")
        via = self._handle(request) if request is not None else None
        holds = request is not None and self.model.requests[request.number].holding is not None
        # Holding a connection, ensure_timezone() reconfigures it: a query, which a blocking
        # fault may hold up like any other. Otherwise it only replaces the pool: bounded.
        bound = self._bound() if holds else self._reconfigure_bound()
        try:
            self.target.change_settings(settings, via, bound)
        except StepTimeout:
            if holds and request is not None:
                self._timed_out(request, "change_settings")
            else:
                self._slow_reconfiguration(f"change_settings via {request!r}", bound)
        except Exception as exc:
            if isinstance(root_cause(exc), pgerrors.InFailedSqlTransaction):
                # ensure_timezone reconfigures the held connection: refused in a failed
                # transaction.
                state = self.model.requests[request.number] if request is not None else None
                if state is None or state.holding is None or not state.holding.tx_failed:
                    self._failed(request, "change_settings", exc)
                self._outcome("change_settings", "refused in failed transaction", exc)
            else:
                self._failed(request, "change_settings", exc)
        self.model.settings = settings
        self._probe_after(f"after the settings changed to {settings!r}")
        if request is not None and self.model.requests[request.number].holding is not None:
            # ensure_timezone reconfigured the held connection: it now differs from a fresh one
            # only in ways the reset undoes; nothing to record.
            pass

    def _reconfigure_bound(self) -> float:
        return RECONFIGURE_BOUND if self.model.faults_active else STEP_BOUND

    def _slow_reconfiguration(self, what: str, bound: float) -> None:
        if self.model.faults_active:
            raise ReconfigurationHang(
                f"{what} did not return within {bound}s under "
                f"{list(self.model.active_faults.values())}: replacing or closing a pool "
                "must not wait for the network"
            )
        raise Hang(f"{what} did not return within {bound}s, no fault active")

    def _control(self, what: str, fn: Callable[[float], Any], *, bounded: bool) -> None:
        """A pool operation from a control thread (holding no connection).

        ``bounded``: it must end within RECONFIGURE_BOUND under any fault. Otherwise
        (psycopg_pool's own ``check()``, which probes idle connections without a
        deadline) a blocking fault may hold it up: the model records a stuck control
        call, which must come free once the fault is healed (see FaultRules._recover).
        """
        bound = self._reconfigure_bound() if bounded else self._bound()
        try:
            fn(bound)
        except StepTimeout:
            if bounded:
                self._slow_reconfiguration(what, bound)
            if not self._effects().blocks:
                raise Hang(f"{what} did not return within {bound}s, no blocking fault") from None
            self.model.control_stuck += 1
            self._outcome(what, "stuck (blocking fault)")
        except Exception as exc:
            self._failed(None, what, exc)

    @rule()
    def close_pool(self) -> None:
        self._step("close_pool")
        self._control("close_pool", self.target.close_pool, bounded=True)

    @rule()
    def check_pool(self) -> None:
        """pool.check(): discard broken and expired idle connections."""
        self._step("check_pool")
        self._control("check_pool", self.target.check_pool, bounded=False)

    # -- invariants ----------------------------------------------------------
    @invariant()
    def pool_within_bounds(self) -> None:
        self.env.checks += 1
        stats = self.target.stats()
        if not stats:
            return
        size = stats.get("pool_size", 0)
        available = stats.get("pool_available", 0)
        pool_max = stats.get("pool_max", self.options.max_size)
        if pool_max != self.options.max_size or size > pool_max or available > size:
            raise PoolOutOfBounds(f"pool stats out of bounds: {stats}")
        held = self.model.held_from(self.target.current_pool_id())
        if held > pool_max:
            raise PoolOutOfBounds(f"requests hold {held} connections of a pool of {pool_max}")

    @invariant()
    def no_phantom_commits(self) -> None:
        self.env.checks += 1
        tokens = self.model.abandoned_tokens
        if not tokens:
            return
        rows = self.admin_query(
            f"SELECT token FROM {PHANTOM_TABLE} WHERE token = ANY(%s)", [list(tokens)]
        )
        if rows:
            raise PhantomCommit(
                f"uncommitted writes became visible after their request returned the "
                f"connection: {sorted(r[0] for r in rows)}"
            )

    # -- teardown ------------------------------------------------------------
    def teardown(self) -> None:
        record_violation(self.env, sys.exc_info()[1], self.steps_taken)
        errors: list[str] = []
        with contextlib.suppress(Exception):
            self.nemesis.heal_all()
        if self._probe_request is not None:
            self.handles[PROBE] = self._probe_request
        for probe in self._extra_probes:
            self.handles[probe.number] = probe
        for handle in self.limbo:
            self.handles[handle.number + 1_000_000] = handle
        for number, handle in list(self.handles.items()):
            try:
                handle.finish(5.0)
            except Exception as exc:  # the run is over; what matters is releasing it
                errors.append(f"Request({number}): {type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            self.target.close()
        if self._admin is not None:
            with contextlib.suppress(Exception):
                if self.model.abandoned_tokens:
                    self._admin.execute(
                        f"DELETE FROM {PHANTOM_TABLE} WHERE token = ANY(%s)",
                        [list(self.model.abandoned_tokens)],
                    )
                self._admin.close()


class LifetimeRules:
    """Let time pass beyond a small max_lifetime (a rule, not a timer)."""

    model: Model
    options: TargetOptions

    @precondition(lambda self: self.options.max_lifetime <= 2.0)
    @rule(factor=st.sampled_from([0.5, 1.5, 2.0]))
    def let_time_pass(self, factor: float) -> None:
        """Idle time: pooled connections age."""
        self._step(f"sleep {factor} x max_lifetime")  # type: ignore[attr-defined]
        time.sleep(self.options.max_lifetime * factor)

    @precondition(lambda self: self.options.max_lifetime <= 2.0)
    @rule(request=PoolMachine.requests, factor=st.sampled_from([0.5, 1.5, 2.0]))
    def slow_request(self, request: Request, factor: float) -> None:
        """A request holds its connection past max_lifetime, then gives it back."""
        machine: PoolMachine = self  # type: ignore[assignment]
        machine._step(f"slow request {request!r} {factor} x max_lifetime")
        if not machine._checkout(request):
            return
        time.sleep(self.options.max_lifetime * factor)
        machine.give_back(request)


class PreparedRules:
    """Repeat queries so that psycopg prepares them (run with prepare_threshold set)."""

    repeated_queries: ClassVar[tuple[str, ...]] = REPEATED_QUERIES

    @precondition(lambda self: self.options.prepare_threshold is not None)
    @rule(
        request=PoolMachine.requests,
        query=st.runner().flatmap(lambda machine: st.sampled_from(machine.repeated_queries)),
        times=st.sampled_from([1, MAX_REPEATS]),
        rounds=st.sampled_from([0, 1, 2]),
    )
    def repeat_query(self, request: Request, query: str, times: int, rounds: int) -> None:
        """Run a hot query ``times`` times; with ``rounds``, give the connection back after
        each and check out again (the next request hitting the same endpoint)."""
        for _ in range(max(rounds, 1)):
            self._repeat(request, query, times)
            if rounds:
                self.give_back(request)  # type: ignore[attr-defined]

    def _repeat(self, request: Request, query: str, times: int) -> None:
        self._step(f"repeat {query!r} x{times} on {request!r}")  # type: ignore[attr-defined]
        params = [] if "%s" not in query else (["r"] if "relkind" in query else [1])

        def run(session: Session) -> None:
            for _ in range(times):
                session.execute(query, params)

        state = self.model.requests[request.number]  # type: ignore[attr-defined]
        if state.holding is not None and (state.holding.in_transaction or state.holding.tx_failed):
            return
        self._on_connection(  # type: ignore[attr-defined]
            request, "repeat_query", lambda h, b: h.run(run, b)
        )


#: The faults the machines draw from: printed as constructor calls.
NETWORK_FAULTS: tuple[Fault, ...] = (
    Latency(ms=30, jitter=10),
    ResetPeer(),
    Down(),
    HalfOpen(),
    TimedClose(timeout=500),
)
SERVER_FAULTS: tuple[Fault, ...] = (
    RestartFast(),
    RestartImmediate(),
    Crash(),
    TerminateBackends(),
)


class FaultRules:
    """Heal, and the recovery bound after it."""

    model: Model

    def _inject(self, fault: Fault) -> None:
        self._step(f"inject {fault!r}")  # type: ignore[attr-defined]
        self.nemesis.apply(fault)  # type: ignore[attr-defined]
        self.env.faults_injected += 1  # type: ignore[attr-defined]
        self.model.fault_applied(fault.name, fault, lasting=not fault.effects.instantaneous)
        event(f"fault: {fault.name}")
        if fault.effects.instantaneous:
            self._recover("after " + repr(fault))

    @precondition(lambda self: self.model.faults_active or self.model.recovery_pending)
    @rule()
    def heal(self) -> None:
        self._step("heal")  # type: ignore[attr-defined]
        self.nemesis.heal_all()  # type: ignore[attr-defined]
        self.model.faults_healed()
        self._recover("after heal")

    def _recover(self, why: str) -> None:
        """Checkouts must work again within RECOVERY_BOUND; stuck requests must come free."""
        machine: PoolMachine = self  # type: ignore[assignment]
        if self.model.faults_active:
            return
        time.sleep(0.05)  # let the proxy finish closing what the heal broke
        for number, state in list(self.model.requests.items()):
            if state.stuck and not machine._settle_stuck(Request(number), STEP_BOUND):
                raise Hang(f"Request({number}) still blocked {STEP_BOUND}s after {why}")
        if self.model.control_stuck:
            if not machine.target.settle_control(STEP_BOUND):
                raise Hang(f"a pool operation still blocked {STEP_BOUND}s after {why}")
            self.model.control_stuck = 0
        attempts = machine._probe(why, recovery_bound=RECOVERY_BOUND)
        event(f"recovery attempts: {min(attempts, 3)}{'+' if attempts > 3 else ''}")
        self.model.recovered()


class NetworkFaults(FaultRules):
    """Faults through the proxy: latency, reset_peer, down, half_open, timed_close."""

    network_faults: ClassVar[tuple[Fault, ...]] = NETWORK_FAULTS

    @precondition(lambda self: len(self.model.active_faults) < 2)
    @rule(
        fault=st.runner().flatmap(lambda machine: st.sampled_from(machine.network_faults)),
        blip=st.booleans(),
    )
    def inject_network_fault(self, fault: Fault, blip: bool) -> None:
        """A fault that lasts until a heal; a ``blip`` is healed at once (one step long)."""
        if fault.name in self.model.active_faults:
            return
        self._inject(fault)
        if blip:
            self.heal()

    @precondition(lambda self: not self.model.faults_active)
    @rule(
        request=PoolMachine.requests,
        fault=st.runner().flatmap(lambda machine: st.sampled_from(machine.network_faults)),
        how=st.sampled_from(["begin", "autocommit_off", "idle"]),
    )
    def return_over_bad_link(self, request: Request, fault: Fault, how: str) -> None:
        """A request ends while its link fails: a transaction left open (or none), then the
        fault, then the return - which must stay bounded (SlowReturn)."""
        machine: PoolMachine = self  # type: ignore[assignment]
        if how == "idle":
            machine.checkout(request)
        else:
            machine.leave_transaction_open(request, how, then_give_back=False)
        self._inject(fault)
        machine.give_back(request)

    @precondition(lambda self: not self.model.faults_active)
    @rule(
        fault=st.runner().flatmap(lambda machine: st.sampled_from(machine.network_faults)),
        settings=machine_settings_values,
        how=st.sampled_from(["change_settings", "close_pool"]),
    )
    def reconfigure_over_bad_link(self, fault: Fault, settings: SettingsValue, how: str) -> None:
        """The pool is replaced or closed while the link fails: ensure_timezone() and
        close_pool() must stay bounded (ReconfigurationHang)."""
        machine: PoolMachine = self  # type: ignore[assignment]
        self._inject(fault)
        if how == "close_pool":
            machine.close_pool()
        else:
            machine.change_settings(settings)


class ServerFaults(FaultRules):
    """Server faults: fast and immediate restarts, a crash, terminated backends."""

    server_faults: ClassVar[tuple[Fault, ...]] = SERVER_FAULTS

    @precondition(lambda self: self.env.server_faults)
    @rule(fault=st.runner().flatmap(lambda machine: st.sampled_from(machine.server_faults)))
    def inject_server_fault(self, fault: Fault) -> None:
        self._inject(fault)


def machine_for(
    env: MachineEnv,
    *mixins: type,
    options: TargetOptions | None = None,
    name: str | None = None,
    max_requests: int | None = None,
    roles: tuple[str | None, ...] | None = None,
    focus: tuple[str, ...] | None = None,
    **class_attributes: Any,
) -> type[PoolMachine]:
    """A machine class bound to ``env`` with the given rule mixins and target options.

    ``focus`` keeps only the named rules (initialize rules and invariants always
    stay): the others are shadowed by their plain, undecorated functions, which
    Hypothesis does not collect. Canaries use it to spend their small budget on
    the rules that can reach their bug.

    The class keeps its plain ``name`` (Hypothesis prints ``state = <name>()``, and
    the printed program pastes into a test), but its ``__qualname__`` and
    ``database_key`` name the target and a short hash of everything else it was
    made from (mixins, options, class attributes): see :func:`machine_key`.
    """
    attrs: dict[str, Any] = {"env": env, "options": options or TargetOptions()}
    if max_requests is not None:
        attrs["max_requests"] = max_requests
    if roles is not None:
        attrs["roles"] = roles
    attrs.update(class_attributes)
    if focus is not None:
        for base in (*mixins, PoolMachine):
            for attr, value in vars(base).items():
                if hasattr(value, "hypothesis_stateful_rule") and attr not in focus:
                    plain = value
                    while hasattr(plain, "hypothesis_stateful_rule"):
                        plain = plain.__wrapped__  # past @precondition and @rule
                    attrs.setdefault(attr, plain)
    cls_name = name or "".join(m.__name__ for m in mixins) + "PoolMachine"
    key = machine_key(env, cls_name, mixins, attrs)
    attrs.update(__qualname__=key, database_key=key)
    return type(cls_name, (*mixins, PoolMachine), attrs)


def machine_key(env: MachineEnv, name: str, mixins: tuple[type, ...], attrs: dict) -> str:
    """``name[target:hash]``: the machine's identity in the Hypothesis example database.

    Hypothesis keys a state machine's stored failures by a digest of the class: its
    source when ``inspect`` finds a class of that qualified name in its module, else
    its ``__name__`` alone (module and ``__qualname__`` do not count). Every machine
    named ``PoolMachine`` therefore shared one key whatever its target and options,
    and a run replayed a sibling's stored failure first (two runs ended in 0.09 s on
    another machine's example). The key is stable across runs (no ids, no addresses),
    so a rerun of the *same* machine still replays its own last failure first;
    :func:`chaos.machines.runner.run_machine_as_test` keeps each key's examples apart.
    """
    target = env.target_name or getattr(env.make_target, "__qualname__", "target")
    made_of = _stable((mixins, {k: v for k, v in sorted(attrs.items()) if k != "env"}))
    digest = hashlib.sha256(made_of.encode()).hexdigest()[:10]
    return f"{name}[{target}:{digest}]"


def _stable(value: Any) -> str:
    """A text of ``value`` that is the same in every process (no ids, no addresses)."""
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    if dataclasses.is_dataclass(value):
        inner = ", ".join(
            f"{f.name}={_stable(getattr(value, f.name))}" for f in dataclasses.fields(value)
        )
        return f"{type(value).__qualname__}({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_stable(k)}: {_stable(v)}" for k, v in value.items()) + "}"
    if isinstance(value, set | frozenset):
        return "{" + ", ".join(sorted(map(_stable, value))) + "}"
    if isinstance(value, list | tuple):
        return "(" + ", ".join(map(_stable, value)) + ")"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))
