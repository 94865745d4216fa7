"""reset_peer: on the first data or close, wait ``timeout`` ms, then reset.

The reset is a real TCP RST on both sockets (SO_LINGER 0 then close), so the
client sees ECONNRESET rather than an orderly end of stream. The triggering
data is dropped, like the real server.
"""

from __future__ import annotations

import asyncio

from chaos.toxiproxy.chain import Stub
from chaos.toxiproxy.toxics import register
from chaos.toxiproxy.toxics.base import Toxic


@register
class ResetPeerToxic(Toxic):
    type_name = "reset_peer"
    attributes = ("timeout",)

    async def pipe(self, stub: Stub) -> None:
        chunk = await stub.recv()
        stub.drop(chunk)
        if self.attrs["timeout"] > 0:
            await asyncio.sleep(self.attrs["timeout"] / 1000.0)
        stub.reset_connection()
