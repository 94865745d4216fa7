"""latency: delay each chunk by ``latency`` ± ``jitter`` ms from when it was read.

The delay counts from the chunk's read time, not from when this toxic got it,
so back-to-back chunks do not accumulate delay; the chunk's timestamp moves by
the delay so that a second latency toxic adds its own on top.
"""

from __future__ import annotations

import random

from chaos.toxiproxy.toxics import register
from chaos.toxiproxy.toxics.base import Toxic
from chaos.toxiproxy.toxics.stub import Stub


@register
class LatencyToxic(Toxic):
    type_name = "latency"
    go_name = "LatencyToxic"
    attributes = ("latency", "jitter")

    def delay(self) -> float:
        """One delay in seconds (may be <= 0: no delay)."""
        latency, jitter = self.attrs["latency"], self.attrs["jitter"]
        if jitter > 0:
            return (latency + random.uniform(-jitter, jitter)) / 1000.0
        return latency / 1000.0

    async def pipe(self, stub: Stub) -> None:
        while True:
            chunk = await stub.recv()
            if chunk.data is None:
                stub.send(chunk)
                return
            delay = self.delay()
            if delay > 0:
                due = chunk.ts + delay
                await stub.sleep_until(due)
                chunk.ts = due
            stub.send(chunk)
