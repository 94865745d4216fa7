"""Network faults: Toxiproxy toxics on the proxy in front of Postgres, and ``down``.

Every toxic is added with toxicity 1.0 (Hypothesis alone decides when a fault
happens) under a name unique to the application (``<key>-<fault>-<stream>``),
so heal removes exactly that toxic and a second heal finds nothing to do.
``stream`` is ``upstream`` (client to server), ``downstream`` (server to
client) or ``both`` (one toxic per direction).

Toxiproxy applies toxics to connections that are already open as well as new
ones (``reset_peer`` differs in one respect: see :class:`ResetPeer`).
Removing a ``timeout`` toxic (half_open, timed_close) closes the connections
it held: healing those faults breaks the connections they hung.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from chaos.faults.base import STREAMS, Effects, Fault, FaultTarget, Stream
from chaos.faults.catalogue import register


def _streams(stream: str) -> tuple[str, ...]:
    return ("upstream", "downstream") if stream == "both" else (stream,)


def _check_stream(stream: str) -> None:
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {', '.join(STREAMS)}, not {stream!r}")


def _check_int(name: str, value: Any, *, minimum: int = 0) -> None:
    # Toxiproxy rejects non-integer attribute values (100.0 is a 400).
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")


@dataclass(frozen=True, repr=False)
class ToxicFault(Fault):
    """A fault made of one Toxiproxy toxic per direction."""

    toxic_type: ClassVar[str] = ""
    # Each subclass declares ``stream: Stream`` as its last field (not here:
    # dataclasses would keep an inherited field first in the positional order).

    def attributes(self) -> dict[str, int]:
        """The toxic's attributes (JSON integers)."""
        raise NotImplementedError

    def __post_init__(self) -> None:
        _check_stream(self.stream)

    def toxic_names(self, key: str) -> list[str]:
        """The names this application's toxics get on the proxy."""
        return [f"{key}-{self.name}-{s}" for s in _streams(self.stream)]

    def apply(self, target: FaultTarget, key: str) -> dict[str, Any]:
        proxy = target.require_proxy()
        attributes = self.attributes()
        names = []
        for stream, name in zip(_streams(self.stream), self.toxic_names(key), strict=True):
            proxy.add_toxic(name=name, type=self.toxic_type, stream=stream, attributes=attributes)
            names.append(name)
        return {"toxics": names}

    def heal(self, target: FaultTarget, key: str) -> dict[str, Any]:
        proxy = target.require_proxy()
        removed = [name for name in self.toxic_names(key) if proxy.remove_toxic(name)]
        return {"removed": removed}


_SLOW = Effects(slows=True)


@register
@dataclass(frozen=True, repr=False)
class Latency(ToxicFault):
    """Delay every chunk by ms +/- jitter (per direction; not cumulative per chunk)."""

    name: ClassVar[str] = "latency"
    toxic_type: ClassVar[str] = "latency"
    default_effects: ClassVar[Effects] = _SLOW

    ms: int = 100
    jitter: int = 0
    stream: Stream = "downstream"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("ms", self.ms)
        _check_int("jitter", self.jitter)

    def attributes(self) -> dict[str, int]:
        return {"latency": self.ms, "jitter": self.jitter}


@register
@dataclass(frozen=True, repr=False)
class Bandwidth(ToxicFault):
    """Throttle to rate KB/s (1 KB = 1000 bytes); rate 0 passes nothing."""

    name: ClassVar[str] = "bandwidth"
    toxic_type: ClassVar[str] = "bandwidth"
    default_effects: ClassVar[Effects] = _SLOW

    rate: int = 100
    stream: Stream = "downstream"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("rate", self.rate)

    @property
    def effects(self) -> Effects:
        if self.rate == 0:  # nothing passes: a black hole until a client timeout
            return Effects(slows=True, blocks=True, may_fail_in_flight=True,
                           may_fail_new_connections=True)  # fmt: skip
        return _SLOW

    def attributes(self) -> dict[str, int]:
        return {"rate": self.rate}


@register
@dataclass(frozen=True, repr=False)
class SlowClose(ToxicFault):
    """Data passes, but the close is delayed by delay ms."""

    name: ClassVar[str] = "slow_close"
    toxic_type: ClassVar[str] = "slow_close"
    default_effects: ClassVar[Effects] = _SLOW

    delay: int = 1000
    stream: Stream = "downstream"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("delay", self.delay)

    def attributes(self) -> dict[str, int]:
        return {"delay": self.delay}


@register
@dataclass(frozen=True, repr=False)
class HalfOpen(ToxicFault):
    """Drop all data and never close (timeout toxic, timeout=0); heal closes what it held.

    Through a proxy the TCP connection itself stays healthy (the proxy's kernel
    acknowledges every byte), so TCP keepalives and tcp_user_timeout do not
    notice; only connect_timeout and a client-side deadline end the wait.
    """

    name: ClassVar[str] = "half_open"
    toxic_type: ClassVar[str] = "timeout"
    default_effects: ClassVar[Effects] = Effects(
        blocks=True, may_fail_in_flight=True, may_fail_new_connections=True, breaks_on_heal=True
    )

    stream: Stream = "both"

    def attributes(self) -> dict[str, int]:
        return {"timeout": 0}


@register
@dataclass(frozen=True, repr=False)
class TimedClose(ToxicFault):
    """Drop all data and close the connection after timeout ms without data."""

    name: ClassVar[str] = "timed_close"
    toxic_type: ClassVar[str] = "timeout"
    default_effects: ClassVar[Effects] = Effects(
        blocks=True, may_fail_in_flight=True, may_fail_new_connections=True, breaks_on_heal=True
    )

    timeout: int = 1000
    stream: Stream = "downstream"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("timeout", self.timeout, minimum=1)

    def attributes(self) -> dict[str, int]:
        return {"timeout": self.timeout}


@register
@dataclass(frozen=True, repr=False)
class ResetPeer(ToxicFault):
    """Cut each connection at its next data (dropped) after timeout ms; RST for new ones only.

    Toxiproxy's ``reset_peer``. Only connections accepted while the toxic
    exists close with a TCP RST (SO_LINGER 0 is set at accept, and stays
    after heal); a connection already open when the fault is applied is
    closed normally, so its client sees EOF. libpq reports both as "server
    closed the connection unexpectedly": for the pool either way a statement
    (upstream) or its answer (downstream) is lost with the connection.
    """

    name: ClassVar[str] = "reset_peer"
    toxic_type: ClassVar[str] = "reset_peer"
    default_effects: ClassVar[Effects] = Effects(
        may_fail_in_flight=True, may_fail_new_connections=True
    )

    timeout: int = 0
    stream: Stream = "downstream"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("timeout", self.timeout)

    def attributes(self) -> dict[str, int]:
        return {"timeout": self.timeout}


@register
@dataclass(frozen=True, repr=False)
class Slicer(ToxicFault):
    """Halve chunks until <= average_size + size_variation bytes; pause delay_us after each.

    Toxiproxy's slicer: slices fall between about half the average and
    average + variation (average 16, variation 8: 4 to 24 bytes, mostly 10 to 24).
    """

    name: ClassVar[str] = "slicer"
    toxic_type: ClassVar[str] = "slicer"
    default_effects: ClassVar[Effects] = _SLOW

    average_size: int = 16
    size_variation: int = 8
    delay_us: int = 0
    stream: Stream = "downstream"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("average_size", self.average_size, minimum=1)
        _check_int("size_variation", self.size_variation)
        _check_int("delay_us", self.delay_us)
        if self.size_variation >= self.average_size:
            raise ValueError("size_variation must be smaller than average_size")

    def attributes(self) -> dict[str, int]:
        return {
            "average_size": self.average_size,
            "size_variation": self.size_variation,
            "delay": self.delay_us,
        }


@register
@dataclass(frozen=True, repr=False)
class LimitData(ToxicFault):
    """Pass at most bytes per connection and direction, then close the connection."""

    name: ClassVar[str] = "limit_data"
    toxic_type: ClassVar[str] = "limit_data"
    default_effects: ClassVar[Effects] = Effects(
        may_fail_in_flight=True, may_fail_new_connections=True
    )

    bytes: int = 10_000
    stream: Stream = "downstream"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("bytes", self.bytes)

    def attributes(self) -> dict[str, int]:
        return {"bytes": self.bytes}


@register
@dataclass(frozen=True, repr=False)
class Down(Fault):
    """Disable the proxy: new connections are refused, open ones closed at once."""

    name: ClassVar[str] = "down"
    target_kind: ClassVar[str] = "proxy"
    group: ClassVar[str | None] = "proxy-enabled"
    default_effects: ClassVar[Effects] = Effects(
        may_fail_in_flight=True, may_fail_new_connections=True, breaks_open_connections=True
    )

    def apply(self, target: FaultTarget, key: str) -> None:
        target.require_proxy().disable()

    def heal(self, target: FaultTarget, key: str) -> None:
        target.require_proxy().enable()


NETWORK_FAULTS: tuple[type[Fault], ...] = (
    Latency,
    Bandwidth,
    SlowClose,
    HalfOpen,
    TimedClose,
    ResetPeer,
    Slicer,
    LimitData,
    Down,
)
