"""reset_peer: on the first data or close, wait ``timeout`` ms, then end the connection.

The triggering data is dropped and the stream ends after the wait (what
arrives meanwhile is swallowed), like Toxiproxy's ResetToxic. Whether the
peers then see a TCP RST or an orderly close depends on when the connection
was accepted, not on this toxic: only connections accepted while a
reset_peer toxic exists have SO_LINGER 0 (see ``resets_on_close``), so a
connection already open when the toxic is added is closed normally (EOF).
Once triggered, the end is committed: changing or removing the toxic during
the wait does not cancel it (the real server's goroutine sleeps through its
interrupt too).
"""

from __future__ import annotations

from chaos.toxiproxy.toxics import register
from chaos.toxiproxy.toxics.base import Toxic
from chaos.toxiproxy.toxics.stub import Stub


@register
class ResetPeerToxic(Toxic):
    type_name = "reset_peer"
    go_name = "ResetToxic"
    attributes = ("timeout",)
    resets_on_close = True

    async def pipe(self, stub: Stub) -> None:
        chunk = await stub.recv()
        stub.drop(chunk)
        stub.end_stream_after(self.attrs["timeout"] / 1000.0)
