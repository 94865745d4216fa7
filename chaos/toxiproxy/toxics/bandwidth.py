"""bandwidth: throttle a direction to ``rate`` KB/s (1 KB = 1000 bytes).

Data goes out in pieces of at most 100 ms worth, each released when the
direction's budget allows; a rate of 0 holds all data back. The pacing clock
carries over between chunks so timer overshoot does not lower the rate.
"""

from __future__ import annotations

from collections.abc import Mapping

from chaos.toxiproxy.stream import Chunk
from chaos.toxiproxy.toxics import register
from chaos.toxiproxy.toxics.base import Toxic
from chaos.toxiproxy.toxics.stub import Stub


@register
class BandwidthToxic(Toxic):
    type_name = "bandwidth"
    go_name = "BandwidthToxic"
    attributes = ("rate",)

    def __init__(self, attrs: Mapping[str, int]) -> None:
        super().__init__(attrs)
        self.next_free = 0.0

    @classmethod
    def validate(cls, attrs: Mapping[str, int]) -> str | None:
        if attrs.get("rate", 0) < 0:
            return "bad request body: rate must not be negative"
        return None

    async def pipe(self, stub: Stub) -> None:
        rate = self.attrs["rate"]
        while True:
            chunk = await stub.recv()
            if chunk.data is None:
                stub.send(chunk)
                return
            if rate <= 0:
                await stub.block()
            bytes_per_second = rate * 1000.0
            piece_size = max(1, rate * 100)
            data = chunk.data
            while data:
                piece, data = data[:piece_size], data[piece_size:]
                self.next_free = max(self.next_free, stub.now()) + len(piece) / bytes_per_second
                await stub.sleep_until(self.next_free)
                stub.hold(Chunk(data, chunk.ts) if data else None)
                stub.emit(piece, chunk.ts)
