"""Canaries: each invariant must catch the broken backend made to break it.

Each test runs a machine against a deliberately broken variant (from
plain_pool.variants, or tests/properties/broken.py where the package has
none) and asserts that Hypothesis FINDS the failure, with the invariant's own
exception, within the loaded profile's budget (chaos.hypothesis_profiles.budget()).
A canary that stops finding its bug fails the build: the check it guards has
gone blind.

No example database (a stored failure would make finding free) and no
shrinking (finding is the point; shrinking costs minutes against real servers).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from broken import (
    IgnoresMaxSize,
    KeepsStatementCache,
    NeverExpires,
    SharesConnectionAcrossThreads,
)
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from chaos.faults.network import Down, HalfOpen
from chaos.machines.check_rules import ScriptedCheck, UserCheckRules
from chaos.machines.dirt import ClientAttr
from chaos.hypothesis_profiles import budget
from chaos.machines.errors import (
    CheckFailureRaised,
    ChildTouchedParentSessions,
    DeadConnectionHandedOut,
    DoubleCheckout,
    FailedCheckHandedOut,
    InvariantViolation,
    LifetimeNotEnforced,
    OrphanedSessions,
    PhantomCommit,
    PoolOutOfBounds,
    PreparedStatementsBroken,
    SessionLeak,
    StaleTimezone,
    UnconfiguredConnection,
    WrongPool,
)
from chaos.machines.fork_rules import ForkRules
from chaos.machines.orphan_rules import OrphanRules
from chaos.machines.pool_machine import (
    LifetimeRules,
    MachineEnv,
    NetworkFaults,
    PreparedRules,
    machine_for,
)
from chaos.targets.base import TargetOptions

pytestmark = pytest.mark.canary


ONE_CONNECTION = TargetOptions(max_size=1, timeout=0.5)


@dataclass(frozen=True)
class Canary:
    """A broken backend, the invariant that must catch it, and the rules it needs."""

    variant: str | type
    expected: type[InvariantViolation]
    mixins: tuple[type, ...] = ()
    #: One connection by default: every checkout reuses the session the last request left.
    options: TargetOptions = ONE_CONNECTION
    roles: tuple[str | None, ...] = (None,)
    needs_proxy: bool = False
    #: Other machine class attributes (e.g. a narrower fault choice).
    narrow: tuple[tuple[str, object], ...] = ()
    #: The rules that reach the bug (None: all of them). The invariants are all kept: the
    #: canary proves the check catches the bug, the main machines prove they get there.
    focus: tuple[str, ...] | None = None
    max_requests: int = 2

    def machine(self, env: MachineEnv) -> type:
        name = self.variant if isinstance(self.variant, str) else self.variant.__name__
        options = TargetOptions(**{**self.options.__dict__, "variant": self.variant})
        return machine_for(
            env,
            *self.mixins,
            options=options,
            roles=self.roles,
            max_requests=self.max_requests,
            focus=self.focus,
            name=f"{name}Machine",
            **dict(self.narrow),
        )


CANARIES = {
    "SessionLeak": Canary("NoResetOnReturn", SessionLeak, focus=("dirty_session",)),
    # Client-side state: a reset that forgets only the notice handlers a request added.
    # The explicit program: tests/properties/test_client_state_programs.py.
    "SessionLeakNoticeHandlers": Canary(
        "KeepsNoticeHandlers",
        SessionLeak,
        narrow=(("dirt", (ClientAttr("notice_handler", "ignore_notice"),)),),
        focus=("dirty_session",),
    ),
    "StaleTimezone": Canary(
        "PoolNotClosedOnTimezoneChange", StaleTimezone, focus=("change_settings",)
    ),
    "DeadConnectionHandedOut": Canary(
        "NoHealthCheck",
        DeadConnectionHandedOut,
        mixins=(NetworkFaults,),
        needs_proxy=True,
        # Faults that kill idle pooled connections (down: at once; half_open: on heal).
        narrow=(("network_faults", (Down(), HalfOpen())),),
        focus=("inject_network_fault", "heal"),
    ),
    "WrongPool": Canary("PutconnToCurrentPool", WrongPool, focus=("dirty_session", "close_pool")),
    "UnconfiguredConnection": Canary(
        "ConfigureOnlyWhenNotPooled", UnconfiguredConnection, roles=("chaos_app",)
    ),
    "PhantomCommit": Canary("CommitOnReturn", PhantomCommit, focus=("leave_transaction_open",)),
    "DoubleCheckout": Canary(
        SharesConnectionAcrossThreads,
        DoubleCheckout,
        options=TargetOptions(max_size=2, timeout=0.5),
        focus=("open_request", "checkout"),
    ),
    "LifetimeNotEnforced": Canary(
        NeverExpires,
        LifetimeNotEnforced,
        mixins=(LifetimeRules,),
        options=TargetOptions(max_size=1, timeout=0.5, max_lifetime=0.5),
        focus=("slow_request",),
    ),
    "PreparedStatementsBroken": Canary(
        KeepsStatementCache,
        PreparedStatementsBroken,
        mixins=(PreparedRules,),
        options=TargetOptions(
            max_size=1, timeout=0.5, prepare_threshold=5, server_side_binding=True
        ),
        narrow=(("repeated_queries", ("SELECT 1",)),),
        focus=("repeat_query",),
    ),
    "PoolOutOfBounds": Canary(IgnoresMaxSize, PoolOutOfBounds),
    # No fork detection: a child uses the parent's pool, whose idle connections are the
    # parent's sessions. The explicit programs: tests/properties/test_fork_programs.py.
    "ChildTouchedParentSessions": Canary(
        "SharedAcrossFork", ChildTouchedParentSessions, mixins=(ForkRules,), focus=("fork_child",)
    ),
    # A pool replaced on a zone change or close_pool, forgotten but not closed.
    # The explicit programs: tests/properties/test_orphaned_sessions.py.
    "OrphanedSessions": Canary(
        "PoolForgottenNotClosed",
        OrphanedSessions,
        mixins=(OrphanRules,),
        focus=("change_settings", "close_pool"),
    ),
    # A user check raising anything but psycopg.Error, and one closing the connection and
    # returning. The explicit programs: tests/properties/test_user_check.py.
    "CheckFailureRaised": Canary(
        "CatchesOnlyPsycopgErrorsInCheck",
        CheckFailureRaised,
        mixins=(UserCheckRules,),
        options=TargetOptions(max_size=1, timeout=0.5, user_check=ScriptedCheck),
        # The failures this variant lets through (it handles psycopg errors and closing).
        narrow=(("check_hows", ("value_error", "runtime_error", "close_and_raise")),),
        focus=("fail_next_checks",),
    ),
    "FailedCheckHandedOut": Canary(
        "TrustsUserCheck",
        FailedCheckHandedOut,
        mixins=(UserCheckRules,),
        options=TargetOptions(max_size=1, timeout=0.5, user_check=ScriptedCheck),
        narrow=(("check_hows", ("close_and_return",)),),
        focus=("fail_next_checks",),
    ),
}


def find(machine: type, expected: type[InvariantViolation]) -> tuple[BaseException, int]:
    """Run ``machine`` within the profile's budget; return what it raised and examples used."""
    env: MachineEnv = machine.env
    before = env.examples
    chosen = settings(
        settings(),
        database=None,
        phases=[Phase.generate],
        report_multiple_bugs=False,
        print_blob=False,
        **budget(),
    )
    with pytest.raises(InvariantViolation) as raised:
        run_state_machine_as_test(machine, settings=chosen)
    # The last example is Hypothesis replaying the failure once more.
    return raised.value, env.examples - before - 1


@pytest.mark.parametrize("invariant", list(CANARIES))
def test_canary_is_found(invariant, machine_env, record_property):
    canary = CANARIES[invariant]
    if canary.needs_proxy and machine_env.proxy is None:
        pytest.skip("needs the fault proxy")
    error, examples = find(canary.machine(machine_env), canary.expected)
    record_property("examples_to_find", examples)
    print(f"{invariant}: found by {type(error).__name__} after {examples} example(s)")
    assert isinstance(error, canary.expected), (
        f"{canary.variant} should break {canary.expected.__name__}, "
        f"but the machine raised {type(error).__name__}: {error}"
    )
