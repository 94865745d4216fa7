"""The orphaned-sessions invariant: no more server sessions than the live pools account for.

Why: a pool replaced on reconfiguration (a zone change, ``close_pool``) that
is forgotten but not closed keeps its idle sessions and worker threads. No
other check sees it: the replacement pool works and every checkout is clean;
only the server fills up towards ``max_connections`` and threads pile up.

How: after every step, count the server's client backends that carry the
target's ``application_name`` (unique per target, so the machine's admin
connection, the expected-fingerprint connections and other tests' sessions on
a shared server are not counted) and compare with
:meth:`~chaos.targets.base.Target.session_capacity`: the sizes of the pools
still registered plus the connections requests hold from other pools.

Sessions of a just-closed pool leave asynchronously (the server notices the
disconnect a few ms later; a discarded connection and its replacement overlap
too), so an excess is measured again until it is gone or
:data:`ORPHAN_WAIT` has passed: only an excess that lasts the whole wait is a
violation, and a passing measure returns at once (no fixed sleep). Skipped
while a fault is active or recovery is pending, and while a request or a
pool operation is stuck (its call may still change what it holds).

Usage: ``machine_for(env, OrphanRules, ...)``.
"""

from __future__ import annotations

import time
from typing import Any

from hypothesis.stateful import invariant

from chaos.machines.errors import OrphanedSessions
from chaos.machines.model import Model

#: How long an excess of sessions may last before it is a violation (seconds).
ORPHAN_WAIT = 2.0
#: Between two measures of an excess.
ORPHAN_POLL = 0.02

_COUNT = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE application_name = %s AND backend_type = 'client backend'"
)
_LIST = (
    "SELECT pid, state, backend_start, left(query, 60) FROM pg_stat_activity"
    " WHERE application_name = %s AND backend_type = 'client backend' ORDER BY backend_start"
)


def unsettled(model: Model) -> str | None:
    """Why the session count cannot be judged now, or None when it can."""
    if model.faults_active or model.recovery_pending:
        return "faults"
    if any(state.stuck for state in model.requests.values()):
        return "stuck request"
    if getattr(model, "control_stuck", 0):
        return "stuck pool operation"
    return None


class OrphanRules:
    """Adds the :class:`OrphanedSessions` invariant (no rules: the machine's own
    settings changes, ``close_pool`` and role changes are the paths it watches)."""

    model: Model
    target: Any

    @invariant()
    def no_orphaned_sessions(self) -> None:
        self.env.checks += 1  # type: ignore[attr-defined]
        name = getattr(self.target, "application_name", None)
        if name is None or unsettled(self.model):
            return
        deadline = time.monotonic() + ORPHAN_WAIT
        measures = 0
        while True:
            capacity = self.target.session_capacity()
            if capacity is None:
                return
            in_server = int(self.admin_query(_COUNT, [name])[0][0])  # type: ignore[attr-defined]
            measures += 1
            if in_server <= capacity.sessions:
                if measures > 1:
                    waited = ORPHAN_WAIT - (deadline - time.monotonic())
                    bucket = next((b for b in (0.05, 0.2, 1.0) if waited <= b), ORPHAN_WAIT)
                    self._outcome(  # type: ignore[attr-defined]
                        "orphans", f"transient excess gone within {bucket}s"
                    )
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(ORPHAN_POLL)
        sessions = self.admin_query(_LIST, [name])  # type: ignore[attr-defined]
        listing = "\n  ".join(
            f"pid {pid} {state} since {started:%H:%M:%S.%f}: {query!r}"
            for pid, state, started, query in sessions
        )
        raise OrphanedSessions(
            f"{in_server} server sessions of {name!r} after {ORPHAN_WAIT}s, but the live pools "
            f"and requests account for {capacity.sessions} ({capacity.detail}):\n  {listing}"
        )
