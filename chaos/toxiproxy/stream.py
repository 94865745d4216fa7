"""What flows through a toxic chain: chunks of bytes, and the end of the stream.

Kept apart from the chain and the toxics (like Toxiproxy's ``stream``
package) so that both depend on it and neither on the other.
"""

from __future__ import annotations


class Chunk:
    """Bytes read from one side (``data is None`` marks end of stream) and when."""

    __slots__ = ("data", "ts")

    def __init__(self, data: bytes | None, ts: float) -> None:
        self.data = data
        self.ts = ts


def EOF() -> Chunk:
    """A fresh end-of-stream chunk."""
    return Chunk(None, 0.0)
