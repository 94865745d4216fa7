"""The Postgres harness itself: every control, isolation, and cleanup on every exit path."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
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
    # The backend exits shortly after its client leaves.
    assert _wait_until(lambda: pid not in postgres.backend_pids(), EXIT_TIMEOUT)


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
    # Checked while ``keep`` is open: after it closes, its backend lingers for a moment.
    assert private_postgres.backend_pids() == {keep.info.backend_pid}
    assert all(_dead(c) for c in victims)
    assert not _dead(keep)


def _close_and_wait(conns: list[psycopg.Connection]) -> None:
    """Close ``conns`` and wait until their backends have exited and freed their slots.

    Closing only asks the backend to go; it frees its connection slot as it exits.
    """
    pids = [conn.info.backend_pid for conn in conns if not conn.closed]
    for conn in conns:
        conn.close()
    assert _wait_until(lambda: not any(reaper.alive(pid) for pid in pids), EXIT_TIMEOUT)


@pytest.mark.restarts_server
def test_set_max_connections_takes_effect(private_postgres) -> None:
    private_postgres.set_max_connections(5)  # returns with no connection of its own left
    conns = []
    try:
        for _ in range(5):  # a superuser may use the reserved slots too
            conns.append(private_postgres.connect())
        assert conns[0].execute("SHOW max_connections").fetchone() == ("5",)
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            private_postgres.connect()
    finally:
        _close_and_wait(conns)
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
    with external.connect() as conn:  # the same view of the server as the owned one
        assert conn.info.backend_pid in external.backend_pids()
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
        with postgres.connect() as conn:  # the external server answers, and sees us
            assert conn.info.backend_pid in postgres.backend_pids()

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
    # Skipped at once (a 1 s engine probe), not after a client's connection retries: the
    # bound leaves a loaded machine the time to start a child pytest several times over.
    assert time.monotonic() - started < 60


# --- cleanup on every exit path ----------------------------------------------------

#: How the owner (a child process with a server) ends, by ``how`` -> its expected exit status.
OWNER_ENDINGS = {
    "close": 0,
    "exit": 0,
    "sigint": -signal.SIGINT,
    "sigterm": -signal.SIGTERM,
    "sigkill": -signal.SIGKILL,
    "sigkill-reaper-only": -signal.SIGKILL,
}
#: Endings that run the owner's own cleanup (close, atexit, the SIGTERM handler): it is
#: complete when the owner has exited. After a SIGKILL only the watchdog can clean up.
SELF_CLEANING = {"close", "exit", "sigint", "sigterm"}
#: Bounds on waiting for an outcome: they stop a hang, they never decide a pass. Starting a
#: server (initdb included) on a loaded 2-core machine takes seconds; the reaper's own worst
#: case is its grace (5 s) plus two 5 s waits for stragglers.
READY_TIMEOUT = 180.0
EXIT_TIMEOUT = 120.0

CHILD_SERVER = """
import json, signal, sys
from chaos import reaper
from chaos.postgres import PostgresServer

how = sys.argv[1]
# Behave like an interactive program whatever the launcher left us: a background job of a
# non-interactive shell (`tox &`, nohup, many CI runners) inherits SIGINT ignored, and Python
# then never raises KeyboardInterrupt, so the owner would not die of the test's SIGINT at all.
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the harness installs its cleanup on SIG_DFL only
server = PostgresServer(parent_death_signal=(how != "sigkill-reaper-only"))
server.start()
conn = server.connect()  # a live client backend too
watchdog = server.watchdog_pid
ready = {"base": str(server.base_dir), "pid": server.pid, "backend": conn.info.backend_pid,
         "watchdog": watchdog, "watchdog_started": reaper.start_time(watchdog)}
print(json.dumps(ready), flush=True)  # the parent acts only on this line: all is in place
if how in ("close", "exit"):
    sys.stdin.readline()  # the parent's "go", once it has seen everything running
if how == "close":
    server.close()
    sys.exit(0)
if how == "exit":
    sys.exit(0)  # no close(): atexit must do it
while True:
    signal.pause()  # until the parent's signal ends us
"""


def _gone(info: dict) -> bool:
    """Nothing of the owner's server remains: directory, postmaster, backend, any process in it."""
    base = Path(info["base"])
    return (
        not base.exists()
        and not reaper.processes_in([base])
        and not reaper.alive(info["pid"])
        and not reaper.alive(info["backend"])
    )


def _wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; return whether it held.

    For waiting on an outcome that will come: ``timeout`` only bounds a hang.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def _read_ready_line(child: subprocess.Popen[str], timeout: float) -> dict:
    """The child's readiness record (its first stdout line), or fail with its stderr."""
    assert child.stdout is not None and child.stderr is not None
    readable, _, _ = select.select([child.stdout], [], [], timeout)
    line = child.stdout.readline() if readable else ""
    if not line:
        child.kill()
        pytest.fail(f"the owner never became ready: {child.stderr.read()}")
    return json.loads(line)


def _end_owner(child: subprocess.Popen[str], how: str) -> int:
    """Send the signal ``how`` names (else the "go" line) and wait for the owner to exit.

    Returns its exit status.
    """
    signals = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}
    if how.startswith("sigkill"):
        child.send_signal(signal.SIGKILL)
    elif how in signals:
        child.send_signal(signals[how])
    else:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    return child.wait(timeout=EXIT_TIMEOUT)


@pytest.mark.slow
@pytest.mark.parametrize("how", list(OWNER_ENDINGS))
def test_nothing_survives_the_owner(tmp_path, how) -> None:
    """Whatever ends the owner, its server, backends, watchdog and directory go too.

    Deterministic: the signal (or the "go" to close or exit) goes only after the
    child says it is ready and the test has seen its processes running, and the
    check runs once, after the last actor that cleans up (the owner itself, or
    after a SIGKILL its watchdog) has exited.
    """
    script = tmp_path / "child.py"
    script.write_text(CHILD_SERVER)
    child = subprocess.Popen(
        [sys.executable, str(script), how],
        env=CHILD_ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        info = _read_ready_line(child, READY_TIMEOUT)
        assert Path(info["base"]).name.startswith("plain-pool-pg-")
        assert reaper.alive(info["pid"]) and reaper.alive(info["watchdog"])
        status = _end_owner(child, how)
        assert status == OWNER_ENDINGS[how], child.stderr.read()
        watchdog = (info["watchdog"], info["watchdog_started"])
        if how not in SELF_CLEANING:
            assert _wait_until(lambda: not reaper.alive(*watchdog), EXIT_TIMEOUT), "watchdog hangs"
        assert not reaper.alive(*watchdog)
        assert _gone(info), (info, reaper.processes_in([info["base"]]))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


WATCHED_CHILD = """
import json, os, subprocess, sys, time
from chaos import reaper
from chaos._tempdirs import make_temp_dir

how = sys.argv[1]
directory = make_temp_dir("watched")
victim = subprocess.Popen(["sleep", "600"], start_new_session=True)
watch = reaper.watch(remove_paths=[directory], grace=1.0)
watch.add_pid(victim.pid)
keeper = None
if how == "fork-keeps-pipe":
    keeper = os.fork()
    if keeper == 0:  # holds the pipe open after the owner dies; works in the directory
        os.chdir(directory)
        time.sleep(600)
        os._exit(0)
ready = {"directory": str(directory), "victim": victim.pid,
         "victim_started": reaper.start_time(victim.pid), "keeper": keeper,
         "watchdog": watch.pid, "watchdog_started": reaper.start_time(watch.pid)}
print(json.dumps(ready), flush=True)
if how == "cancel":
    watch.cancel()
    sys.exit(0)
while True:
    time.sleep(600)
"""


@pytest.mark.parametrize("how", ["killed", "fork-keeps-pipe", "cancel"])
def test_watchdog_alone(tmp_path, how) -> None:
    """The watchdog kills and removes what it was told when the owner dies; nothing on cancel.

    ``fork-keeps-pipe``: a forked child of the owner keeps the order pipe open, so no EOF
    comes; the watchdog learns of the death from the owner's pid, reads whatever orders are
    left in the pipe without waiting for more, and kills the fork too (it works in a
    removed directory).
    """
    script = tmp_path / "watched.py"
    script.write_text(WATCHED_CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), how],
        env=CHILD_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    info: dict = {}
    try:
        info = _read_ready_line(child, READY_TIMEOUT)
        victim = (info["victim"], info["victim_started"])
        if how != "cancel":
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=EXIT_TIMEOUT)
        watchdog = (info["watchdog"], info["watchdog_started"])
        assert _wait_until(lambda: not reaper.alive(*watchdog), EXIT_TIMEOUT), "watchdog hangs"
        if how == "cancel":
            assert reaper.alive(*victim) and Path(info["directory"]).is_dir()
        else:
            assert not reaper.alive(*victim) and not Path(info["directory"]).exists()
            assert not (info["keeper"] and reaper.alive(info["keeper"]))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        _clean_up_watched(info)


def _clean_up_watched(info: dict) -> None:
    """Remove what a watchdog test leaves when the watchdog did not (a cancel, a failure)."""
    targets = [(info.get("victim"), info.get("victim_started")), (info.get("keeper"), None)]
    for pid, started in targets:
        if pid and reaper.alive(pid, started):
            os.kill(pid, signal.SIGKILL)
    if info.get("directory"):
        shutil.rmtree(info["directory"], ignore_errors=True)


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
