"""Fork: what a child does with what it inherited must never touch the parent's sessions.

A forked child inherits the parent's handler, wrappers, pools and their
sockets. Closing an inherited psycopg connection there runs ``PQfinish``,
which sends Terminate on the socket the parent still uses: the parent's
session ends. Using one runs the child's statements in the parent's session.
(psycopg itself only guards garbage collection: ``PGconn.__del__`` skips
``PQfinish`` in a process other than the one that connected.) App servers
fork a process that already has connections and pools (gunicorn
``--preload``, ``multiprocessing`` with the fork start method), so the
machines fork too: :meth:`ForkRules.fork_child`, while the parent's requests
hold connections and its pool has idle ones.

How the property is judged, for every session the parent held or pooled
before the fork (idle in the pool, or held by a request the model trusts: not
broken, not exposed to a fault):

1. before: it answers an empty query (a session already dead is not the
   child's doing) and pg_stat_activity gives its ``backend_start`` and
   ``state_change``;
2. the child runs and exits (bounded; see :mod:`chaos.targets.forking`);
3. pg_stat_activity again: same ``backend_start`` (not terminated), same
   ``state_change`` (nobody ran anything in it: the parent was idle);
4. each answers an empty query again. This one is definitive for a Terminate
   still in flight: it is queued behind it on the same socket, so the
   session cannot answer it;
5. pg_stat_activity once more: still there, same ``backend_start``.

Any difference raises :class:`ChildTouchedParentSessions`, as does a child
that used a session the parent holds or pools (the child reports the backend
pids it used; its own sessions are never in the parent's pool). The list of
the parent's sessions is taken once the pools' connections in flight have
landed, so the child inherits no pooled session that is not watched. Then
the machine's probe checks out (the checkout invariants run). A child that
hangs is a :class:`Hang`, one whose work failed with no fault active an
:class:`UnexplainedError`. The step runs only with no fault active or
pending and nothing stuck (a late call would change what it compares).

Usage: ``machine_for(env, ForkRules, ...)``.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from chaos.faults.outcomes import Outcome
from chaos.machines.errors import ChildTouchedParentSessions, Hang, UnexplainedError
from chaos.machines.model import Model
from chaos.machines.pool_machine import event, note
from chaos.targets.base import StepTimeout
from chaos.targets.forking import CHILD_ENDINGS, CHILD_WORKS, ChildReport

#: The child's own alarm (seconds); the parent waits this plus a grace, then kills it.
CHILD_BOUND = 10.0
#: One empty query to every watched session, from a control thread.
PING_BOUND = 10.0
#: How long the child's own sessions may take to leave the server after it exited.
CHILD_SESSIONS_WAIT = 3.0

_ACTIVITY = "SELECT pid, backend_start, state_change FROM pg_stat_activity WHERE pid = ANY(%s)"


def settled(model: Model) -> bool:
    """No fault active or pending, nothing stuck: only the child can touch a session."""
    return not (
        model.faults_active
        or model.recovery_pending
        or any(state.stuck for state in model.requests.values())
        or getattr(model, "control_stuck", 0)
    )


class ForkRules:
    """Adds :meth:`fork_child`: a child process runs ``work`` with what it inherited."""

    model: Model
    target: Any
    fork_works: ClassVar[tuple[str, ...]] = CHILD_WORKS
    fork_endings: ClassVar[tuple[str, ...]] = CHILD_ENDINGS

    @precondition(lambda self: settled(self.model))
    @rule(
        work=st.runner().flatmap(lambda machine: st.sampled_from(machine.fork_works)),
        ending=st.runner().flatmap(lambda machine: st.sampled_from(machine.fork_endings)),
    )
    def fork_child(self, work: str, ending: str) -> None:
        machine: Any = self
        machine._step(f"fork child ({work}, {ending})")
        try:
            sessions = self.target.parent_sessions()
        except NotImplementedError:
            machine._outcome("fork_child", "skipped (target cannot fork)")
            return
        watched = self._watched(sessions)
        for pid in self._ping(watched, "before"):
            del watched[pid]  # already dead before the fork: not the child's doing
        before = self._activity(watched)
        watched = {pid: where for pid, where in watched.items() if pid in before}
        try:
            report: ChildReport = self.target.fork_child(
                work, ending, CHILD_BOUND, frozenset(sessions)
            )
        except StepTimeout:
            raise Hang("os.fork() in a control thread did not return, no fault active") from None
        note(f"{report.describe()}; the parent's sessions: {watched}")
        seen = self._activity(watched)
        unanswered = self._ping(watched, "after")
        after = self._activity(watched)
        # The child's own sessions are never the parent's: one the parent holds or pools now
        # was handed to the child (even one that landed in the pool too late to be watched).
        shared = report.shared | (report.backends & set(self.target.parent_sessions()))
        touched: dict[int, str] = {}
        for pid, where in sorted(watched.items()):
            started, changed = before[pid]
            if seen.get(pid, (None,))[0] != started or after.get(pid, (None,))[0] != started:
                touched[pid] = f"{where} backend {pid}: terminated"
            elif seen[pid][1] != changed:
                touched[pid] = f"{where} backend {pid}: ran statements while the parent was idle"
            elif pid in unanswered:
                touched[pid] = f"{where} backend {pid}: no answer ({unanswered[pid]})"
        for pid in sorted(shared - set(touched)):
            touched[pid] = f"backend {pid} of the parent's was handed to the child"
        self._wait_child_sessions_gone(report.backends - set(watched))
        if touched:
            raise ChildTouchedParentSessions(
                f"a forked {report.describe()} touched the parent's sessions:\n  "
                + "\n  ".join(touched.values())
            )
        if report.hung:
            raise Hang(f"a forked {report.describe()} did not exit within {CHILD_BOUND}s")
        if report.exit_code != 0:
            raise UnexplainedError(
                f"a forked {report.describe()}: its work failed with no fault active"
            )
        machine._outcome(f"fork_child ({work}, {ending})", Outcome.OK)
        event(
            f"fork_child: {min(len(watched), 3)}{'+' if len(watched) > 3 else ''} parent sessions"
        )
        machine._probe_after(f"after a forked child ({work}, {ending}) exited")

    # -- helpers -----------------------------------------------------------------------
    def _watched(self, sessions: dict[int, str]) -> dict[int, str]:
        """The idle ones, and the held ones whose holding the model trusts."""
        trusted = {
            state.holding.backend.pid: number
            for number, state in self.model.requests.items()
            if state.holding is not None
            and state.holding.backend is not None
            and not state.holding.broken
            and not state.holding.exposed(self.model)
        }
        watched = {}
        for pid, kind in sessions.items():
            if kind == "idle":
                watched[pid] = "pooled"
            elif pid in trusted:
                watched[pid] = f"Request({trusted[pid]})'s"
        return watched

    def _ping(self, watched: dict[int, str], when: str) -> dict[int, str]:
        try:
            return dict(self.target.ping_sessions(list(watched), PING_BOUND))
        except StepTimeout:
            raise Hang(
                f"pinging the parent's sessions {when} the fork took over {PING_BOUND}s"
            ) from None

    def _activity(self, pids: dict[int, str]) -> dict[int, tuple[Any, Any]]:
        if not pids:
            return {}
        rows = self.admin_query(_ACTIVITY, [list(pids)])  # type: ignore[attr-defined]
        return {pid: (started, changed) for pid, started, changed in rows}

    def _wait_child_sessions_gone(self, pids: frozenset[int] | set[int]) -> None:
        """The child's own sessions end when it exits (the server notices a few ms later):
        wait for that, so that the next step's session counts do not include them."""
        if not pids:
            return
        deadline = time.monotonic() + CHILD_SESSIONS_WAIT
        left = self._activity(dict.fromkeys(pids, ""))
        while left and time.monotonic() < deadline:
            time.sleep(0.01)
            left = self._activity(dict.fromkeys(left, ""))
        if left:
            self._outcome(  # type: ignore[attr-defined]
                "fork_child", f"{len(left)} child session(s) outlived it by {CHILD_SESSIONS_WAIT}s"
            )
