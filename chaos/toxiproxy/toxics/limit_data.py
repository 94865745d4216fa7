"""limit_data: pass at most ``bytes`` per connection and direction, then close.

The count survives changes to the toxic (it lives in this per-direction
instance), so raising the limit lets exactly the difference through.
"""

from __future__ import annotations

from collections.abc import Mapping

from chaos.toxiproxy.stream import EOF
from chaos.toxiproxy.toxics import register
from chaos.toxiproxy.toxics.base import Toxic
from chaos.toxiproxy.toxics.stub import Stub


@register
class LimitDataToxic(Toxic):
    type_name = "limit_data"
    go_name = "LimitDataToxic"
    attributes = ("bytes",)

    def __init__(self, attrs: Mapping[str, int]) -> None:
        super().__init__(attrs)
        self.passed = 0

    async def pipe(self, stub: Stub) -> None:
        while True:
            chunk = await stub.recv()
            if chunk.data is None:
                stub.send(chunk)
                return
            room = max(0, self.attrs["bytes"]) - self.passed
            data = chunk.data
            piece = data[:room] if room > 0 else b""
            stub.hold(None)
            stub.discard(len(data) - len(piece))
            if piece:
                stub.emit(piece, chunk.ts)
                self.passed += len(piece)
            if self.passed >= max(0, self.attrs["bytes"]):
                stub.send(EOF())
                return
