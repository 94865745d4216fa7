"""Enable/disable, listen and upstream changes, unreachable upstreams, process lifecycle."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from chaos.reaper import alive, start_time
from chaos.toxiproxy.harness import REPO_ROOT, ToxiproxyServer
from chaos.toxiproxy.server import parse_args
from tests.toxiproxy.conftest import connect, recv_all, roundtrip, wait_until

pytestmark = pytest.mark.toxiproxy_conformance


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return recv_all(sock, timeout=5) == b""
    except ConnectionResetError:
        return True


def test_disable_drops_connections_and_refuses_new_ones(echo_proxy):
    with connect(echo_proxy.address) as sock:
        assert roundtrip(sock) == b"ping"
        address = echo_proxy.address
        with echo_proxy.proxy().down():
            assert closed_by_peer(sock)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(address, timeout=2)
        assert echo_proxy.info()["listen"] == f"{address[0]}:{address[1]}"
    with connect(echo_proxy.address) as again:
        assert roundtrip(again) == b"ping"


def test_changing_listen_restarts_the_listener(echo_proxy):
    old = echo_proxy.address
    with connect(old) as sock:
        info = echo_proxy.server.update_proxy(echo_proxy.name, listen="127.0.0.1:0")
        assert closed_by_peer(sock)
    new_port = int(info["listen"].rsplit(":", 1)[1])
    assert new_port not in (0, old[1])
    with connect(("127.0.0.1", new_port)) as sock:
        assert roundtrip(sock) == b"ping"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(old, timeout=2)


def test_changing_upstream_drops_connections(echo_proxy, tcp_server_factory):
    other = tcp_server_factory(lambda conn: conn.sendall(b"other"))
    with connect(echo_proxy.address) as sock:
        assert roundtrip(sock) == b"ping"
        echo_proxy.server.update_proxy(echo_proxy.name, upstream=f"127.0.0.1:{other.port}")
        assert closed_by_peer(sock)
    with connect(echo_proxy.address) as sock:
        assert sock.recv(10) == b"other"


def test_unreachable_upstream_is_accept_then_eof(tcp_proxy_factory):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    proxy = tcp_proxy_factory("127.0.0.1", dead_port)
    with connect(proxy.address) as sock:
        assert closed_by_peer(sock)


def test_deleting_a_proxy_closes_its_connections(echo_proxy):
    with connect(echo_proxy.address) as sock:
        assert roundtrip(sock) == b"ping"
        echo_proxy.delete()
        assert closed_by_peer(sock)


def test_client_close_closes_upstream(echo_server, tcp_proxy_factory):
    proxy = tcp_proxy_factory(echo_server.host, echo_server.port)
    with connect(proxy.address) as sock:
        assert roundtrip(sock) == b"ping"
    assert wait_until(lambda: not echo_server.conns), echo_server.conns


def test_server_readiness_config_and_sigterm(tmp_path, echo_server, embedded_only):
    config = tmp_path / "proxies.json"
    config.write_text(
        json.dumps(
            [
                {
                    "name": "from_config",
                    "upstream": f"127.0.0.1:{echo_server.port}",
                    "listen": "127.0.0.1:0",
                }
            ]
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaos.toxiproxy", "--port", "0", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith("toxiproxy listening on 127.0.0.1:")
        server = ToxiproxyServer(url=f"http://{line.split()[-1]}")
        server.start()
        info = server.get_proxy("from_config")
        host, port = info["listen"].rsplit(":", 1)
        sock = connect((host, int(port)))
        assert roundtrip(sock) == b"ping"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert closed_by_peer(sock)
        sock.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--port", "99999"], "argument --port: port 99999 is outside 0..65535"),
        (["--port", "65536"], "argument --port: port 65536 is outside 0..65535"),
        (["--port", "-1"], "argument --port: port -1 is outside 0..65535"),
        (["--port", "http"], "argument --port: 'http' is not a port number"),
        (["--host", "localhost"], "argument --host: 'localhost' is not an IP address"),
        (["--host", "10.0.0.256"], "argument --host: '10.0.0.256' is not an IP address"),
    ],
)
def test_cli_refuses_bad_ports_and_hosts(argv, complaint, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    assert complaint in capsys.readouterr().err


def test_cli_accepts_ports_and_ip_addresses():
    args = parse_args(["--host", "::1", "--port", "65535"])
    assert (args.host, args.port) == ("::1", 65535)
    assert parse_args(["--port", "0"]).port == 0


def test_cli_bad_port_exits_2_without_listening(embedded_only):
    """``--port 99999`` used to start on 34463 (the port wrapped)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "chaos.toxiproxy", "--port", "99999"],
        capture_output=True,
        env=env,
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stdout == b""  # no readiness line
    assert b"error: argument --port: port 99999 is outside 0..65535" in proc.stderr


def test_sigint_stops_cleanly(embedded_only):
    with ToxiproxyServer(prefer="embedded") as server:
        server.create_proxy("p", "127.0.0.1:9")
        os.kill(server.pid, signal.SIGINT)
        assert server._proc.wait(10) == 0


def test_harness_server_dies_with_its_parent(embedded_only, tmp_path):
    """PR_SET_PDEATHSIG: SIGKILL the parent, the embedded server goes too, and nothing
    of it stays in the temp directory (its log once did: one file per run)."""
    code = (
        "from chaos.toxiproxy.harness import ToxiproxyServer\n"
        "s = ToxiproxyServer(prefer='embedded'); s.start(); print(s.pid, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TMPDIR": str(temp)}
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    try:
        child = int(parent.stdout.readline())
        started = start_time(child)  # the server is alive here: its parent still is
        assert started is not None
        parent.kill()
        parent.wait()
        # alive() treats a process that vanishes mid-check, a zombie and a reused pid
        # (other start time) as gone; 10 s is far beyond a signal's delivery.
        if not wait_until(lambda: not alive(child, started), timeout=10):
            pytest.fail(f"embedded server {child} outlived its parent")
        assert sorted(p.name for p in temp.iterdir()) == []
    finally:
        parent.stdout.close()
