"""Accepted connections: one upstream connection each, two directions (links).

The hot path is plain asyncio protocols: with no toxic in a direction the
protocol's ``data_received`` *is* the other transport's ``write`` (rebound
whenever the chain changes), so a chunk costs one callback and one ``send``.
With toxics, chunks enter the direction's :class:`chaos.toxiproxy.chain.Chain`
stamped with their read time.

Closing follows Toxiproxy: end of stream in one direction, once it has gone
through that direction's toxics, closes the destination socket; the other
direction then ends too after delivering what it already read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from chaos.toxiproxy.chain import Chain
from chaos.toxiproxy.stream import EOF, Chunk

if TYPE_CHECKING:
    from chaos.toxiproxy.model import Proxy

log = logging.getLogger("chaos.toxiproxy.dataplane")

CHAIN_HIGH_WATER = 256 * 1024
"""Bytes inside a direction's toxic chain above which reading its source pauses."""

FLUSH_TIMEOUT = 30.0
"""Seconds a closed connection may spend flushing to a peer that does not read."""

_LINGER_ZERO = struct.pack("ii", 1, 0)


def _abort_all(transports: list[asyncio.Transport]) -> None:
    for transport in transports:
        transport.abort()


def _ignore(_data: bytes) -> None:
    """data_received of a direction that is over: drop."""


class Side(asyncio.Protocol):
    """The protocol of one socket (client or upstream) of a connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.inbound: Link  # reads from this socket
        self.outbound: Link  # writes to this socket
        self.forward_data: Callable[[bytes], None] = _ignore  # set by Link.rebind

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        self.conn.side_made(self)

    def data_received(self, data: bytes) -> None:
        # uvloop caches the bound method, so the switch happens one level down.
        self.forward_data(data)

    def eof_received(self) -> bool:
        self.inbound.feed_eof()
        return True  # the links decide when to close

    def connection_lost(self, exc: Exception | None) -> None:
        self.outbound.dst_lost()
        self.inbound.feed_eof()
        self.conn.side_lost(self)

    def pause_writing(self) -> None:
        self.outbound.set_dst_paused(True)

    def resume_writing(self) -> None:
        self.outbound.set_dst_paused(False)


class Link:
    """One direction of a connection: src socket -> toxic chain -> dst socket."""

    def __init__(self, conn: Connection, direction: str, src: Side, dst: Side) -> None:
        self.conn = conn
        self.loop = conn.loop
        self.direction = direction
        self.src = src
        self.dst = dst
        src.inbound = self
        dst.outbound = self
        self.other: Link
        self.chain = Chain(self)
        self.eof_fed = False
        self.finished = False
        self.dst_gone = False
        self.dst_paused = False
        self.src_paused = False
        self.chain_bytes = 0
        self.early: list[bytes] = []  # written before the upstream socket exists
        self.finish_pending = False

    # --- wiring -----------------------------------------------------------------------
    def rebind(self) -> None:
        """Point the source protocol's data_received at the cheapest correct handler."""
        handler: Callable[[bytes], None]
        if self.finished or self.eof_fed:
            handler = _ignore
        elif not self.chain and self.dst.transport is not None and not self.dst_gone:
            handler = self.dst.transport.write
        else:
            handler = self.on_data
        self.src.forward_data = handler

    def on_data(self, data: bytes) -> None:
        if self.finished or self.eof_fed:
            return
        if self.chain:
            self.chain_bytes += len(data)
            self.chain.feed(Chunk(data, self.loop.time()))
            if self.chain_bytes > CHAIN_HIGH_WATER:
                self._update_reading()
        else:
            self._write(data)

    def feed_eof(self) -> None:
        if self.eof_fed:
            return
        self.eof_fed = True
        self.rebind()
        if self.chain:
            self.chain.feed(EOF())
        else:
            self.finish()

    # --- the end of the chain (ChainEnd) -------------------------------------------------
    def deliver(self, chunk: Chunk) -> None:
        """A chunk that went through every toxic: write it (end of stream: finish)."""
        if chunk.data is None:
            self.finish()
            return
        self.chain_bytes -= len(chunk.data)
        self._write(chunk.data)
        if self.src_paused:
            self._update_reading()

    def chain_changed(self) -> None:
        self.rebind()

    def abort(self) -> None:
        self.conn.abort()

    def discard(self, nbytes: int) -> None:
        self.chain_bytes -= nbytes
        if self.src_paused:
            self._update_reading()

    def _write(self, data: bytes) -> None:
        if self.finished or self.dst_gone:
            return
        if self.dst.transport is None:
            self.early.append(data)
            self.conn.pause_client()
            return
        self.dst.transport.write(data)

    def flush_early(self) -> None:
        """The upstream socket exists now: send what was read before it did."""
        early, self.early = self.early, []
        for data in early:
            self._write(data)
        if self.finish_pending:
            self.finish_pending = False
            self.finish()

    def finish(self) -> None:
        """End of stream reached the destination: close it, end the other direction."""
        if self.finished:
            return
        if self.dst.transport is None and not self.conn.closed and not self.conn.upstream_ready:
            self.finish_pending = True  # upstream still connecting: finish after it does
            return
        self.finished = True
        self.eof_fed = True
        self.rebind()
        transport = self.dst.transport
        if transport is not None and not transport.is_closing():
            transport.close()
        self.other.feed_eof()
        self.conn.check_done()

    # --- flow control ----------------------------------------------------------------
    def set_dst_paused(self, paused: bool) -> None:
        self.dst_paused = paused
        self._update_reading()

    def dst_lost(self) -> None:
        self.dst_gone = True
        self.rebind()

    def _update_reading(self) -> None:
        transport = self.src.transport
        if transport is None or transport.is_closing():
            return
        want_pause = self.dst_paused or self.chain_bytes > CHAIN_HIGH_WATER
        if want_pause and not self.src_paused:
            self.src_paused = True
            if self.conn.upstream_ready:
                transport.pause_reading()
        elif not want_pause and self.src_paused and self.chain_bytes <= CHAIN_HIGH_WATER // 2:
            self.src_paused = False
            if self.conn.upstream_ready:
                transport.resume_reading()


class Connection:
    """A client connection and its upstream connection."""

    log = log

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.loop = asyncio.get_running_loop()
        self.client = Side(self)
        self.upstream = Side(self)
        self.up = Link(self, "upstream", self.client, self.upstream)
        self.down = Link(self, "downstream", self.upstream, self.client)
        self.up.other = self.down
        self.down.other = self.up
        self.upstream_ready = False
        self.closed = False
        self._connect_task: asyncio.Task[None] | None = None

    def pause_client(self) -> None:
        transport = self.client.transport
        if transport is not None and not self.upstream_ready and not transport.is_closing():
            transport.pause_reading()

    def side_made(self, side: Side) -> None:
        if side is self.client:
            assert side.transport is not None
            side.transport.pause_reading()
            self.loop.call_soon(self.pause_client)  # uvloop starts reading after connection_made
            self.proxy.connections.add(self)
            self.up.chain.start(self.proxy.toxics_for("upstream"))
            self.down.chain.start(self.proxy.toxics_for("downstream"))
            self._connect_task = self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        host, port = self.proxy.upstream_addr()
        try:
            await self.loop.create_connection(lambda: self.upstream, host, port)
        except asyncio.CancelledError:
            raise
        except (OSError, ValueError, UnicodeError) as exc:
            log.info("proxy %s: upstream %s unreachable: %s", self.proxy.name, host, exc)
            self.close()
            return
        finally:
            self._connect_task = None
        if self.closed:
            self.abort()
            return
        if self.up.chain.resets_on_close or self.down.chain.resets_on_close:
            self._linger_zero()
        self.upstream_ready = True
        for link in (self.up, self.down):
            link.rebind()
            link._update_reading()
        self.up.flush_early()
        client = self.client.transport
        if not self.up.src_paused and not self.up.eof_fed and client and not client.is_closing():
            client.resume_reading()

    def side_lost(self, side: Side) -> None:
        if side is self.client and not self.upstream_ready:
            self.abort()
        self.check_done()

    def check_done(self) -> None:
        if self.up.finished and self.down.finished:
            self._cleanup()

    def _cleanup(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._connect_task is not None:
            self._connect_task.cancel()
            self._connect_task = None
        self.up.chain.close()
        self.down.chain.close()
        self.proxy.connections.discard(self)
        stuck = [t for t in self._transports() if t.get_write_buffer_size()]
        if stuck:  # a peer that never reads must not pin the sockets forever
            self.loop.call_later(FLUSH_TIMEOUT, _abort_all, stuck)

    def _transports(self) -> list[asyncio.Transport]:
        return [s.transport for s in (self.client, self.upstream) if s.transport is not None]

    def close(self) -> None:
        """Orderly close of both sockets (pending writes are flushed)."""
        for transport in self._transports():
            transport.close()
        self.up.finished = self.down.finished = True
        self._cleanup()

    def abort(self) -> None:
        """Close both sockets at once, discarding unsent data."""
        for transport in self._transports():
            transport.abort()
        self.up.finished = self.down.finished = True
        self._cleanup()

    def _linger_zero(self) -> None:
        """Every later close of this connection is a TCP RST (SO_LINGER 0).

        Like Toxiproxy's link.go: set once both sockets exist, for connections
        accepted while a reset_peer toxic exists (an unreachable upstream
        still closes the client normally).
        """
        for transport in self._transports():
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
