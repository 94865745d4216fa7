"""Small TCP servers for the proxy's own tests, and helpers shared by them."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from chaos.fixtures.toxiproxy import unique_proxy_name
from chaos.toxiproxy.harness import ProxyHandle, ToxiproxyServer

SLACK = 2.0
"""Seconds an upper bound allows past the delay a toxic promises (or past zero, with none).

Timing checks are contracts: a delay cannot be shorter than the toxic's, so lower bounds
are exact; a busy 2-core machine can stall any step, so an upper bound only tells "bounded"
from "hung". "Applied or not" is told by a lower bound instead: while a latency of L
applies, no round trip is faster than L, so a typical one faster than L/2 proves it does not.
"""


class TcpServer:
    """A threaded TCP server on 127.0.0.1 that runs ``handler(conn)`` per connection."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()
        self.accepted = 0
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.accepted += 1
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.handler(conn)
        with contextlib.suppress(OSError):
            conn.close()
        with self._lock:
            if conn in self.conns:
                self.conns.remove(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        with self._lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


def echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


class Sink:
    """Records what each connection received, with arrival times."""

    def __init__(self) -> None:
        self.reads: list[tuple[float, int]] = []
        self.data = bytearray()
        self.closed = threading.Event()

    def __call__(self, conn: socket.socket) -> None:
        while data := conn.recv(65536):
            self.reads.append((time.monotonic(), len(data)))
            self.data.extend(data)
        self.closed.set()


@pytest.fixture
def echo_server() -> Iterator[TcpServer]:
    server = TcpServer(echo)
    yield server
    server.close()


@pytest.fixture
def tcp_server_factory() -> Iterator[Callable[[Callable[[socket.socket], None]], TcpServer]]:
    made: list[TcpServer] = []

    def make(handler: Callable[[socket.socket], None]) -> TcpServer:
        server = TcpServer(handler)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture
def echo_proxy(
    echo_server: TcpServer, tcp_proxy_factory: Callable[..., ProxyHandle]
) -> ProxyHandle:
    return tcp_proxy_factory(echo_server.host, echo_server.port)


@pytest.fixture
def pname(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Unique proxy names for tests that create proxies themselves (cleaned up by ``cleanup``)."""
    return lambda prefix="t": unique_proxy_name(request, prefix)


@pytest.fixture
def api(toxiproxy_server: ToxiproxyServer) -> Iterator[ToxiproxyServer]:
    """The session server; proxies this process created during the test are deleted after it.

    Only names carrying this process's pid (see ``pname``), so that workers sharing
    a real server never delete each other's proxies.
    """
    before = set(toxiproxy_server.proxies())
    yield toxiproxy_server
    mine = f"_{os.getpid()}_"
    for name in set(toxiproxy_server.proxies()) - before:
        if mine not in name:
            continue
        with contextlib.suppress(Exception):
            toxiproxy_server.delete_proxy(name)


@pytest.fixture
def embedded_only(toxiproxy_server: ToxiproxyServer) -> None:
    if toxiproxy_server.kind != "embedded":
        pytest.skip("checks behaviour only the embedded server promises (the real one differs)")


def connect(address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def roundtrip(sock: socket.socket, payload: bytes = b"ping") -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        data = sock.recv(65536)
        if not data:
            break
        got += data
    return got


def recv_exactly(sock: socket.socket, size: int, timeout: float = 5.0) -> bytes:
    """``size`` bytes (fewer only at EOF; raises on timeout)."""
    sock.settimeout(timeout)
    got = b""
    while len(got) < size and (data := sock.recv(size - len(got))):
        got += data
    return got


def recv_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything until EOF (raises on timeout)."""
    sock.settimeout(timeout)
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def close_kind(sock: socket.socket, timeout: float = 5.0) -> str:
    """How the peer ended the connection: ``"eof"`` (FIN) or ``"reset"`` (RST); data ignored."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return "reset"
    return "eof"


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
