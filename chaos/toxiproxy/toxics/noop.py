"""noop: passes data unchanged (useful to test the chain itself)."""

from __future__ import annotations

from chaos.toxiproxy.toxics import register
from chaos.toxiproxy.toxics.base import Toxic
from chaos.toxiproxy.toxics.stub import Stub, pass_through


@register
class NoopToxic(Toxic):
    type_name = "noop"
    go_name = "NoopToxic"

    async def pipe(self, stub: Stub) -> None:
        await pass_through(stub)
