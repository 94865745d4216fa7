"""One exception class per invariant, so a canary can assert *which* guarantee broke.

Every class derives from :class:`InvariantViolation` (an ``AssertionError``, so
Hypothesis and pytest treat it as a test failure, not an error in the harness).
Hypothesis shrinks towards the same exception type and location, so a canary
that expects :class:`StaleTimezone` is not satisfied by an unrelated failure.
"""

from __future__ import annotations


class InvariantViolation(AssertionError):
    """A guarantee of the pooled backend was broken."""


class SessionLeak(InvariantViolation):
    """A checkout showed session state left behind by an earlier request."""


class WrongConfiguration(InvariantViolation):
    """A checkout was not configured for the settings in force now."""


class StaleTimezone(WrongConfiguration):
    """A checkout showed a TimeZone other than the one the settings now in force ask for."""


class StaleRole(WrongConfiguration):
    """A checkout ran as a role other than the configured ``assume_role``."""


class UnconfiguredConnection(WrongConfiguration):
    """A pooled connection was handed out without the configuration (no ``SET ROLE``)."""


class PhantomCommit(InvariantViolation):
    """Writes left uncommitted by a request that returned its connection became visible."""


class DoubleCheckout(InvariantViolation):
    """One backend (pid + start time) was held by two requests at once."""


class PoolOutOfBounds(InvariantViolation):
    """The pool's statistics or the requests' holdings exceed the configured bounds."""


class NoRecoveryAfterHeal(InvariantViolation):
    """After every fault was healed, no checkout succeeded within the recovery bound."""


class DeadConnectionHandedOut(InvariantViolation):
    """With health checks on, a caller got a connection that had died while idle in the pool."""


class WrongPool(InvariantViolation):
    """Returning a connection failed or leaked because it went to a pool it did not come from."""


class LifetimeNotEnforced(InvariantViolation):
    """A connection returned after ``max_lifetime`` was handed out again."""


class PreparedStatementsBroken(InvariantViolation):
    """psycopg's prepared-statement cache went stale after the reset (``_pg3_N`` missing)."""


class UnexplainedError(InvariantViolation):
    """An operation failed although the model says no active or recent fault could cause it."""


class Hang(InvariantViolation):
    """An operation did not finish within the step bound (timeouts not configured?)."""


class SlowReturn(Hang):
    """Under a fault, giving a connection back (rollback, reset) outlasted the return bound."""


class ReconfigurationHang(Hang):
    """Under a fault, ``ensure_timezone()`` or ``close_pool()`` outlasted the reconfiguration
    bound: replacing a pool waited for the network (or for its workers stuck in a connect)."""


ALL_VIOLATIONS: tuple[type[InvariantViolation], ...] = (
    SessionLeak,
    WrongConfiguration,
    StaleTimezone,
    StaleRole,
    UnconfiguredConnection,
    PhantomCommit,
    DoubleCheckout,
    PoolOutOfBounds,
    NoRecoveryAfterHeal,
    DeadConnectionHandedOut,
    WrongPool,
    LifetimeNotEnforced,
    PreparedStatementsBroken,
    UnexplainedError,
    Hang,
    SlowReturn,
    ReconfigurationHang,
)


class OrphanedSessions(InvariantViolation):
    """After settling, the server holds more of the target's sessions than its live pools can.

    A pool replaced on reconfiguration (zone change, ``close_pool``) that is
    forgotten but not closed keeps its idle sessions and worker threads.
    """


class CheckFailureRaised(InvariantViolation):
    """A failing user ``check`` reached the caller instead of the connection being discarded."""


class FailedCheckHandedOut(InvariantViolation):
    """A connection that failed the user ``check`` was handed out (again)."""


ALL_VIOLATIONS = (*ALL_VIOLATIONS, OrphanedSessions, CheckFailureRaised, FailedCheckHandedOut)


class ChildTouchedParentSessions(InvariantViolation):
    """A forked child's use of what it inherited reached a session of its parent's.

    Closing an inherited psycopg connection in a child sends Terminate on the socket the
    parent still uses (its session ends); using one runs the child's statements in it.
    """


ALL_VIOLATIONS = (*ALL_VIOLATIONS, ChildTouchedParentSessions)
