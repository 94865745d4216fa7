"""Every toxic's behaviour on real TCP traffic (tolerances sized for a busy 2-core box)."""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time

import pytest

from tests.toxiproxy.conftest import (
    Sink,
    close_kind,
    connect,
    recv_all,
    roundtrip,
    wait_until,
)

pytestmark = pytest.mark.toxiproxy_conformance


def rtts(sock: socket.socket, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        assert roundtrip(sock) == b"ping"
        out.append(time.perf_counter() - start)
    return out


def source(payload: bytes, then_wait: float = 0.0):
    """A handler that sends ``payload`` and closes (after ``then_wait``)."""

    def handler(conn: socket.socket) -> None:
        conn.sendall(payload)
        time.sleep(then_wait)

    return handler


def test_no_toxic_passes_data(echo_proxy):
    with connect(echo_proxy.address) as sock:
        assert roundtrip(sock, b"x" * 100_000) == b"x" * 100_000


def test_noop(echo_proxy):
    echo_proxy.add_toxic("noop", stream="upstream")
    echo_proxy.add_toxic("noop")
    with connect(echo_proxy.address) as sock:
        assert roundtrip(sock, b"hello" * 1000) == b"hello" * 1000


def test_latency_applies_to_open_connection_and_goes_away(echo_proxy):
    with connect(echo_proxy.address) as sock:
        assert statistics.median(rtts(sock, 20)) < 0.02
        name = echo_proxy.add_toxic("latency", latency=50)
        median = statistics.median(rtts(sock, 7))
        assert 0.048 <= median < 0.15
        echo_proxy.update_toxic(name, latency=100)
        assert 0.098 <= statistics.median(rtts(sock, 3)) < 0.25
        echo_proxy.remove_toxic(name)
        assert statistics.median(rtts(sock, 20)) < 0.02


def test_latency_jitter_bounds(echo_proxy):
    echo_proxy.add_toxic("latency", latency=40, jitter=20)
    with connect(echo_proxy.address) as sock:
        samples = rtts(sock, 15)
    assert min(samples) >= 0.019
    assert max(samples) < 0.06 + 0.1
    assert max(samples) - min(samples) > 0.005  # it does vary


def test_two_latency_toxics_add_up(echo_proxy):
    echo_proxy.add_toxic("latency", name="a", latency=30)
    echo_proxy.add_toxic("latency", name="b", stream="upstream", latency=30)
    echo_proxy.add_toxic("latency", name="c", latency=30)
    with connect(echo_proxy.address) as sock:
        assert statistics.median(rtts(sock, 5)) >= 0.088


def test_latency_is_not_cumulative(echo_proxy):
    echo_proxy.add_toxic("latency", latency=150)
    with connect(echo_proxy.address) as sock:
        start = time.monotonic()
        for _ in range(5):
            sock.sendall(b"p")
            time.sleep(0.02)
        got = b""
        while len(got) < 5:
            got += sock.recv(10)
        elapsed = time.monotonic() - start
    assert 0.15 + 0.08 <= elapsed < 0.15 + 0.08 + 0.2  # ~ last send + 150 ms, not 5 x 150


def test_negative_latency_means_no_delay(echo_proxy):
    echo_proxy.add_toxic("latency", latency=-100)
    with connect(echo_proxy.address) as sock:
        assert statistics.median(rtts(sock, 10)) < 0.02


def test_bandwidth_rate(tcp_server_factory, tcp_proxy_factory):
    size = 150_000
    server = tcp_server_factory(source(b"b" * size))
    proxy = tcp_proxy_factory(server.host, server.port)
    proxy.add_toxic("bandwidth", rate=150)  # 150 KB/s -> 1.0 s
    with connect(proxy.address) as sock:
        start = time.monotonic()
        data = recv_all(sock, timeout=10)
        elapsed = time.monotonic() - start
    assert len(data) == size
    assert 0.75 <= elapsed <= 1.25


def test_bandwidth_zero_blocks_until_changed(echo_proxy):
    name = echo_proxy.add_toxic("bandwidth", rate=0)
    with connect(echo_proxy.address) as sock:
        sock.sendall(b"held")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        echo_proxy.update_toxic(name, rate=1000)
        sock.settimeout(5)
        assert sock.recv(10) == b"held"


def test_slow_close_delays_the_close(tcp_server_factory, tcp_proxy_factory):
    server = tcp_server_factory(source(b"hi"))
    proxy = tcp_proxy_factory(server.host, server.port)
    proxy.add_toxic("slow_close", delay=300)
    with connect(proxy.address) as sock:
        start = time.monotonic()
        assert sock.recv(10) == b"hi"
        assert time.monotonic() - start < 0.2
        assert recv_all(sock) == b""
        assert time.monotonic() - start >= 0.28


def test_timeout_drops_data_and_closes(echo_proxy):
    echo_proxy.add_toxic("timeout", timeout=200)
    with connect(echo_proxy.address) as sock:
        start = time.monotonic()
        sock.sendall(b"lost")
        assert recv_all(sock) == b""
        assert 0.18 <= time.monotonic() - start < 1.0


def test_timeout_timer_restarts_on_each_chunk(tcp_server_factory, tcp_proxy_factory):
    sink = Sink()
    server = tcp_server_factory(sink)
    proxy = tcp_proxy_factory(server.host, server.port)
    proxy.add_toxic("timeout", stream="upstream", timeout=300)
    with connect(proxy.address) as sock:
        start = time.monotonic()
        for _ in range(5):  # a chunk every 150 ms keeps it open past 300 ms
            sock.sendall(b"x")
            time.sleep(0.15)
        last = time.monotonic()
        assert recv_all(sock) == b""
        closed = time.monotonic()
    assert closed - start > 0.6
    assert 0.1 <= closed - last < 0.8
    assert bytes(sink.data) == b""  # the data was dropped


def test_timeout_zero_is_half_open_until_removed(echo_proxy):
    name = echo_proxy.add_toxic("timeout", timeout=0)
    with connect(echo_proxy.address) as sock:
        sock.sendall(b"void")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        echo_proxy.remove_toxic(name)
        assert recv_all(sock) == b""


def test_reset_peer_sends_rst(echo_proxy):
    """A connection accepted while the toxic exists is reset (SO_LINGER 0 at accept)."""
    echo_proxy.add_toxic("reset_peer", timeout=0)
    with connect(echo_proxy.address) as sock:
        sock.sendall(b"boom")
        assert close_kind(sock) == "reset"


def test_reset_peer_waits_timeout(echo_proxy):
    echo_proxy.add_toxic("reset_peer", stream="upstream", timeout=200)
    with connect(echo_proxy.address) as sock:
        start = time.monotonic()
        sock.sendall(b"boom")
        assert close_kind(sock) == "reset"
        assert time.monotonic() - start >= 0.18


def test_reset_peer_on_an_open_connection_closes_it_normally(echo_proxy):
    """Added to an open connection, reset_peer ends it with EOF, not RST (link.go)."""
    with connect(echo_proxy.address) as sock:
        assert roundtrip(sock) == b"ping"
        echo_proxy.add_toxic("reset_peer", stream="upstream", timeout=200)
        start = time.monotonic()
        sock.sendall(b"boom")  # dropped: it triggers the toxic
        assert close_kind(sock) == "eof"
        assert time.monotonic() - start >= 0.18
    with connect(echo_proxy.address) as later:  # accepted while it exists: RST
        later.sendall(b"boom")
        assert close_kind(later) == "reset"


def test_reset_peer_linger_outlives_the_toxic(tcp_server_factory, tcp_proxy_factory):
    """SO_LINGER 0 is set at accept, so any later close of that connection is an RST."""
    go = threading.Event()

    def greet_on_signal(conn: socket.socket) -> None:
        go.wait(5)
        conn.sendall(b"bye")

    server = tcp_server_factory(greet_on_signal)
    proxy = tcp_proxy_factory(server.host, server.port)
    name = proxy.add_toxic("reset_peer", stream="upstream", timeout=0)
    with connect(proxy.address) as armed:
        time.sleep(0.2)  # accepted and linked while the toxic exists
        proxy.remove_toxic(name)
        go.set()  # the server sends and closes; the proxy closes the client side
        assert close_kind(armed) == "reset"


def test_reset_peer_once_triggered_survives_removal(echo_proxy):
    """Removing the toxic during its wait does not cancel the reset (as the real server)."""
    name = echo_proxy.add_toxic("reset_peer", stream="upstream", timeout=300)
    with connect(echo_proxy.address) as sock:
        sock.sendall(b"boom")
        time.sleep(0.1)  # the toxic has the chunk and is waiting
        echo_proxy.remove_toxic(name)
        assert close_kind(sock) == "reset"


def test_reset_peer_once_triggered_on_an_open_connection_survives_removal(echo_proxy):
    """The committed close still comes at the end of the wait, as an EOF; nothing passes."""
    with connect(echo_proxy.address) as sock:
        assert roundtrip(sock) == b"ping"
        name = echo_proxy.add_toxic("reset_peer", stream="upstream", timeout=400)
        start = time.monotonic()
        sock.sendall(b"boom")
        time.sleep(0.1)
        echo_proxy.remove_toxic(name)  # the real server answers only after the close
        with contextlib.suppress(OSError):
            sock.sendall(b"more")  # swallowed (or the connection is already gone)
        sock.settimeout(5)
        assert sock.recv(10) == b""
        assert time.monotonic() - start >= 0.38


def test_reset_peer_removal_does_not_wait_for_the_close(echo_proxy, embedded_only):
    """Deviation: the real server's DELETE blocks until the triggered close; here it returns."""
    name = echo_proxy.add_toxic("reset_peer", stream="upstream", timeout=1000)
    with connect(echo_proxy.address) as sock:
        sock.sendall(b"boom")
        time.sleep(0.1)
        start = time.monotonic()
        echo_proxy.remove_toxic(name)
        assert time.monotonic() - start < 0.5
        assert close_kind(sock) == "reset"


def sliced_reads(tcp_server_factory, tcp_proxy_factory, payload: bytes, **attrs: int):
    """(read sizes, seconds from first to last read) of ``payload`` sent in one chunk."""
    server = tcp_server_factory(source(payload, then_wait=1.5))
    proxy = tcp_proxy_factory(server.host, server.port)
    proxy.add_toxic("slicer", **attrs)
    sizes: list[int] = []
    data = b""
    with connect(proxy.address) as sock:
        sock.settimeout(5)
        while len(data) < len(payload):
            piece = sock.recv(65536)
            assert piece
            if not sizes:
                start = time.monotonic()
            sizes.append(len(piece))
            data += piece
        elapsed = time.monotonic() - start
    assert data == payload
    return sizes, elapsed


def test_slicer_halves_each_chunk(tcp_server_factory, tcp_proxy_factory):
    """100 bytes at average 10, variation 0, 20 ms: 16 slices of 6-7 bytes over ~0.3 s."""
    sizes, elapsed = sliced_reads(
        tcp_server_factory,
        tcp_proxy_factory,
        bytes(range(100)),
        average_size=10,
        size_variation=0,
        delay=20_000,
    )
    assert not [size for size in sizes if 8 <= size <= 11], sizes  # never average-sized cuts
    assert sum(1 for size in sizes if size in (6, 7)) >= 12, sizes  # rare coalescing aside
    assert 0.8 * 0.02 * 15 <= elapsed < 1.5, (elapsed, sizes)


def test_slicer_with_variation_stays_within_average_plus_variation(
    tcp_server_factory, tcp_proxy_factory
):
    sizes, elapsed = sliced_reads(
        tcp_server_factory,
        tcp_proxy_factory,
        bytes(range(256)) * 4,
        average_size=100,
        size_variation=20,
        delay=30_000,
    )
    assert all(size <= 120 for size in sizes), sizes
    assert len(sizes) >= 8, sizes
    assert elapsed >= 0.8 * 0.03 * (len(sizes) - 1)


def test_slicer_negative_variation_is_used_as_is(tcp_server_factory, tcp_proxy_factory):
    """Average 10, variation -3: halve while over 7 bytes (64 -> 16 slices of 4), no abs()."""
    sizes, _ = sliced_reads(
        tcp_server_factory,
        tcp_proxy_factory,
        bytes(range(64)),
        average_size=10,
        size_variation=-3,
        delay=20_000,
    )
    assert all(size % 4 == 0 for size in sizes), sizes  # 4-byte slices (or a few coalesced)
    assert sizes.count(4) >= 12, sizes


def test_slicer_average_zero_sends_nothing(echo_proxy):
    """The real server never finishes cutting: nothing passes."""
    echo_proxy.add_toxic("slicer", average_size=0)
    with connect(echo_proxy.address) as sock:
        sock.sendall(b"never")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(10)


def test_slicer_average_zero_holds_data_until_changed(echo_proxy, embedded_only):
    """Deviation: the held data is released by a change (the real server stays stuck)."""
    name = echo_proxy.add_toxic("slicer", stream="upstream", average_size=0)
    with connect(echo_proxy.address) as sock:
        sock.sendall(b"held back")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        echo_proxy.update_toxic(name, average_size=4)
        sock.settimeout(5)
        got = b""
        while len(got) < 9:
            got += sock.recv(10)
        assert got == b"held back"


def test_slicer_large_variation_keeps_data_intact(echo_proxy, embedded_only):
    """Deviation: variation >= half a chunk crashes the real server; here cuts stay inside."""
    echo_proxy.add_toxic("slicer", average_size=1, size_variation=10)
    with connect(echo_proxy.address) as sock:
        assert roundtrip(sock, bytes(range(200))) == bytes(range(200))


def test_limit_data_upstream_exact(tcp_server_factory, tcp_proxy_factory):
    sink = Sink()
    server = tcp_server_factory(sink)
    proxy = tcp_proxy_factory(server.host, server.port)
    proxy.add_toxic("limit_data", stream="upstream", bytes=10)
    with connect(proxy.address) as sock:
        sock.sendall(b"0123456789abcdefghijklmno")
        assert recv_all(sock) == b""
    assert sink.closed.wait(5)
    assert bytes(sink.data) == b"0123456789"


def test_limit_data_downstream_exact(tcp_server_factory, tcp_proxy_factory):
    server = tcp_server_factory(source(b"z" * 10_000, then_wait=1.0))
    proxy = tcp_proxy_factory(server.host, server.port)
    proxy.add_toxic("limit_data", bytes=1234)
    with connect(proxy.address) as sock:
        assert recv_all(sock) == b"z" * 1234


def test_toxicity_zero_never_applies(echo_proxy):
    echo_proxy.add_toxic("latency", latency=500, toxicity=0.0)
    with connect(echo_proxy.address) as sock:
        assert max(rtts(sock, 5)) < 0.2


def test_toxicity_rolls_per_connection(echo_proxy):
    echo_proxy.add_toxic("timeout", timeout=0, toxicity=0.5)
    outcomes = []
    for _ in range(16):
        with connect(echo_proxy.address) as sock:
            sock.sendall(b"?")
            sock.settimeout(0.15)
            try:
                outcomes.append(sock.recv(10) == b"?")
            except TimeoutError:
                outcomes.append(False)
    assert any(outcomes) and not all(outcomes)


def test_many_connections_in_parallel_with_toxics(echo_proxy):
    echo_proxy.add_toxic("latency", latency=20, jitter=5)
    echo_proxy.add_toxic("slicer", stream="upstream", average_size=50, size_variation=10)
    errors = []

    def client() -> None:
        try:
            with connect(echo_proxy.address) as sock:
                payload = b"m" * 2000
                assert roundtrip(sock, payload) == payload
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert wait_until(lambda: True)
