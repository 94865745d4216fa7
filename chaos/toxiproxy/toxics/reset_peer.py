"""reset_peer: on the first data or close, wait ``timeout`` ms, then reset.

The reset is a real TCP RST on both sockets (SO_LINGER 0 then close), so the
client sees ECONNRESET rather than an orderly end of stream. The triggering
data is dropped, like the real server. Once triggered, the reset is
committed: removing or changing the toxic during the wait does not cancel it
(the real server's goroutine sleeps through its interrupt too). Cancelling it
would leave a connection that silently lost the triggering bytes.
"""

from __future__ import annotations

import asyncio

from chaos.toxiproxy.toxics import register
from chaos.toxiproxy.toxics.base import Toxic
from chaos.toxiproxy.toxics.stub import Stub


@register
class ResetPeerToxic(Toxic):
    type_name = "reset_peer"
    attributes = ("timeout",)

    async def pipe(self, stub: Stub) -> None:
        chunk = await stub.recv()
        stub.drop(chunk)
        await asyncio.shield(self._reset_after(stub, self.attrs["timeout"] / 1000.0))

    @staticmethod
    async def _reset_after(stub: Stub, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        stub.reset_connection(even_if_removed=True)
