"""slicer: cut each chunk into small slices, pausing ``delay`` microseconds after each.

Toxiproxy's SlicerToxic: a chunk is halved (the cut moved by a random
``-size_variation..size_variation-1`` when that is positive) and each half
again, until ``size - average_size <= size_variation``. Slices therefore
fall between about half the average and average + variation (100 bytes at
average 10, variation 0: 16 slices of 6-7 bytes), and a negative variation
is used as is (it lowers the bound). A reader sees many small reads
(partial protocol messages).

Where the real server cannot finish, this one deviates without harm:

- ``average_size + size_variation < 1`` (e.g. average 0): no slice is ever
  small enough, so the real server sends nothing, forever. Here the data is
  held (nothing is sent, the stream never ends) until the toxic is changed
  or removed, which releases it; no CPU is burnt meanwhile.
- A variation of half the chunk or more can move the cut outside the chunk,
  which crashes the real server; here the cut is kept inside it.
"""

from __future__ import annotations

import asyncio
import random

from chaos.toxiproxy.stream import Chunk
from chaos.toxiproxy.toxics import register
from chaos.toxiproxy.toxics.base import Toxic
from chaos.toxiproxy.toxics.stub import Stub


@register
class SlicerToxic(Toxic):
    type_name = "slicer"
    go_name = "SlicerToxic"
    go_int = "int"
    attributes = ("average_size", "size_variation", "delay")

    def slices(self, size: int) -> list[int] | None:
        """Slice lengths for a chunk of ``size`` bytes, in order; None if it cannot be cut."""
        variation = self.attrs["size_variation"]
        limit = self.attrs["average_size"] + variation
        if limit < 1:
            return None
        out: list[int] = []
        pending = [(0, size)]  # the real server recurses; an explicit stack has no depth limit
        while pending:
            start, end = pending.pop()
            length = end - start
            if length <= limit:
                out.append(length)
                continue
            mid = start + length // 2
            if variation > 0:
                mid += random.randrange(2 * variation) - variation
            mid = min(max(mid, start + 1), end - 1)  # length > limit >= 1, so both halves exist
            pending.append((mid, end))
            pending.append((start, mid))
        return out

    async def pipe(self, stub: Stub) -> None:
        pause = self.attrs["delay"] / 1_000_000.0
        while True:
            chunk = await stub.recv()
            if chunk.data is None:
                stub.send(chunk)
                return
            data = chunk.data
            sizes = self.slices(len(data))
            if sizes is None:
                await stub.block()  # held: a change or removal releases it
            for size in sizes or ():
                piece, data = data[:size], data[size:]
                stub.hold(Chunk(data, chunk.ts) if data else None)
                stub.emit(piece, chunk.ts)
                if pause > 0:
                    await asyncio.sleep(pause)
