"""Every toxic's behaviour on real TCP traffic.

Timing: lower bounds are the toxic's promise (exact); upper bounds allow ``SLACK`` on top
(see conftest). A read may hold several slices run together when the reader wakes late
(TCP keeps no boundaries), so slice checks hold for any grouping of consecutive slices.
"""

from __future__ import annotations

import contextlib
import itertools
import selectors
import socket
import statistics
import threading
import time

import pytest

from tests.toxiproxy.conftest import (
    SLACK,
    Sink,
    close_kind,
    connect,
    echo,
    recv_all,
    recv_exactly,
    roundtrip,
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


def greeter(conn: socket.socket) -> None:
    """Says ``hi`` first (the client then knows the proxy has linked it), then echoes."""
    conn.sendall(b"hi")
    echo(conn)


def test_no_toxic_passes_data(echo_proxy):
    with connect(echo_proxy.address) as sock:
        assert roundtrip(sock, b"x" * 100_000) == b"x" * 100_000


def test_noop(echo_proxy):
    echo_proxy.add_toxic("noop", stream="upstream")
    echo_proxy.add_toxic("noop")
    with connect(echo_proxy.address) as sock:
        assert roundtrip(sock, b"hello" * 1000) == b"hello" * 1000


def test_latency_applies_to_open_connection_and_goes_away(echo_proxy):
    """Every round trip takes at least the latency; once removed, none is held.

    The update goes to 300 ms, which the old 50 ms would reach only in a 250 ms stall;
    after the removal a typical round trip under 150 ms is impossible if it still applied.
    """
    with connect(echo_proxy.address) as sock:
        assert roundtrip(sock) == b"ping"
        name = echo_proxy.add_toxic("latency", latency=50)
        assert min(rtts(sock, 3)) >= 0.049
        echo_proxy.update_toxic(name, latency=300)
        assert min(rtts(sock, 2)) >= 0.299
        echo_proxy.remove_toxic(name)
        assert statistics.median(rtts(sock, 9)) < 0.15


def test_latency_jitter_bounds(echo_proxy):
    """40 ± 20 ms: never under 20 ms, bounded, and it varies.

    15 draws from 20-60 ms all within 5 ms of each other: odds below 1e-10.
    """
    echo_proxy.add_toxic("latency", latency=40, jitter=20)
    with connect(echo_proxy.address) as sock:
        samples = rtts(sock, 15)
    assert min(samples) >= 0.019
    assert max(samples) < 0.06 + SLACK
    assert max(samples) - min(samples) > 0.005


def test_two_latency_toxics_add_up(echo_proxy):
    echo_proxy.add_toxic("latency", name="a", latency=30)
    echo_proxy.add_toxic("latency", name="b", stream="upstream", latency=30)
    echo_proxy.add_toxic("latency", name="c", latency=30)
    with connect(echo_proxy.address) as sock:
        assert min(rtts(sock, 5)) >= 0.089  # 30 + 30 down, 30 up: every round trip


def test_latency_is_not_cumulative(echo_proxy):
    """Bytes sent 20 ms apart each come back 150 ms after their own send.

    Delays that added up (each chunk waiting for the one before) would hold the last of
    10 bytes until at least 10 x 150 ms after the first send: 1.5 s, against ~0.33 s here.
    """
    latency, count = 0.15, 10
    echo_proxy.add_toxic("latency", latency=int(latency * 1000))
    with connect(echo_proxy.address) as sock:
        start = time.monotonic()
        for i in range(count):
            if i:
                time.sleep(0.02)
            last_sent = time.monotonic()
            sock.sendall(b"p")
        assert recv_exactly(sock, count) == b"p" * count
        done = time.monotonic()
    assert done - last_sent >= latency - 0.001
    assert done - start < count * latency


def test_negative_latency_means_no_delay(echo_proxy):
    echo_proxy.add_toxic("latency", latency=-1000)
    with connect(echo_proxy.address) as sock:
        assert statistics.median(rtts(sock, 5)) < 0.5  # abs(): every one would take >= 1 s


def test_bandwidth_rate(tcp_server_factory, tcp_proxy_factory):
    """150 KB at 150 KB/s: never under 1 s (the rate is a ceiling), and bounded."""
    size = 150_000
    server = tcp_server_factory(source(b"b" * size))
    proxy = tcp_proxy_factory(server.host, server.port)
    proxy.add_toxic("bandwidth", rate=150)  # 1 KB = 1000 bytes
    start = time.monotonic()  # before connecting: the proxy may read the data before that returns
    with connect(proxy.address) as sock:
        data = recv_all(sock, timeout=10)
    elapsed = time.monotonic() - start
    assert len(data) == size
    assert 0.995 <= elapsed < 1.0 + SLACK


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


def test_slow_close_delays_the_close_not_the_data(tcp_server_factory, tcp_proxy_factory):
    """The data comes at once, the close 1.5 s later.

    Data held back with the close would come >= 1.5 s after the start: 0.5 s past its bound.
    """
    server = tcp_server_factory(source(b"hi"))
    proxy = tcp_proxy_factory(server.host, server.port)
    proxy.add_toxic("slow_close", delay=1500)
    start = time.monotonic()  # before connecting: the proxy may read "hi" before that returns
    with connect(proxy.address) as sock:
        assert recv_exactly(sock, 2) == b"hi"
        data_at = time.monotonic() - start
        assert recv_all(sock) == b""
        closed_at = time.monotonic() - start
    assert data_at < 1.0
    assert 1.499 <= closed_at < 1.5 + SLACK


def test_timeout_drops_data_and_closes(echo_proxy):
    echo_proxy.add_toxic("timeout", timeout=200)
    start = time.monotonic()  # before connecting: the timer starts when the proxy links it
    with connect(echo_proxy.address) as sock:
        sock.sendall(b"lost")
        assert recv_all(sock) == b""
    assert 0.199 <= time.monotonic() - start < 0.2 + SLACK


def test_timeout_timer_restarts_on_each_chunk(tcp_server_factory, tcp_proxy_factory):
    """A chunk every 100 ms keeps a 1 s timeout open; it closes 1 s after the last one.

    Only a 0.9 s stall between two sends could let it close early; a timer that did not
    restart would close 1 s after the link, about 0.5 s before the last chunk's bound.
    """
    sink = Sink()
    server = tcp_server_factory(sink)
    proxy = tcp_proxy_factory(server.host, server.port)
    proxy.add_toxic("timeout", stream="upstream", timeout=1000)
    with connect(proxy.address) as sock:
        for i in range(6):
            if i:
                time.sleep(0.1)
            last_sent = time.monotonic()
            sock.sendall(b"x")
        assert recv_all(sock, timeout=10) == b""
        closed = time.monotonic()
    assert 0.999 <= closed - last_sent < 1.0 + SLACK
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
        assert 0.199 <= time.monotonic() - start < 0.2 + SLACK


def test_reset_peer_on_an_open_connection_closes_it_normally(echo_proxy):
    """Added to an open connection, reset_peer ends it with EOF, not RST (link.go)."""
    with connect(echo_proxy.address) as sock:
        assert roundtrip(sock) == b"ping"
        echo_proxy.add_toxic("reset_peer", stream="upstream", timeout=200)
        start = time.monotonic()
        sock.sendall(b"boom")  # dropped: it triggers the toxic
        assert close_kind(sock) == "eof"
        assert 0.199 <= time.monotonic() - start < 0.2 + SLACK
    with connect(echo_proxy.address) as later:  # accepted while it exists: RST
        later.sendall(b"boom")
        assert close_kind(later) == "reset"


def test_reset_peer_linger_outlives_the_toxic(tcp_server_factory, tcp_proxy_factory):
    """SO_LINGER 0 is set at accept, so any later close of that connection is an RST."""
    go = threading.Event()

    def greet_then_bye_on_signal(conn: socket.socket) -> None:
        conn.sendall(b"hi")
        go.wait(10)
        conn.sendall(b"bye")

    server = tcp_server_factory(greet_then_bye_on_signal)
    proxy = tcp_proxy_factory(server.host, server.port)
    name = proxy.add_toxic("reset_peer", stream="upstream", timeout=0)
    with connect(proxy.address) as armed:
        assert recv_exactly(armed, 2) == b"hi"  # linked (SO_LINGER decided) while it exists
        proxy.remove_toxic(name)
        go.set()  # the server sends and closes; the proxy closes the client side
        assert close_kind(armed) == "reset"


# The three tests below remove a reset_peer toxic while it waits. Nothing outside the proxy
# shows when the toxic took the chunk, so they wait 0.5 s for the proxy to read a few bytes
# on a connection known to be linked, inside a wait of 1-2 s. A stall past 0.5 s fails them
# (the chunk would pass, or be echoed); a removal after the close only makes them weaker.
TRIGGER_WAIT = 0.5


def test_reset_peer_once_triggered_survives_removal(tcp_server_factory, tcp_proxy_factory):
    """Removing the toxic during its wait does not cancel the reset (as the real server)."""
    server = tcp_server_factory(greeter)
    proxy = tcp_proxy_factory(server.host, server.port)
    name = proxy.add_toxic("reset_peer", stream="upstream", timeout=1000)
    with connect(proxy.address) as sock:
        assert recv_exactly(sock, 2) == b"hi"
        sock.sendall(b"boom")
        time.sleep(TRIGGER_WAIT)  # the toxic has the chunk and is waiting
        proxy.remove_toxic(name)
        assert close_kind(sock) == "reset"


def test_reset_peer_once_triggered_on_an_open_connection_survives_removal(echo_proxy):
    """The committed close still comes at the end of the wait, as an EOF; nothing passes."""
    with connect(echo_proxy.address) as sock:
        assert roundtrip(sock) == b"ping"
        name = echo_proxy.add_toxic("reset_peer", stream="upstream", timeout=1000)
        start = time.monotonic()
        sock.sendall(b"boom")
        time.sleep(TRIGGER_WAIT)
        echo_proxy.remove_toxic(name)  # the real server answers only after the close
        with contextlib.suppress(OSError):
            sock.sendall(b"more")  # swallowed (or the connection is already gone)
        sock.settimeout(5)
        assert sock.recv(10) == b""
        assert 0.999 <= time.monotonic() - start < 1.0 + SLACK


def test_reset_peer_removal_does_not_wait_for_the_close(
    tcp_server_factory, tcp_proxy_factory, embedded_only
):
    """Deviation: the real server's DELETE blocks until the triggered close; here it returns.

    A blocking DELETE cannot return before 2 s after the send; this one has ~1.4 s to spare.
    """
    server = tcp_server_factory(greeter)
    proxy = tcp_proxy_factory(server.host, server.port)
    name = proxy.add_toxic("reset_peer", stream="upstream", timeout=2000)
    with connect(proxy.address) as sock:
        assert recv_exactly(sock, 2) == b"hi"
        sent = time.monotonic()
        sock.sendall(b"boom")
        time.sleep(TRIGGER_WAIT)
        proxy.remove_toxic(name)
        assert time.monotonic() - sent < 1.95
        assert close_kind(sock) == "reset"


def sliced_reads(tcp_server_factory, tcp_proxy_factory, payload: bytes, **attrs: int):
    """(read sizes, seconds from before connecting to the last read) of ``payload``.

    The server sends it in one chunk. The seconds are at least the pauses between the first
    and the last slice: the proxy cannot read the chunk before the client connects.
    """
    server = tcp_server_factory(source(payload, then_wait=1.5))
    proxy = tcp_proxy_factory(server.host, server.port)
    proxy.add_toxic("slicer", **attrs)
    sizes: list[int] = []
    data = b""
    start = time.monotonic()
    with connect(proxy.address) as sock:
        sock.settimeout(5)
        while len(data) < len(payload):
            piece = sock.recv(65536)
            assert piece
            sizes.append(len(piece))
            data += piece
        elapsed = time.monotonic() - start
    assert data == payload
    return sizes, elapsed


def cuts(sizes: list[int]) -> set[int]:
    """Offsets where one read (or slice) ends."""
    return set(itertools.accumulate(sizes))


def test_slicer_halves_each_chunk(tcp_server_factory, tcp_proxy_factory):
    """100 bytes at average 10, variation 0, 20 ms: 16 slices of 6-7 bytes over >= 0.3 s.

    Halving 100 -> 50 -> 25 -> 12/13 -> 6/6, 6/7: every read ends at one of those cuts
    (never at an average-sized one), and 15 pauses of 20 ms separate the first and last.
    """
    sizes, elapsed = sliced_reads(
        tcp_server_factory,
        tcp_proxy_factory,
        bytes(range(100)),
        average_size=10,
        size_variation=0,
        delay=20_000,
    )
    assert cuts(sizes) <= cuts([6, 6, 6, 7] * 4), sizes
    assert 15 * 0.02 - 0.001 <= elapsed < 15 * 0.02 + SLACK, (elapsed, sizes)


def test_slicer_with_variation_stays_within_average_plus_variation(
    tcp_server_factory, tcp_proxy_factory
):
    """1024 bytes in slices of at most 120: at least 9 of them, so at least 8 pauses.

    A read over 120 bytes is slices run together (a late reader), so only most reads are
    checked: most are single slices, and with slices over 120 every such read would fail.
    """
    sizes, elapsed = sliced_reads(
        tcp_server_factory,
        tcp_proxy_factory,
        bytes(range(256)) * 4,
        average_size=100,
        size_variation=20,
        delay=30_000,
    )
    assert 2 * sum(size <= 120 for size in sizes) >= len(sizes), sizes
    assert elapsed >= 8 * 0.03 - 0.001, (elapsed, sizes)


def test_slicer_negative_variation_is_used_as_is(tcp_server_factory, tcp_proxy_factory):
    """Average 10, variation -3: halve while over 7 bytes (64 -> 16 slices of 4), no abs().

    With abs() the bound would be 13: 8 slices of 8, 7 pauses (0.28 s) instead of 15 (0.6 s).
    """
    sizes, elapsed = sliced_reads(
        tcp_server_factory,
        tcp_proxy_factory,
        bytes(range(64)),
        average_size=10,
        size_variation=-3,
        delay=40_000,
    )
    assert cuts(sizes) <= cuts([4] * 16), sizes
    assert elapsed >= 15 * 0.04 - 0.001, (elapsed, sizes)


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
    """With the 1 s latency applied, no round trip could take under 0.5 s."""
    echo_proxy.add_toxic("latency", latency=1000, toxicity=0.0)
    for _ in range(3):  # rolled per connection
        with connect(echo_proxy.address) as sock:
            assert statistics.median(rtts(sock, 3)) < 0.5


def test_toxicity_rolls_per_connection(echo_proxy):
    """Toxicity 0.5: of 40 connections some get the toxic and some do not.

    All 40 rolling the same way has odds of 2 in 2**40. With the toxic (timeout 0) a
    connection never answers, so the wait only has to let the others echo (for 1 s).
    """
    echo_proxy.add_toxic("timeout", timeout=0, toxicity=0.5)
    socks = [connect(echo_proxy.address) for _ in range(40)]
    answered = 0
    try:
        with selectors.DefaultSelector() as selector:
            for sock in socks:
                sock.sendall(b"?")
                selector.register(sock, selectors.EVENT_READ)
            deadline = time.monotonic() + 1.0
            while answered < len(socks) and (left := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(left):
                    assert recv_exactly(key.fileobj, 1) == b"?"
                    selector.unregister(key.fileobj)
                    answered += 1
    finally:
        for sock in socks:
            sock.close()
    assert 0 < answered < len(socks)


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
    assert not [t for t in threads if t.is_alive()]
