"""timeout: drop all data; close after ``timeout`` ms without data (0 = never).

Each new chunk restarts the timer. With 0 the connection stays half-open
(data vanishes, nothing closes) until the toxic is removed, and removing it
closes the connection, like the real server.
"""

from __future__ import annotations

from chaos.toxiproxy.stream import EOF
from chaos.toxiproxy.toxics import register
from chaos.toxiproxy.toxics.base import Toxic
from chaos.toxiproxy.toxics.stub import Stub


@register
class TimeoutToxic(Toxic):
    type_name = "timeout"
    go_name = "TimeoutToxic"
    attributes = ("timeout",)
    closes_on_remove = True

    async def pipe(self, stub: Stub) -> None:
        timeout = self.attrs["timeout"] / 1000.0 if self.attrs["timeout"] > 0 else None
        while True:
            chunk = await stub.recv(timeout=timeout)
            if chunk is None:  # timer expired with no data
                stub.send(EOF())
                return
            if chunk.data is None:
                stub.send(chunk)
                return
            stub.drop(chunk)
