"""The nemesis: applies faults to one (proxy, server) pair and heals them all.

``Nemesis.apply(fault)`` injects a fault now and returns an :class:`ActiveFault`
handle, which is also a context manager that heals on exit::

    with nemesis.latency(200, jitter=20):   # applied here, healed at the end
        ...
    handle = nemesis.apply(Down())          # from a Hypothesis rule
    nemesis.heal(handle)                    # or nemesis.heal(Down())

Every action is journalled in a :class:`FaultSchedule`. ``heal_all`` heals in
reverse order of application and never stops half-way: it attempts every
heal, then raises one :class:`HealError` listing what failed. Heals are
idempotent. All actions are serialised by one lock, so a nemesis thread and
the test thread can share it.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import threading
import time
from typing import Any, Literal

import psycopg

from chaos.faults.base import (
    NO_EFFECTS,
    Effects,
    Fault,
    FaultConflict,
    FaultError,
    FaultNotAllowed,
    HealError,
    Stream,
)
from chaos.faults.connect import chaos_connect_kwargs, chaos_db_settings
from chaos.faults.network import (
    Bandwidth,
    Down,
    HalfOpen,
    Latency,
    LimitData,
    ResetPeer,
    Slicer,
    SlowClose,
    TimedClose,
    ToxicFault,
)
from chaos.faults.proxies import ProxyControl, proxy_control
from chaos.faults.schedule import FaultEvent, FaultSchedule
from chaos.faults.server import (
    Crash,
    Outage,
    RestartFast,
    RestartImmediate,
    TerminateBackends,
)

SERVER_FAULTS_NEED_PERMISSION = (
    "server faults on the shared session Postgres need @pytest.mark.restarts_server or "
    "@pytest.mark.needs_server_control on the test; or use the private_faults fixture "
    "(a server and a proxy of the test's own)"
)


class ActiveFault:
    """One application of a fault: heal it, or use it as a context manager."""

    def __init__(self, nemesis: Nemesis, fault: Fault, key: str, applied_at: float):
        self.nemesis = nemesis
        self.fault = fault
        self.key = key
        self.applied_at = applied_at
        self.healed_at: float | None = None
        self.detail: dict[str, Any] = {}

    @property
    def active(self) -> bool:
        return self.healed_at is None

    @property
    def effects(self) -> Effects:
        return self.fault.effects

    def heal(self) -> None:
        self.nemesis.heal(self)

    def __enter__(self) -> ActiveFault:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.heal()

    def __repr__(self) -> str:
        state = "active" if self.active else "healed"
        return f"<ActiveFault {self.key} {self.fault!r} {state}>"


class Nemesis:
    """Applies catalogue faults to a proxy (network faults) and a server (server faults).

    ``proxy`` is the harness's ``ProxyHandle`` or a toxiproxy-python ``Proxy``
    (see :mod:`chaos.faults.proxies`); ``server`` a
    :class:`chaos.postgres.PostgresServer`. ``server_faults`` says whether
    server faults are allowed: ``True``, or a string giving the reason they are
    not (raised as :class:`FaultNotAllowed`).
    """

    def __init__(
        self,
        proxy: Any = None,
        server: Any = None,
        *,
        schedule: FaultSchedule | None = None,
        server_faults: bool | str = True,
    ):
        self.proxy = proxy
        self._proxy_control = None if proxy is None else proxy_control(proxy)
        self.server = server
        self.schedule = schedule if schedule is not None else FaultSchedule()
        self._server_denied = (
            None
            if server_faults is True
            else (server_faults or SERVER_FAULTS_NEED_PERMISSION)
            if isinstance(server_faults, str)
            else SERVER_FAULTS_NEED_PERMISSION
        )
        self._token = secrets.token_hex(2)
        self._counter = itertools.count(1)
        self._active: list[ActiveFault] = []
        self._lock = threading.RLock()

    # -- FaultTarget -------------------------------------------------------------------------

    def require_proxy(self) -> ProxyControl:
        if self._proxy_control is None:
            raise FaultNotAllowed("this nemesis has no proxy: network faults need one")
        return self._proxy_control

    def require_server(self) -> Any:
        if self.server is None:
            raise FaultNotAllowed("this nemesis has no Postgres server: server faults need one")
        if self._server_denied:
            raise FaultNotAllowed(self._server_denied)
        return self.server

    @property
    def allows_server_faults(self) -> bool:
        return self.server is not None and not self._server_denied

    # -- state -------------------------------------------------------------------------------

    @property
    def active(self) -> list[ActiveFault]:
        """Applications not healed yet, oldest first."""
        with self._lock:
            return list(self._active)

    def toxic_names(self) -> list[str]:
        """The names of the toxics on the proxy now (any nemesis's)."""
        return self.require_proxy().toxic_names()

    @property
    def effects(self) -> Effects:
        """What the active faults together can do (see :class:`Effects`)."""
        combined = NO_EFFECTS
        for active in self.active:
            combined = combined | active.effects
        return combined

    # -- actions -----------------------------------------------------------------------------

    def apply(self, fault: Fault) -> ActiveFault:
        """Inject ``fault`` now; the handle heals it (also as a context manager)."""
        if not isinstance(fault, Fault):
            raise TypeError(f"expected a Fault, got {fault!r}")
        with self._lock:
            # Fail before touching anything: a clear error beats a half-applied fault.
            if fault.target_kind == "server":
                self.require_server()
            else:
                self.require_proxy()
            self._check_conflicts(fault)
            key = f"f{next(self._counter)}-{self._token}"
            started = time.monotonic()
            try:
                detail = fault.apply(self, key) or {}
            except BaseException as exc:
                self._record(started, "apply-failed", key, fault, error=exc)
                if not self._shared_group_held(fault, None):
                    # undo whatever part of it happened; the apply error is the one to report
                    with contextlib.suppress(Exception):
                        fault.heal(self, key)
                raise
            handle = ActiveFault(self, fault, key, started)
            handle.detail = dict(detail)
            self._record(started, "apply", key, fault, detail=detail)
            if fault.effects.instantaneous:
                handle.healed_at = time.monotonic()  # nothing left to heal
            else:
                self._active.append(handle)
            return handle

    def heal(self, target: ActiveFault | Fault) -> None:
        """Heal one application (a handle, or the latest active one equal to a fault).

        Healing what is already healed, or a fault that is not active, does nothing.
        """
        with self._lock:
            handle = self._find(target)
            if handle is None or not handle.active:
                return
            self._heal_handle(handle)

    def heal_all(self) -> None:
        """Heal every active fault, newest first; attempt all, then raise one HealError."""
        errors: list[tuple[Any, BaseException]] = []
        with self._lock:
            for handle in reversed(list(self._active)):
                try:
                    self._heal_handle(handle)
                except Exception as exc:
                    errors.append((handle, exc))
            try:
                self._sweep_toxics()
            except Exception as exc:
                errors.append(("leftover toxics", exc))
        if errors:
            raise HealError(errors) from errors[0][1]

    def __enter__(self) -> Nemesis:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.heal_all()

    def __repr__(self) -> str:
        return (
            f"<Nemesis proxy={getattr(self.proxy, 'name', self.proxy)!r} "
            f"server={'yes' if self.allows_server_faults else 'no'} active={self.active!r}>"
        )

    # -- connecting through the proxy (chaos-safe options, see chaos.faults.connect) -----------

    def connect_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """``psycopg.connect`` keywords reaching the server through the proxy."""
        return chaos_connect_kwargs(self.require_proxy(), self.server, **overrides)

    def connect(self, **overrides: Any) -> psycopg.Connection[Any]:
        """A new autocommit connection through the proxy (the caller closes it)."""
        overrides.setdefault("autocommit", True)
        return psycopg.connect(**self.connect_kwargs(**overrides))

    def db_settings(self, **overrides: Any) -> dict[str, Any]:
        """plain_pool settings pointing through the proxy (see ``chaos_db_settings``)."""
        return chaos_db_settings(self.require_proxy(), self.server, **overrides)

    # -- named shortcuts (each applies now and returns the handle) ---------------------------

    def latency(self, ms: int, jitter: int = 0, stream: Stream = "downstream") -> ActiveFault:
        return self.apply(Latency(ms=ms, jitter=jitter, stream=stream))

    def bandwidth(self, rate: int, stream: Stream = "downstream") -> ActiveFault:
        return self.apply(Bandwidth(rate=rate, stream=stream))

    def slow_close(self, delay: int, stream: Stream = "downstream") -> ActiveFault:
        return self.apply(SlowClose(delay=delay, stream=stream))

    def half_open(self, stream: Stream = "both") -> ActiveFault:
        return self.apply(HalfOpen(stream=stream))

    def timed_close(self, timeout: int, stream: Stream = "downstream") -> ActiveFault:
        return self.apply(TimedClose(timeout=timeout, stream=stream))

    def reset_peer(self, timeout: int = 0, stream: Stream = "downstream") -> ActiveFault:
        return self.apply(ResetPeer(timeout=timeout, stream=stream))

    def slicer(
        self,
        average_size: int = 16,
        size_variation: int = 8,
        delay_us: int = 0,
        stream: Stream = "downstream",
    ) -> ActiveFault:
        return self.apply(Slicer(average_size, size_variation, delay_us, stream))

    def limit_data(self, bytes: int, stream: Stream = "downstream") -> ActiveFault:
        return self.apply(LimitData(bytes=bytes, stream=stream))

    def down(self) -> ActiveFault:
        return self.apply(Down())

    def restart_fast(self) -> ActiveFault:
        return self.apply(RestartFast())

    def restart_immediate(self) -> ActiveFault:
        return self.apply(RestartImmediate())

    def crash(self) -> ActiveFault:
        return self.apply(Crash())

    def terminate_backends(self) -> ActiveFault:
        return self.apply(TerminateBackends())

    def outage(self, mode: Literal["fast", "immediate"] = "fast") -> ActiveFault:
        return self.apply(Outage(mode=mode))

    # -- internals ---------------------------------------------------------------------------

    def _find(self, target: ActiveFault | Fault) -> ActiveFault | None:
        if isinstance(target, ActiveFault):
            if target.nemesis is not self:
                raise FaultError(f"{target!r} was applied by another nemesis")
            return target
        if isinstance(target, Fault):
            for handle in reversed(self._active):
                if handle.fault == target:
                    return handle
            return None
        raise TypeError(f"expected an ActiveFault or a Fault, got {target!r}")

    def _shared_group_held(self, fault: Fault, handle: ActiveFault | None) -> ActiveFault | None:
        """Another active application holding the same shared state, if any."""
        if fault.group is None:
            return None
        for other in self._active:
            if other is not handle and other.fault.group == fault.group:
                return other
        return None

    def _check_conflicts(self, fault: Fault) -> None:
        if fault.target_kind == "server" and fault.effects.instantaneous:
            for other in self._active:
                if other.fault.group == "server-running":
                    raise FaultConflict(
                        f"cannot apply {fault!r} while {other.key} {other.fault!r} holds the "
                        "server down; heal it first"
                    )

    def _heal_handle(self, handle: ActiveFault) -> None:
        started = time.monotonic()
        holder = self._shared_group_held(handle.fault, handle)
        try:
            if holder is not None:  # the shared state stays faulty until its last holder heals
                detail = {"deferred_to": holder.key}
            else:
                detail = handle.fault.heal(self, handle.key) or {}
        except BaseException as exc:
            self._record(started, "heal-failed", handle.key, handle.fault, error=exc)
            raise
        handle.healed_at = time.monotonic()
        if handle in self._active:
            self._active.remove(handle)
        self._record(started, "heal", handle.key, handle.fault, detail=detail)

    def _sweep_toxics(self) -> None:
        """Remove toxics this nemesis named that survived (a heal that failed mid-way)."""
        if self._proxy_control is None:
            return
        for name in self._proxy_control.toxic_names():
            if f"-{self._token}-" in name:
                self._proxy_control.remove_toxic(name)

    def _record(
        self,
        started: float,
        action: Any,
        key: str,
        fault: Fault,
        *,
        detail: dict[str, Any] | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.schedule.record(
            FaultEvent(
                at=started,
                action=action,
                key=key,
                fault=fault,
                duration=time.monotonic() - started,
                detail=dict(detail or {}),
                error=None if error is None else f"{type(error).__name__}: {error}",
            )
        )


__all__ = ["SERVER_FAULTS_NEED_PERMISSION", "ActiveFault", "Nemesis", "ToxicFault"]
