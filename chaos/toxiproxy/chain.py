"""The per-direction toxic chain: chunks flow through one stub per toxic, in order.

The chain applies the API's toxic changes to a running direction: a new
toxic joins at the end, a changed one restarts on the data it held, a removed
one hands its data to the next stage (a ``timeout`` toxic closes the stream
instead, and a triggered ``reset_peer`` stays until it has ended the stream,
like the real server). Past the last stage chunks go to the
:class:`ChainEnd` (the socket side of :class:`chaos.toxiproxy.dataplane.Link`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from chaos.toxiproxy.stream import EOF, Chunk
from chaos.toxiproxy.toxics import get as get_toxic
from chaos.toxiproxy.toxics.stub import Stub

log = logging.getLogger("chaos.toxiproxy.chain")


class ToxicDefinition(Protocol):
    """What the chain reads of the API's toxic (:class:`chaos.toxiproxy.model.ToxicSpec`)."""

    name: str
    type: str
    toxicity: float
    attributes: dict[str, int]


class ChainEnd(Protocol):
    """The socket side of a direction."""

    loop: asyncio.AbstractEventLoop

    def deliver(self, chunk: Chunk) -> None:
        """Write ``chunk`` to the destination socket (end of stream: close it)."""

    def discard(self, nbytes: int) -> None:
        """``nbytes`` left the chain without being sent."""

    def chain_changed(self) -> None:
        """Stages were added or removed (the fast path may change)."""

    def abort(self) -> None:
        """Close the connection at once."""


class Chain:
    """The toxics of one direction of one connection; implements the stubs' owner."""

    def __init__(self, end: ChainEnd) -> None:
        self.end = end
        self.loop = end.loop
        self.stages: list[Stub] = []

    def __len__(self) -> int:
        return len(self.stages)

    @property
    def resets_on_close(self) -> bool:
        """A toxic of this chain makes the connection close with RST (reset_peer)."""
        return any(stub.toxic.resets_on_close for stub in self.stages)

    # --- data -----------------------------------------------------------------------------
    def feed(self, chunk: Chunk) -> None:
        """A chunk read from the source enters the first stage."""
        self.stages[0].feed(chunk)

    def forward(self, index: int, chunk: Chunk) -> None:
        if index < len(self.stages):
            self.stages[index].feed(chunk)
        else:
            self.end.deliver(chunk)

    def discard(self, nbytes: int) -> None:
        self.end.discard(nbytes)

    def toxic_failed(self, stub: Stub) -> None:
        log.exception("toxic %s failed; closing connection", stub.spec.name)
        self.end.abort()

    # --- toxic changes (from the API) ---------------------------------------------------
    def _new_stub(self, spec: ToxicDefinition) -> Stub:
        cls = get_toxic(spec.type)
        assert cls is not None
        return Stub(self, spec, cls(spec.attributes))

    def _reindex(self) -> None:
        for i, stub in enumerate(self.stages):
            stub.index = i
        self.end.chain_changed()

    def _reroll(self, skip: Stub | None = None) -> None:
        """Toxicity is rolled again for the whole direction when its chain changes."""
        for stub in self.stages:
            if stub is not skip and 0.0 < stub.spec.toxicity < 1.0:
                stub.restart()

    def start(self, specs: Iterable[ToxicDefinition]) -> None:
        """The toxics that exist when the connection is accepted."""
        self.stages.extend(self._new_stub(spec) for spec in specs)
        self._reindex()
        for stub in self.stages:
            stub.start()

    def add(self, spec: ToxicDefinition) -> None:
        stub = self._new_stub(spec)
        self.stages.append(stub)
        self._reindex()
        stub.start()
        self._reroll(skip=stub)

    def update(self, spec: ToxicDefinition) -> None:
        for stub in self.stages:
            if stub.spec is spec:
                stub.toxic.attrs = {name: spec.attributes.get(name, 0) for name in stub.toxic.attrs}
                stub.restart()
                self._reroll(skip=stub)
                return

    def remove(self, spec: ToxicDefinition) -> None:
        found = [i for i, stub in enumerate(self.stages) if stub.spec is spec]
        if not found:
            return
        i = found[0]
        stub = self.stages[i]
        if stub.ending:  # it still ends the stream (see Stub.end_stream_after)
            return
        pending = stub.stop()
        del self.stages[i]
        self._reindex()
        if stub.toxic.closes_on_remove:
            self.discard(sum(len(c.data) for c in pending if c.data))
            pending = [EOF()]
        for chunk in pending:
            self.forward(i, chunk)
        self._reroll()

    def close(self) -> None:
        """The connection is over: stop every toxic."""
        for stub in self.stages:
            stub.close()
