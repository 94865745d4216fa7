"""slicer: cut chunks into pieces of ``average_size`` ± ``size_variation`` bytes.

Each piece is sent on its own and followed by a pause of ``delay``
microseconds, so a reader sees many small reads (partial protocol messages).
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
    attributes = ("average_size", "size_variation", "delay")

    def piece_size(self, remaining: int) -> int:
        average = self.attrs["average_size"]
        variation = abs(self.attrs["size_variation"])
        if remaining <= average + variation:
            return remaining
        size = average + (random.randint(-variation, variation) if variation else 0)
        return min(max(1, size), remaining)

    async def pipe(self, stub: Stub) -> None:
        pause = self.attrs["delay"] / 1_000_000.0
        while True:
            chunk = await stub.recv()
            if chunk.data is None:
                stub.send(chunk)
                return
            data = chunk.data
            while data:
                size = self.piece_size(len(data))
                piece, data = data[:size], data[size:]
                stub.hold(Chunk(data, chunk.ts) if data else None)
                stub.emit(piece, chunk.ts)
                if pause > 0:
                    await asyncio.sleep(pause)
