"""The PgBouncer harness itself: finding the binary, the real auth path, the controls, both
hops through the proxy, running unprivileged, and nothing left behind on any exit path."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from chaos import reaper
from chaos.pgbouncer import (
    LOGIN_ROLE,
    NOT_FOUND,
    PGBOUNCER_ENV,
    PgBouncerNotFound,
    find_pgbouncer,
)

REPO = Path(__file__).resolve().parents[2]
CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
    "PYTHONUNBUFFERED": "1",
}
READY_TIMEOUT = 180.0
EXIT_TIMEOUT = 120.0


# --- finding the binary -------------------------------------------------------------------


def _fake(directory: Path, version: str = "1.99.0") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pgbouncer"
    path.write_text(f"#!/bin/sh\necho 'PgBouncer {version}'\n")
    path.chmod(0o755)
    return path


def test_found_in_a_system_dir_when_not_on_path(tmp_path) -> None:
    _fake(tmp_path / "sbin")
    found = find_pgbouncer(
        environ={"PATH": str(tmp_path / "empty")},
        system_dirs=(str(tmp_path / "nothing"), str(tmp_path / "sbin")),
    )
    assert (found.version, found.source) == ("1.99.0", str(tmp_path / "sbin"))


def test_env_wins_over_path_and_must_be_usable(tmp_path) -> None:
    on_path = _fake(tmp_path / "bin", "1.1.0")
    chosen = _fake(tmp_path / "chosen", "1.2.0")
    environ = {"PATH": str(on_path.parent), PGBOUNCER_ENV: str(chosen)}
    assert find_pgbouncer(environ=environ).version == "1.2.0"
    assert find_pgbouncer(environ={"PATH": str(on_path.parent)}).source == "PATH"
    with pytest.raises(PgBouncerNotFound, match="not usable"):
        find_pgbouncer(environ={PGBOUNCER_ENV: str(tmp_path / "typo")})


def test_missing_says_pgbouncer_not_found(tmp_path) -> None:
    with pytest.raises(PgBouncerNotFound) as info:
        find_pgbouncer(environ={"PATH": str(tmp_path)}, system_dirs=(str(tmp_path / "x"),))
    assert str(info.value).startswith(NOT_FOUND)


def test_pytest_header_names_the_binary(pytestconfig) -> None:
    from chaos.fixtures.pgbouncer import pytest_report_header

    (line,) = pytest_report_header(pytestconfig)
    assert line.startswith("pgbouncer: PgBouncer ") or NOT_FOUND in line


# --- a running PgBouncer ------------------------------------------------------------------


def test_start_query_stop(pgbouncer) -> None:
    assert pgbouncer.is_running and Path(pgbouncer.base_dir).name.startswith(
        "plain-pool-pgbouncer-"
    )
    with pgbouncer.connect() as conn:
        row = conn.execute("SELECT session_user::text, inet_server_port()").fetchone()
    assert row == (LOGIN_ROLE, pgbouncer.server.port)  # the server saw PgBouncer's login
    pid, base = pgbouncer.pid, pgbouncer.base_dir
    pgbouncer.close()
    assert not reaper.alive(pid) and not base.exists() and pgbouncer.watchdog_pid is None


def test_a_port_taken_before_the_bind_is_not_mistaken_for_pgbouncer(
    postgres, pgbouncer_factory
) -> None:
    """Another process listening on the chosen port: PgBouncer exits ("nowhere to listen
    on"); start() must not take that listener for PgBouncer, and moves to another port."""
    import socket

    from chaos.pgbouncer import PgBouncer

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        bouncer = PgBouncer(postgres, pool_mode="session")
        bouncer.port = taken
        with bouncer:
            assert bouncer.port != taken
            with bouncer.connect() as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)


def test_auth_is_scram_not_trust(pgbouncer) -> None:
    ini = pgbouncer.ini_path.read_text()
    assert "auth_type = scram-sha-256" in ini and "trust" not in ini
    userlist = (pgbouncer.base_dir / "userlist.txt").read_text()
    password = pgbouncer.connect_kwargs()["password"]
    assert "SCRAM-SHA-256$" in userlist and password not in userlist
    for wrong in ("not-the-password", ""):
        with pytest.raises(psycopg.OperationalError, match=r"authentication failed|password"):
            psycopg.connect(**pgbouncer.connect_kwargs(password=wrong), connect_timeout=5)
    shown = [repr(pgbouncer), pgbouncer.log_tail(200), pgbouncer.ini_path.read_text()]
    assert not [text for text in shown if password in text]


@pytest.mark.skipif(os.geteuid() != 0, reason="runs unprivileged only when we are root")
def test_runs_unprivileged_when_root(pgbouncer) -> None:
    status = Path(f"/proc/{pgbouncer.pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert set(uids) != {"0"} and len(set(uids)) == 1


def test_controls(pgbouncer_factory) -> None:
    bouncer = pgbouncer_factory(pool_mode="transaction", pool_size=2)
    conn = bouncer.connect()
    try:
        conn.execute("SELECT 1")
        pools = {p["database"]: p for p in bouncer.show("pools")}
        assert pools[bouncer.dbname]["pool_mode"] == "transaction"
        assert any(c["database"] == bouncer.dbname for c in bouncer.show("clients"))
        assert len([s for s in bouncer.show("servers") if s["database"] == bouncer.dbname]) == 1
        bouncer.set_pool_size(5)
        config = {row["key"]: row["value"] for row in bouncer.show("config")}
        assert config["default_pool_size"] == "5"
        bouncer.reload()
        bouncer.pause()
        bouncer.resume()
        assert conn.execute("SELECT 2").fetchone() == (2,)
        bouncer.kill()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 3")
    finally:
        conn.close()


def test_both_hops_through_proxies(pgbouncer_factory, postgres, tcp_proxy_factory) -> None:
    server_hop = tcp_proxy_factory(postgres.host, postgres.port)
    bouncer = pgbouncer_factory(
        pool_mode="transaction",
        server_host=server_hop.listen_host,
        server_port=server_hop.listen_port,
        settings={"server_connect_timeout": 2, "query_wait_timeout": 3},
    )
    client_hop = tcp_proxy_factory(bouncer.host, bouncer.port)
    kwargs = bouncer.connect_kwargs(host=client_hop.listen_host, port=client_hop.listen_port)
    with psycopg.connect(**kwargs, autocommit=True, connect_timeout=5) as conn:
        assert conn.execute("SELECT inet_server_port()").fetchone() == (postgres.port,)
        bouncer.kill()  # drops the server connection: the next one goes through the proxy again
    server_hop.disable()
    try:
        with (
            pytest.raises(psycopg.OperationalError),
            psycopg.connect(**kwargs, autocommit=True, connect_timeout=5) as conn,
        ):
            conn.execute("SELECT 1")
    finally:
        server_hop.enable()
    client_hop.disable()
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(**kwargs, connect_timeout=2)
    finally:
        client_hop.enable()


# --- nothing survives the owner -----------------------------------------------------------

CHILD = """
import json, signal, sys
from chaos import reaper
from chaos.postgres import PostgresServer
from chaos.pgbouncer import PgBouncer

how = sys.argv[1]
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
server = PostgresServer()
server.start()
bouncer = PgBouncer(server, pool_mode="transaction")
bouncer.start()
conn = bouncer.connect()
conn.execute("SELECT 1")
ready = {"base": str(bouncer.base_dir), "pid": bouncer.pid, "port": bouncer.port,
         "pg_base": str(server.base_dir), "watchdog": bouncer.watchdog_pid,
         "watchdog_started": reaper.start_time(bouncer.watchdog_pid)}
print(json.dumps(ready), flush=True)
if how in ("close", "exit"):
    sys.stdin.readline()
if how == "close":
    bouncer.close()
    server.close()
    sys.exit(0)
if how == "exit":
    sys.exit(0)  # atexit
while True:
    signal.pause()
"""
ENDINGS = {
    "close": 0,
    "exit": 0,
    "sigint": -signal.SIGINT,
    "sigterm": -signal.SIGTERM,
    "sigkill": -9,
}


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.slow
@pytest.mark.parametrize("how", list(ENDINGS))
def test_nothing_survives_the_owner(tmp_path, how, pgbouncer_factory) -> None:  # skips w/o it
    """Whatever ends the owner, its PgBouncer process, port and directory go too (after a
    SIGKILL or SIGTERM: the parent-death signal and the watchdog)."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), how],
        env=CHILD_ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        readable, _, _ = select.select([child.stdout], [], [], READY_TIMEOUT)
        line = child.stdout.readline() if readable else ""
        assert line, child.stderr.read() if child.stderr else ""
        info = json.loads(line)
        assert reaper.alive(info["pid"]) and not _port_free(info["port"])
        if how == "sigkill":
            child.send_signal(signal.SIGKILL)
        elif how == "sigint":
            child.send_signal(signal.SIGINT)
        elif how == "sigterm":
            child.send_signal(signal.SIGTERM)
        else:
            child.stdin.write("go\n")
            child.stdin.flush()
        status = child.wait(EXIT_TIMEOUT)
        assert status == ENDINGS[how], child.stderr.read() if child.stderr else ""
        watchdog = (info["watchdog"], info["watchdog_started"])
        assert _wait(lambda: not reaper.alive(*watchdog), EXIT_TIMEOUT), "watchdog hangs"
        assert not reaper.alive(info["pid"])
        assert not Path(info["base"]).exists() and not reaper.processes_in([info["base"]])
        assert _wait(lambda: not Path(info["pg_base"]).exists(), EXIT_TIMEOUT)
        assert _port_free(info["port"])
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# --- the targets without a binary -------------------------------------------------------------


def test_targets_and_columns_say_pgbouncer_not_found(tmp_path, monkeypatch) -> None:
    """A machine without PgBouncer: every PgBouncer column is not_run with the reason."""
    from chaos.matrix.run import availability
    from chaos.targets.registry import TARGETS, TargetUnavailable, resolve

    monkeypatch.setenv(PGBOUNCER_ENV, str(tmp_path / "no-pgbouncer"))
    names = [name for name in TARGETS if name.startswith(("pgbouncer-", "hybrid-"))]
    assert len(names) >= 4
    for name in names:
        with pytest.raises(TargetUnavailable, match=f"{name}: {NOT_FOUND}"):
            resolve(name).load()
        assert availability(name) == f"{name}: {NOT_FOUND}"
