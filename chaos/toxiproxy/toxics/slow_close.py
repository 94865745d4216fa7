"""slow_close: data passes; the end of stream is held back ``delay`` ms."""

from __future__ import annotations

import asyncio

from chaos.toxiproxy.toxics import register
from chaos.toxiproxy.toxics.base import Toxic
from chaos.toxiproxy.toxics.stub import Stub


@register
class SlowCloseToxic(Toxic):
    type_name = "slow_close"
    go_name = "SlowCloseToxic"
    attributes = ("delay",)

    async def pipe(self, stub: Stub) -> None:
        while True:
            chunk = await stub.recv()
            if chunk.data is None:
                if self.attrs["delay"] > 0:
                    await asyncio.sleep(self.attrs["delay"] / 1000.0)
                stub.send(chunk)
                return
            stub.send(chunk)
