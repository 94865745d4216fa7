"""The Postgres harness itself: every control, isolation, and cleanup on every exit path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from chaos import reaper
from chaos.postgres import (
    DSN_ENV,
    MODE_ENV,
    ExternalPostgres,
    ServerControlUnavailable,
    docker_available,
)
from chaos.pytest_plugin import child_pytest_args

REPO = Path(__file__).resolve().parents[2]
CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
    "PYTHONUNBUFFERED": "1",
}


def _dead(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    finally:
        conn.close()
    return False


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    addrs = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:
                addrs.add(addr)
    return addrs


# --- the shared server --------------------------------------------------------------


def test_session_server_answers_as_superuser(postgres) -> None:
    with postgres.connect() as conn:
        user, version = conn.execute(
            "SELECT current_user, current_setting('server_version')"
        ).fetchone()
        assert user == postgres.superuser == "postgres"
        assert version.split()[0] == postgres.version
        assert conn.autocommit
    assert f"port={postgres.port}" in postgres.conninfo()
    assert "application_name=x" in postgres.conninfo(application_name="x")


@pytest.mark.needs_server_control
def test_binds_only_loopback_and_trusts_only_loopback(server_control) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs /proc/net/tcp")
    assert _listening(server_control.port) == {"0100007F"}  # 127.0.0.1, no IPv6, no wildcard
    hba = (server_control.data_dir / "pg_hba.conf").read_text()
    rules = [line for line in hba.splitlines() if line.strip() and not line.startswith("#")]
    assert rules == ["host all all 127.0.0.1/32 trust"]
    with server_control.connect() as conn:
        assert conn.execute("SHOW unix_socket_directories").fetchone() == ("",)


def test_backend_pids_excludes_the_caller(postgres) -> None:
    with postgres.connect() as mine:
        pid = mine.info.backend_pid
        assert pid in postgres.backend_pids()
    deadline = time.monotonic() + 5  # the backend exits shortly after the client leaves
    while pid in postgres.backend_pids() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pid not in postgres.backend_pids()


def test_create_role_then_set_role(postgres) -> None:
    suffix = os.getpid()
    tenant, app, other = f"tenant_{suffix}", f"app_{suffix}", f"other_{suffix}"
    postgres.create_role(app, login=True)
    postgres.create_role(tenant, grant_to=[app])
    postgres.create_role(tenant, grant_to=[app])  # idempotent
    postgres.create_role(other)
    with postgres.connect() as conn:
        conn.execute(f"SET ROLE {tenant}")
        assert conn.execute("SELECT current_user").fetchone() == (tenant,)
    with psycopg.connect(postgres.conninfo(user=app), autocommit=True) as conn:
        conn.execute(f"SET ROLE {tenant}")
        assert conn.execute("SELECT current_user, session_user").fetchone() == (tenant, app)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SET ROLE {other}")


def test_make_db_settings(postgres, make_db_settings) -> None:
    settings = make_db_settings(
        postgres.host, postgres.port, POSTGRES_OPTIONS={"connect_timeout": 5}
    )
    assert settings["POSTGRES_HOST"] == "127.0.0.1"
    assert settings["POSTGRES_PORT"] == postgres.port
    assert settings["POSTGRES_USER"] == postgres.superuser
    assert settings["POSTGRES_OPTIONS"]["connect_timeout"] == 5
    assert settings["POSTGRES_OPTIONS"]["keepalives"] == 1
    assert make_db_settings(postgres)["POSTGRES_DATABASE"] == postgres.dbname
    from plain_pool import DatabaseSettings

    DatabaseSettings.from_dict(settings)  # the backend accepts it as is
    with psycopg.connect(
        host=settings["POSTGRES_HOST"],
        port=settings["POSTGRES_PORT"],
        user=settings["POSTGRES_USER"],
        dbname=settings["POSTGRES_DATABASE"],
        **settings["POSTGRES_OPTIONS"],
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# --- servers of their own: controls ------------------------------------------------


def test_two_servers_at_once(postgres_factory) -> None:
    a, b = postgres_factory(), postgres_factory()
    assert a.port != b.port and a.data_dir != b.data_dir
    with a.connect() as ca, b.connect() as cb:
        ca.execute("CREATE TABLE only_in_a ()")
        assert cb.execute("SELECT to_regclass('only_in_a')").fetchone() == (None,)
    assert a.pid != b.pid


@pytest.mark.restarts_server
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_restart_kills_sessions_and_returns_accept_time(private_postgres, mode) -> None:
    conn = private_postgres.connect()
    conn.execute("CREATE TABLE acked (n int)")
    conn.execute("INSERT INTO acked VALUES (1)")  # acknowledged: must survive any restart
    old_pid = private_postgres.pid
    before = time.monotonic()
    accepted = private_postgres.restart(mode)
    assert before < accepted <= time.monotonic()
    assert private_postgres.pid != old_pid and private_postgres.is_running
    assert _dead(conn)
    with private_postgres.connect() as fresh:
        assert fresh.execute("SELECT n FROM acked").fetchall() == [(1,)]


@pytest.mark.restarts_server
def test_crash_resets_every_session(private_postgres) -> None:
    conns = [private_postgres.connect() for _ in range(3)]
    conns[0].execute("CREATE TABLE acked (n int)")
    conns[0].execute("INSERT INTO acked VALUES (1)")
    pids = {c.info.backend_pid for c in conns}
    postmaster = private_postgres.pid
    before = time.monotonic()
    accepted = private_postgres.crash()
    assert before < accepted <= time.monotonic()
    assert all(_dead(c) for c in conns)
    assert private_postgres.pid == postmaster  # the postmaster survived; sessions did not
    assert not pids & private_postgres.backend_pids()
    assert "terminated by signal 9" in private_postgres.log_tail(60)
    with private_postgres.connect() as fresh:  # an acknowledged commit survives the crash
        assert fresh.execute("SELECT n FROM acked").fetchall() == [(1,)]


@pytest.mark.restarts_server
def test_terminate_backends_spares_excluded(private_postgres) -> None:
    keep, *victims = [private_postgres.connect() for _ in range(3)]
    count = private_postgres.terminate_backends(exclude_pids=[keep.info.backend_pid])
    assert count == 2
    assert all(_dead(c) for c in victims)
    assert not _dead(keep)
    assert private_postgres.backend_pids() == set()


@pytest.mark.restarts_server
def test_set_max_connections_takes_effect(private_postgres) -> None:
    private_postgres.set_max_connections(5)
    conns = []
    try:
        for _ in range(5):  # a superuser may use the reserved slots too
            conns.append(private_postgres.connect())
        assert conns[0].execute("SHOW max_connections").fetchone() == ("5",)
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            private_postgres.connect()
    finally:
        for conn in conns:
            conn.close()
    with pytest.raises(ValueError):
        private_postgres.set_max_connections(2)


@pytest.mark.restarts_server
def test_stop_smart_then_start(private_postgres) -> None:
    private_postgres.stop("smart")
    assert not private_postgres.is_running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(private_postgres.conninfo(), connect_timeout=2)
    private_postgres.start()
    with private_postgres.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# --- other modes ----------------------------------------------------------------------


def test_external_server_has_no_controls(postgres) -> None:
    external = ExternalPostgres(f"host={postgres.host} port={postgres.port} user=postgres")
    external.start()
    assert external.version == postgres.version
    assert not external.supports_control
    assert isinstance(external.backend_pids(), set)
    for control in (external.restart, external.crash, external.terminate_backends):
        with pytest.raises(ServerControlUnavailable):
            control()
    with pytest.raises(ServerControlUnavailable):
        external.set_max_connections(10)


def _child_pytest(
    tmp_path: Path, test_source: str, env: dict[str, str]
) -> subprocess.CompletedProcess:
    (tmp_path / "test_child.py").write_text(textwrap.dedent(test_source))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *child_pytest_args(),
            "-p",
            "no:cacheprovider",
            "-rs",
            "-q",
            str(tmp_path / "test_child.py"),
        ],
        cwd=tmp_path,
        env={**CHILD_ENV, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


CHILD_MODE_TESTS = """
    import pytest

    def test_shared(postgres):
        assert postgres.backend_pids() is not None

    def test_private(private_postgres):
        pass

    @pytest.mark.needs_server_control
    def test_marked():
        pass

    def test_control(server_control):
        pass
"""


@pytest.mark.slow
def test_external_mode_skips_what_needs_control(postgres, tmp_path) -> None:
    result = _child_pytest(tmp_path, CHILD_MODE_TESTS, {DSN_ENV: postgres.conninfo()})
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "1 passed, 3 skipped" in out, out
    assert "PLAIN_POOL_PG_MODE=external" in out and "(external mode)" in out


@pytest.mark.slow
def test_docker_mode_skips_cleanly_without_an_engine(tmp_path) -> None:
    available, reason = docker_available()
    if available:
        pytest.skip("a Docker engine answers here; the skip path is not testable")
    assert reason
    started = time.monotonic()
    result = _child_pytest(tmp_path, CHILD_MODE_TESTS, {MODE_ENV: "docker", DSN_ENV: ""})
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "4 skipped" in out and "no Docker engine" in out, out
    assert time.monotonic() - started < 30


# --- cleanup on every exit path ----------------------------------------------------

CHILD_SERVER = """
import json, sys, time
from chaos.postgres import PostgresServer

how = sys.argv[1]
server = PostgresServer(parent_death_signal=(how != "sigkill-reaper-only"))
server.start()
conn = server.connect()  # a live client backend too
print(json.dumps({"base": str(server.base_dir), "pid": server.pid,
                  "backend": conn.info.backend_pid}), flush=True)
if how == "close":
    server.close()
    sys.exit(0)
if how == "exit":
    sys.exit(0)  # no close(): atexit must do it
time.sleep(300)
"""


def _gone(info: dict) -> bool:
    base = Path(info["base"])
    return (
        not base.exists()
        and not reaper.processes_in([base])
        and not reaper.alive(info["pid"])
        and not reaper.alive(info["backend"])
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "how", ["close", "exit", "sigint", "sigterm", "sigkill", "sigkill-reaper-only"]
)
def test_nothing_survives_the_owner(tmp_path, how) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD_SERVER)
    child = subprocess.Popen(
        [sys.executable, str(script), how],
        env=CHILD_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line, child.stderr.read()
        info = json.loads(line)
        assert Path(info["base"]).name.startswith("plain-pool-pg-")
        assert reaper.alive(info["pid"])
        if how.startswith("sig"):
            signum = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}.get(how, signal.SIGKILL)
            child.send_signal(signum)
        child.wait(timeout=60)
        deadline = time.monotonic() + 15
        while not _gone(info) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(info), (info, reaper.processes_in([info["base"]]))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


LEAKING_TEST = """
    from chaos.postgres import PostgresServer

    def test_leaks():
        PostgresServer().start()  # never closed: atexit would be too late for the check
"""


@pytest.mark.slow
def test_session_check_reports_a_leak(tmp_path) -> None:
    result = _child_pytest(tmp_path, LEAKING_TEST, {"PLAIN_POOL_LEFTOVER_GRACE": "1"})
    out = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert "left things behind" in out and "plain-pool-pg-" in out, out
    leaked = [line.split()[-1] for line in out.splitlines() if "directory " in line]
    assert leaked and not any(Path(d).exists() for d in leaked)
