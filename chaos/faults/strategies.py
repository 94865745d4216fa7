"""Hypothesis strategies over the catalogue, with parameters sized for test runs.

Sizes are bounded so that a fault slows a step by at most a few hundred
milliseconds; blocking faults (half_open, bandwidth 0, timed_close) are only
drawn when ``blocking=True``, since a machine must then bound every call with
a client-side deadline.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import strategies as st

from chaos.faults.base import STREAMS, Fault
from chaos.faults.catalogue import fault_class
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
)
from chaos.faults.server import Crash, Outage, RestartFast, RestartImmediate, TerminateBackends

BLOCKING = frozenset({"half_open", "timed_close"})


def _slicer(stream: st.SearchStrategy[str]) -> st.SearchStrategy[Fault]:
    return st.integers(2, 64).flatmap(
        lambda avg: st.builds(
            Slicer,
            average_size=st.just(avg),
            size_variation=st.integers(0, avg - 1),
            delay_us=st.integers(0, 200),
            stream=stream,
        )
    )


def _latency(stream: st.SearchStrategy[str], max_ms: int) -> st.SearchStrategy[Fault]:
    return st.integers(0, max_ms).flatmap(
        lambda ms: st.builds(Latency, ms=st.just(ms), jitter=st.integers(0, ms // 4), stream=stream)
    )


def network_fault_strategies(
    streams: Iterable[str] = STREAMS, *, max_latency_ms: int = 200
) -> dict[str, st.SearchStrategy[Fault]]:
    """name -> strategy for every network fault."""
    stream = st.sampled_from(tuple(streams))
    return {
        "latency": _latency(stream, max_latency_ms),
        "bandwidth": st.builds(Bandwidth, rate=st.integers(10, 2000), stream=stream),
        "slow_close": st.builds(SlowClose, delay=st.integers(0, 300), stream=stream),
        "half_open": st.builds(HalfOpen, stream=stream),
        "timed_close": st.builds(TimedClose, timeout=st.integers(50, 1000), stream=stream),
        "reset_peer": st.builds(ResetPeer, timeout=st.integers(0, 100), stream=stream),
        "slicer": _slicer(stream),
        "limit_data": st.builds(LimitData, bytes=st.integers(0, 20_000), stream=stream),
        "down": st.just(Down()),
    }


def server_fault_strategies() -> dict[str, st.SearchStrategy[Fault]]:
    """name -> strategy for every server fault."""
    return {
        "restart_fast": st.just(RestartFast()),
        "restart_immediate": st.just(RestartImmediate()),
        "crash": st.just(Crash()),
        "terminate_backends": st.just(TerminateBackends()),
        "outage": st.builds(Outage, mode=st.sampled_from(["fast", "immediate"])),
    }


def faults(
    names: Iterable[str] | None = None,
    *,
    network: bool = True,
    server: bool = False,
    blocking: bool = False,
    streams: Iterable[str] = STREAMS,
    max_latency_ms: int = 200,
) -> st.SearchStrategy[Fault]:
    """Faults drawn from the catalogue: ``names`` picks some (unknown names raise UnknownFault)."""
    table: dict[str, st.SearchStrategy[Fault]] = {}
    if network:
        table.update(network_fault_strategies(streams, max_latency_ms=max_latency_ms))
    if server:
        table.update(server_fault_strategies())
    if names is not None:
        wanted = [fault_class(n).name for n in names]  # validates and resolves aliases
        missing = [n for n in wanted if n not in table]
        if missing:
            raise ValueError(f"faults {missing} are excluded by network/server flags")
        table = {n: table[n] for n in wanted}
    elif not blocking:
        table = {n: s for n, s in table.items() if n not in BLOCKING}
    if not table:
        raise ValueError("no fault left to draw from")
    return st.one_of(*table.values())
