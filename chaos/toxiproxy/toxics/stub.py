"""A toxic's place in one direction of one connection: the contract toxics code against.

Each toxic runs in its own task, reading from its stub's queue and handing
chunks to the next stage, like Toxiproxy's ToxicStub and goroutine chain.
Hand-offs are synchronous, so the only state a toxic can be interrupted in is
"waiting", with at most one chunk in hand (``held``). Changing or removing a
toxic cancels its task and puts ``held`` back, so no byte is lost or
reordered.

The stub knows its chain only through :class:`StubOwner`, so toxics depend
on nothing but this module and :mod:`chaos.toxiproxy.stream`.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from chaos.toxiproxy.stream import EOF, Chunk

if TYPE_CHECKING:
    from chaos.toxiproxy.toxics.base import Toxic


class StubOwner(Protocol):
    """What a stub needs from the chain that runs it."""

    loop: asyncio.AbstractEventLoop

    def forward(self, index: int, chunk: Chunk) -> None:
        """Hand ``chunk`` to stage ``index`` (past the last stage: the socket)."""

    def discard(self, nbytes: int) -> None:
        """``nbytes`` left the chain without being sent (flow control accounting)."""

    def toxic_failed(self, stub: Stub) -> None:
        """The toxic raised: log it and close the connection."""


class Stub:
    """One toxic's place in one direction of one connection."""

    def __init__(self, owner: StubOwner, spec: Any, toxic: Toxic) -> None:
        self.owner = owner
        self.spec = spec  # the API's definition (name, toxicity); opaque here
        self.toxic = toxic
        self.loop = owner.loop
        self.queue: deque[Chunk] = deque()
        self.held: Chunk | None = None
        self.index = 0
        self.active = True
        self.dead = False
        self.ending = False
        self._end_handle: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[bool] | None = None
        self.task: asyncio.Task[None] | None = None

    # --- chain side -------------------------------------------------------------------
    def start(self) -> None:
        """Roll toxicity and start the toxic's task."""
        self.active = random.random() < self.spec.toxicity
        self.dead = False
        self.task = self.loop.create_task(self._run())

    def stop(self) -> list[Chunk]:
        """Cancel the task; return the chunks it had not passed on, oldest first."""
        self.dead = True
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.cancel()
        pending = list(self.queue)
        if self.held is not None:
            pending.insert(0, self.held)
            self.held = None
        self.queue.clear()
        return pending

    def close(self) -> None:
        """The connection is over: stop, and forget a pending end of stream."""
        self.stop()
        if self._end_handle is not None:
            self._end_handle.cancel()
            self._end_handle = None

    def restart(self) -> None:
        """Re-run the toxic (new attributes, new toxicity roll) on the same data.

        A stub that is ending its stream ignores it, like the real server's
        stub, which no longer reads its interrupt channel then.
        """
        if self.ending:
            return
        pending = self.stop()
        self.queue.extend(pending)
        self.start()

    def feed(self, chunk: Chunk) -> None:
        self.queue.append(chunk)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    async def _run(self) -> None:
        try:
            if self.active:
                await self.toxic.pipe(self)
            else:
                await pass_through(self)
        except asyncio.CancelledError:
            raise
        except Exception:  # a toxic bug must not take the server down
            self.owner.toxic_failed(self)

    # --- toxic side -------------------------------------------------------------------
    async def recv(self, timeout: float | None = None) -> Chunk | None:
        """The next chunk (now held); None only when ``timeout`` expires first."""
        if not self.queue:
            waiter = self.loop.create_future()
            self._waiter = waiter
            handle = (
                self.loop.call_later(timeout, _resolve, waiter) if timeout is not None else None
            )
            try:
                await waiter
            finally:
                self._waiter = None
                if handle is not None:
                    handle.cancel()
            if not self.queue:
                return None
        chunk = self.queue.popleft()
        self.held = chunk
        return chunk

    def send(self, chunk: Chunk) -> None:
        """Hand ``chunk`` to the next toxic (no longer held)."""
        if chunk is self.held:
            self.held = None
        if not self.dead:
            self.owner.forward(self.index + 1, chunk)

    def emit(self, data: bytes, ts: float) -> None:
        """Hand a new piece on without touching ``held`` (slicer, bandwidth)."""
        if not self.dead:
            self.owner.forward(self.index + 1, Chunk(data, ts))

    def hold(self, chunk: Chunk | None) -> None:
        """Replace what this toxic holds (the unsent remainder)."""
        self.held = chunk

    def drop(self, chunk: Chunk) -> None:
        """Discard ``chunk``: it will never be sent."""
        if chunk is self.held:
            self.held = None
        if chunk.data:
            self.owner.discard(len(chunk.data))

    def discard(self, nbytes: int) -> None:
        """Account for ``nbytes`` that will never be sent."""
        if nbytes > 0:
            self.owner.discard(nbytes)

    def end_stream_after(self, delay: float) -> None:
        """End the stream after this toxic in ``delay`` seconds, whatever happens meanwhile.

        Toxiproxy's reset_peer sleeps, then closes its stub's output; the
        toxic keeps its place in the chain until then (what arrives is
        swallowed), and changing or removing it does not cancel the close.
        How the connection then closes (FIN, or RST when it was accepted
        while a reset_peer toxic existed) is the connection's business.
        """
        self.ending = True
        if delay > 0:
            self._end_handle = self.loop.call_later(delay, self._end_stream)
        else:
            self._end_stream()

    def _end_stream(self) -> None:
        self._end_handle = None
        self.owner.forward(self.index + 1, EOF())

    def now(self) -> float:
        return self.loop.time()

    async def sleep_until(self, when: float) -> None:
        delay = when - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def block(self) -> None:
        """Wait until the toxic is changed or removed (cancellation)."""
        await self.loop.create_future()


async def pass_through(stub: Stub) -> None:
    """Forward every chunk unchanged until end of stream (noop, failed toxicity roll)."""
    while True:
        chunk = await stub.recv()
        stub.send(chunk)
        if chunk.data is None:
            return


def _resolve(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
