"""What every fault is: a small frozen description with ``apply`` and ``heal``.

A fault object holds only its parameters, so it can be compared, hashed,
kept in a Hypothesis model and printed as valid Python
(``Latency(ms=200, jitter=20)``). The side effects go through a
:class:`FaultTarget` (in practice a :class:`chaos.faults.Nemesis`) that owns
the proxy and the server; the target also hands out the unique key each
application uses to name what it creates (a toxic's name), so that heal
removes exactly what apply added and is safe to call twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

Stream = Literal["upstream", "downstream", "both"]
STREAMS: tuple[str, ...] = ("upstream", "downstream", "both")


class FaultError(RuntimeError):
    """Base class of the fault catalogue's own errors."""


class UnknownFault(FaultError, KeyError):
    """A fault name that is not in the catalogue."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else "unknown fault"


class FaultNotAllowed(FaultError):
    """The fault needs something this injector was not given permission to touch."""


class FaultConflict(FaultError):
    """The fault cannot be applied on top of the faults already active."""


class HealError(FaultError):
    """One or more heals failed; every heal was still attempted.

    ``errors`` holds ``(active_fault, exception)`` pairs in the order they happened.
    """

    def __init__(self, errors: list[tuple[Any, BaseException]]):
        self.errors = errors
        lines = [f"{len(errors)} heal(s) failed:"]
        lines += [f"  {active!r}: {type(exc).__name__}: {exc}" for active, exc in errors]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Effects:
    """What a fault can do to the client, so that a model can judge outcomes.

    - ``slows``: operations take longer (and may run into client timeouts).
    - ``blocks``: an operation may wait until a client-side timeout ends it.
    - ``may_fail_in_flight``: a statement on an already open connection may fail,
      so a write in flight may or may not have been committed (uncertain).
    - ``may_fail_new_connections``: opening a connection may fail.
    - ``breaks_open_connections``: applying it closes every open connection.
    - ``breaks_on_heal``: healing it closes the connections it affected
      (Toxiproxy closes a connection when its ``timeout`` toxic is removed).
    - ``instantaneous``: apply does all of it (a restart, a crash); there is
      nothing left to heal afterwards.
    """

    slows: bool = False
    blocks: bool = False
    may_fail_in_flight: bool = False
    may_fail_new_connections: bool = False
    breaks_open_connections: bool = False
    breaks_on_heal: bool = False
    instantaneous: bool = False

    @property
    def may_fail(self) -> bool:
        """Whether any client operation may end in an error while this is active."""
        return (
            self.blocks
            or self.may_fail_in_flight
            or self.may_fail_new_connections
            or self.breaks_open_connections
            or self.breaks_on_heal
        )

    def __or__(self, other: Effects) -> Effects:
        return Effects(
            **{
                f.name: getattr(self, f.name) or getattr(other, f.name)
                for f in dataclasses.fields(self)
                if f.name != "instantaneous"
            }
        )


NO_EFFECTS = Effects()


@runtime_checkable
class FaultTarget(Protocol):
    """What a fault acts on; :class:`chaos.faults.Nemesis` implements it."""

    def require_proxy(self) -> Any:
        """The proxy as a :class:`chaos.faults.proxies.ProxyControl`, or raise."""

    def require_server(self) -> Any:
        """The :class:`chaos.postgres.PostgresServer`, or raise FaultNotAllowed."""


@dataclass(frozen=True)
class Fault:
    """Base class: a frozen description; subclasses register in the catalogue.

    Subclasses set ``name`` (the catalogue key), ``target_kind`` ("proxy" or
    "server") and ``default_effects``; their docstring's first line is the
    catalogue's description. They implement :meth:`apply` and :meth:`heal`.
    ``group`` names a piece of shared state (the proxy's enabled flag, the server running): when two
    active faults share it, only the last heal restores it.
    """

    name: ClassVar[str] = ""
    target_kind: ClassVar[str] = "proxy"
    default_effects: ClassVar[Effects] = NO_EFFECTS
    group: ClassVar[str | None] = None

    @property
    def effects(self) -> Effects:
        """The effects of this instance (parameters may change them)."""
        return self.default_effects

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis prints a failing program's faults with this (its public hook): the
        repr, valid Python. Its default lists a dataclass's ClassVars as arguments
        (``Latency(name='latency', ...)``), which does not paste back."""
        printer.text(repr(self))

    def apply(self, target: FaultTarget, key: str) -> dict[str, Any] | None:
        """Inject the fault. ``key`` is unique per application. Returns details to journal."""
        raise NotImplementedError

    def heal(self, target: FaultTarget, key: str) -> dict[str, Any] | None:
        """Undo :meth:`apply`; idempotent, and safe after a failed or partial apply."""
        raise NotImplementedError

    def __repr__(self) -> str:
        """Valid Python, with parameters left at their default omitted."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"
