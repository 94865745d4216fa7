"""Bad input never crashes the server; churn leaves no fd, task or connection behind."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import threading
import time

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaos.toxiproxy.harness import ProxyHandle, ToxiproxyServer
from tests.toxiproxy.conftest import TcpServer, connect, echo, roundtrip, wait_until

TOXIC_TYPES = [
    "noop",
    "latency",
    "bandwidth",
    "slow_close",
    "timeout",
    "reset_peer",
    "slicer",
    "limit_data",
    "volcano",
    "",
]
ATTRS = [
    "latency",
    "jitter",
    "rate",
    "delay",
    "timeout",
    "average_size",
    "size_variation",
    "bytes",
    "other",
]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
toxic_bodies = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=10), json_scalars),
        "type": st.one_of(st.sampled_from(TOXIC_TYPES), json_scalars),
        "stream": st.one_of(
            st.sampled_from(["upstream", "DOWNSTREAM", "sideways", ""]), json_scalars
        ),
        "toxicity": st.one_of(st.floats(allow_nan=False, allow_infinity=False), json_scalars),
        "attributes": st.one_of(st.dictionaries(st.sampled_from(ATTRS), json_scalars), json_values),
    },
)
proxy_bodies = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=10), json_scalars),
        "upstream": st.one_of(
            st.sampled_from(["127.0.0.1:9", "localhost:1", "nope", ""]), json_scalars
        ),
        "listen": st.one_of(
            st.sampled_from(
                [
                    "127.0.0.1:0",
                    "localhost:0",
                    ":0",
                    "127.0.0.1:99999",
                    "x",
                    "[::1]:0",
                    "256.1.1.1:0",
                    "no.such.host.invalid:0",
                ]
            ),
            json_scalars,
        ),
        "enabled": st.one_of(st.booleans(), json_scalars),
    },
)
raw_bodies = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"NaN", b"[1e999]", b'{"name": "a"', b"\xff\xfe", b"{}" * 3, b"[" * 5000]),
)


def check_no_5xx(response, allow_listen_500: bool = False) -> None:
    if response.status >= 500:
        assert allow_listen_500 and b"listen tcp" in response.raw, response.raw
    if response.status >= 400:
        body = json.loads(response.raw)
        assert body["status"] == response.status and isinstance(body["error"], str)


@pytest.fixture(scope="module")
def fuzz_proxy(toxiproxy_server: ToxiproxyServer):
    name = f"fuzz_{os.getpid()}"
    toxiproxy_server.create_proxy(name, "127.0.0.1:9")
    yield name
    toxiproxy_server.delete_proxy(name)


@given(body=toxic_bodies)
def test_toxic_bodies_never_5xx(toxiproxy_server, fuzz_proxy, embedded_only, body):
    server = toxiproxy_server
    response = server.request("POST", f"/proxies/{fuzz_proxy}/toxics", body)
    check_no_5xx(response)
    if response.status == 200:
        name = response.json()["name"]
        from urllib.parse import quote

        update = server.request(
            "PATCH", f"/proxies/{fuzz_proxy}/toxics/{quote(name, safe='')}", body
        )
        check_no_5xx(update)
    server.request("POST", "/reset")
    assert server.get_proxy(fuzz_proxy)["toxics"] == []


@given(body=proxy_bodies)
def test_proxy_bodies_never_5xx(toxiproxy_server, embedded_only, body):
    server = toxiproxy_server
    if isinstance(body.get("name"), str):
        body["name"] = f"fz{os.getpid()}_{body['name']}"
    before = set(server.proxies())
    try:
        check_no_5xx(server.request("POST", "/proxies", body), allow_listen_500=True)
        check_no_5xx(server.request("POST", "/populate", [body]), allow_listen_500=True)
        for name in set(server.proxies()) - before:
            from urllib.parse import quote

            check_no_5xx(
                server.request("POST", f"/proxies/{quote(name, safe='')}", body),
                allow_listen_500=True,
            )
    finally:
        for name in set(server.proxies()) - before:
            from urllib.parse import quote

            server.request("DELETE", f"/proxies/{quote(name, safe='')}")


@given(
    method=st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"]),
    path=st.lists(
        st.sampled_from(
            [
                "proxies",
                "toxics",
                "populate",
                "reset",
                "version",
                "%2F",
                "..",
                "x",
                "%00",
                "%C3%BC",
                "a b",
            ]
        ),
        max_size=4,
    ),
    raw=raw_bodies,
)
def test_random_requests_never_5xx(toxiproxy_server, fuzz_proxy, embedded_only, method, path, raw):
    server = toxiproxy_server
    url = "/" + "/".join(p.replace("x", fuzz_proxy) for p in path)
    response = server.request(method, url.replace(" ", "%20"), raw=raw)
    assert response.status < 500 or b"listen tcp" in response.raw
    assert server.request("GET", "/version").status == 200
    server.request("POST", "/reset")


# --- churn and leaks --------------------------------------------------------------------------
def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
def test_churn_leaves_nothing_behind(embedded_only):
    echo_server = TcpServer(echo)
    try:
        with ToxiproxyServer(prefer="embedded", extra_args=["--debug-endpoints"]) as server:
            proxy = ProxyHandle.create(server, f"127.0.0.1:{echo_server.port}", "churn")
            with connect(proxy.address) as warm:
                assert roundtrip(warm) == b"ping"
            assert wait_until(
                lambda: server.call("GET", "/debug/state")["connections"] == 0, timeout=10
            )
            baseline = server.call("GET", "/debug/state")
            fds = _fd_count(server.pid)

            for i in range(2000):  # plain connect/close, some with traffic
                with socket.create_connection(proxy.address, timeout=5) as sock:
                    if i % 4 == 0:
                        assert roundtrip(sock, b"x") == b"x"

            stop = threading.Event()
            errors: list[BaseException] = []

            def traffic() -> None:
                while not stop.is_set():
                    try:
                        with connect(proxy.address, timeout=2) as sock:
                            sock.sendall(b"abc")
                            sock.settimeout(0.2)
                            with contextlib.suppress(OSError):
                                sock.recv(10)
                    except OSError:
                        pass
                    except BaseException as exc:
                        errors.append(exc)

            threads = [threading.Thread(target=traffic) for _ in range(4)]
            for t in threads:
                t.start()
            held = [connect(proxy.address) for _ in range(10)]
            kinds = [
                ("latency", {"latency": 5}),
                ("timeout", {"timeout": 0}),
                ("bandwidth", {"rate": 0}),
                ("slicer", {"average_size": 1}),
                ("limit_data", {"bytes": 2}),
                ("slow_close", {"delay": 10}),
                ("reset_peer", {"timeout": 5}),
                ("noop", {}),
            ]
            for round_ in range(15):
                for kind, attrs in kinds:
                    stream = "upstream" if round_ % 2 else "downstream"
                    name = proxy.add_toxic(kind, stream=stream, **attrs)
                    proxy.update_toxic(name, **attrs)
                for kind, _ in kinds:
                    proxy.remove_toxic(f"{kind}_{'upstream' if round_ % 2 else 'downstream'}")
                if round_ % 5 == 4:
                    proxy.disable()
                    proxy.enable()
            stop.set()
            for t in threads:
                t.join(10)
            for sock in held:
                sock.close()
            assert not errors

            def settled() -> bool:
                state = server.call("GET", "/debug/state")
                return state["connections"] == 0 and state["tasks"] <= baseline["tasks"]

            assert wait_until(settled, timeout=10), server.call("GET", "/debug/state")
            assert wait_until(lambda: _fd_count(server.pid) <= fds, timeout=10), (
                _fd_count(server.pid),
                fds,
            )
            assert server.request("GET", "/version").status == 200
    finally:
        echo_server.close()


# --- Postgres through the proxy -----------------------------------------------------------------
def _pg(proxy: ProxyHandle, **kwargs) -> psycopg.Connection:
    return psycopg.connect(
        host=proxy.listen_host,
        port=proxy.listen_port,
        user="postgres",
        dbname="postgres",
        autocommit=True,
        **kwargs,
    )


def test_psycopg_through_latency(pg_proxy):
    with _pg(pg_proxy) as conn:
        pg_proxy.add_toxic("latency", latency=30)
        start = time.monotonic()
        assert conn.execute("select 1").fetchone() == (1,)
        assert time.monotonic() - start >= 0.028


def test_psycopg_sees_reset_peer_as_operational_error(pg_proxy):
    """An open connection is closed at its next query (EOF); a new one is reset (RST)."""
    with _pg(pg_proxy) as conn:
        pg_proxy.add_toxic("reset_peer", timeout=0)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
        assert conn.closed or conn.broken
    with pytest.raises(psycopg.OperationalError):  # libpq words both "closed unexpectedly"
        _pg(pg_proxy, connect_timeout=2)


def test_psycopg_disable_then_enable(pg_proxy):
    with _pg(pg_proxy) as conn:
        pg_proxy.disable()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    with pytest.raises(psycopg.OperationalError):
        _pg(pg_proxy, connect_timeout=2)
    pg_proxy.enable()
    with _pg(pg_proxy) as conn:
        assert conn.execute("select 2").fetchone() == (2,)


def test_psycopg_half_open_times_out(pg_proxy):
    conn = _pg(pg_proxy)
    try:
        pg_proxy.add_toxic("timeout", timeout=0)
        with pytest.raises(TimeoutError):  # no reply ever comes back
            _query_with_deadline(conn, 0.5)
        pg_proxy.remove_toxic("timeout_downstream")  # removing it closes the connection
        _query_with_deadline(conn, 5.0, send=False)
        with pytest.raises(psycopg.OperationalError):
            conn.pgconn.consume_input()
            while conn.pgconn.get_result() is not None:
                pass
    finally:
        conn.close()


def _query_with_deadline(conn: psycopg.Connection, timeout: float, send: bool = True) -> None:
    """Send ``select 1`` (unless ``send`` is false) and wait for the socket to be readable."""
    if send:
        conn.pgconn.send_query(b"select 1")
        conn.pgconn.flush()
    with selectors.DefaultSelector() as sel:
        sel.register(conn.pgconn.socket, selectors.EVENT_READ)
        if not sel.select(timeout=timeout):
            raise TimeoutError(f"nothing to read within {timeout} s")
