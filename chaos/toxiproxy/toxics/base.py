"""The contract between a toxic and the chain that runs it.

A toxic is a small object with an ``async pipe(stub)`` coroutine that loops:
take a chunk from ``stub.recv()``, do something to it, hand it on with
``stub.send()`` / ``stub.emit()``. The coroutine is cancelled whenever the
toxic is changed or removed; the stub remembers the chunk being worked on
(``stub.held``) so that cancelling never loses data. Toxics therefore keep
``held`` accurate (``stub.hold(remainder)``) before every ``await``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from chaos.toxiproxy.toxics.stub import Stub


class Toxic:
    """Base class: one instance per connection direction (it may keep state)."""

    type_name: ClassVar[str] = ""
    attributes: ClassVar[tuple[str, ...]] = ()
    go_name: ClassVar[str] = ""
    """Toxiproxy's struct for this toxic (named in type errors: ``LatencyToxic``)."""
    go_int: ClassVar[str] = "int64"
    """The Go type of its attributes (``int64``; the slicer's are ``int``)."""
    closes_on_remove: ClassVar[bool] = False
    """Removing the toxic closes the connection (timeout) instead of releasing data."""
    resets_on_close: ClassVar[bool] = False
    """Connections accepted while it exists close with a TCP RST (SO_LINGER 0), whatever
    closes them: Toxiproxy's link.go sets this for reset_peer at accept time only."""

    def __init__(self, attrs: Mapping[str, int]) -> None:
        self.attrs: dict[str, int] = {name: int(attrs.get(name, 0)) for name in self.attributes}

    @classmethod
    def validate(cls, attrs: Mapping[str, int]) -> str | None:
        """An error message for attribute values this toxic refuses, else None."""
        return None

    async def pipe(self, stub: Stub) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
