"""Server faults: act on a :class:`chaos.postgres.PostgresServer` the harness owns.

Restarts, crashes and terminations are instantaneous: ``apply`` returns once
the server accepts connections again (the journal records when), and there
is nothing left to heal, so a :class:`~chaos.faults.Nemesis` does not keep
them active. ``outage`` holds the server down until healed. Every heal makes
sure the server is running, so healing twice, or after a failed apply, is
safe. On an external server these raise ``ServerControlUnavailable``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from chaos.faults.base import Effects, Fault, FaultTarget
from chaos.faults.catalogue import register

_KILLS_SESSIONS = Effects(
    may_fail_in_flight=True,
    may_fail_new_connections=True,
    breaks_open_connections=True,
    instantaneous=True,
)


def _ensure_running(server: Any) -> dict[str, Any]:
    if server.is_running:
        return {"was_running": True}
    server.start()
    return {"was_running": False, "accepting_again_at": server.wait_ready()}


@dataclass(frozen=True, repr=False)
class ServerFault(Fault):
    """A fault on the Postgres server process."""

    target_kind: ClassVar[str] = "server"

    def heal(self, target: FaultTarget, key: str) -> dict[str, Any]:
        return _ensure_running(target.require_server())


def _downtime(started: float, accepting_again_at: float) -> dict[str, Any]:
    return {
        "accepting_again_at": accepting_again_at,
        "downtime_s": round(max(0.0, accepting_again_at - started), 4),
    }


@register
@dataclass(frozen=True, repr=False)
class RestartFast(ServerFault):
    """pg_ctl restart -m fast: every session is disconnected, the server comes back."""

    name: ClassVar[str] = "restart_fast"
    default_effects: ClassVar[Effects] = _KILLS_SESSIONS

    def apply(self, target: FaultTarget, key: str) -> dict[str, Any]:
        started = time.monotonic()
        return _downtime(started, target.require_server().restart("fast"))


@register
@dataclass(frozen=True, repr=False)
class RestartImmediate(ServerFault):
    """pg_ctl restart -m immediate: no clean shutdown, crash recovery at start."""

    name: ClassVar[str] = "restart_immediate"
    default_effects: ClassVar[Effects] = _KILLS_SESSIONS

    def apply(self, target: FaultTarget, key: str) -> dict[str, Any]:
        started = time.monotonic()
        return _downtime(started, target.require_server().restart("immediate"))


@register
@dataclass(frozen=True, repr=False)
class Crash(ServerFault):
    """SIGKILL one backend: the postmaster resets every session and recovers."""

    name: ClassVar[str] = "crash"
    default_effects: ClassVar[Effects] = _KILLS_SESSIONS

    def apply(self, target: FaultTarget, key: str) -> dict[str, Any]:
        started = time.monotonic()
        return _downtime(started, target.require_server().crash())


@register
@dataclass(frozen=True, repr=False)
class TerminateBackends(ServerFault):
    """pg_terminate_backend() every client backend; the server keeps running."""

    name: ClassVar[str] = "terminate_backends"
    default_effects: ClassVar[Effects] = Effects(
        may_fail_in_flight=True, breaks_open_connections=True, instantaneous=True
    )

    def apply(self, target: FaultTarget, key: str) -> dict[str, Any]:
        return {"terminated": target.require_server().terminate_backends()}


@register(aliases=("stop",))
@dataclass(frozen=True, repr=False)
class Outage(ServerFault):
    """Stop the server (mode fast or immediate) and keep it down until healed."""

    name: ClassVar[str] = "outage"
    group: ClassVar[str | None] = "server-running"
    default_effects: ClassVar[Effects] = Effects(
        may_fail_in_flight=True, may_fail_new_connections=True, breaks_open_connections=True
    )

    mode: Literal["fast", "immediate"] = "fast"

    def __post_init__(self) -> None:
        if self.mode not in ("fast", "immediate"):
            raise ValueError(f"mode must be 'fast' or 'immediate', not {self.mode!r}")

    def apply(self, target: FaultTarget, key: str) -> dict[str, Any]:
        target.require_server().stop(self.mode)
        return {"stopped_at": time.monotonic()}


SERVER_FAULTS: tuple[type[Fault], ...] = (
    RestartFast,
    RestartImmediate,
    Crash,
    TerminateBackends,
    Outage,
)
