"""``PostgresServer(tls=True)``: TLS on, scram-sha-256 only, nothing left behind.

The connection setup the pool-vs-connect benchmark (bench/bench_connect.py)
pays per request must be the production one: a TLS handshake, then a
scram-sha-256 exchange. :func:`tls_scram_problems` checks it from outside, as
a client sees it and as the server logs it. Its canaries run the same check on
setups broken in each way (trust without TLS, a session without TLS, TLS with
trust) and must see each point of it fail, every time.
"""

from __future__ import annotations

import os
import re
import stat
import traceback
from pathlib import Path

import psycopg
import pytest

from chaos import reaper
from chaos.postgres import TLS_ROLE, TlsLogin

#: Every connection the server accepts is logged with how it was authenticated.
LOGGED = {"log_connections": "on"}
#: libpq must not find a password anywhere but in what the test passes.
NO_PASSFILE = {"passfile": "/nonexistent/plain-pool-pgpass", "connect_timeout": 10}


def _connect(server, login: TlsLogin, **overrides) -> psycopg.Connection:
    kwargs = login.connect_kwargs(**NO_PASSFILE, **overrides)
    return psycopg.connect(host=server.host, port=server.port, dbname=server.dbname, **kwargs)


def _refused(server, login: TlsLogin, **overrides) -> BaseException | None:
    """The error of a connection attempt that must fail (None if it was accepted)."""
    try:
        _connect(server, login, **overrides).close()
    except psycopg.OperationalError as exc:
        return exc
    return None


#: libpq's and the server's words for each refusal (a refusal for another reason, a
#: server without TLS say, proves nothing about passwords).
REFUSALS = {
    "without a password": ({"password": ""}, "no password supplied"),
    "with a wrong password": ({"password": "not-the-password"}, "password authentication failed"),
    "without TLS": ({"sslmode": "disable"}, "no encryption"),
}


def _scram_logged(server, backend_pid: int) -> bool:
    """The server logged that backend ``backend_pid`` authenticated with scram-sha-256."""
    line = re.compile(
        rf"\[{backend_pid}\] .*connection authenticated: identity=\"[^\"]+\" method=scram-sha-256"
    )
    return any(line.search(text) for text in server.log_tail(100_000).splitlines())


def tls_scram_problems(server, login: TlsLogin) -> list[str]:
    """What is wrong with ``server``'s TLS + scram-sha-256 setup for ``login`` ([] = ok).

    The login must connect with ``sslmode=require`` and its password, over TLS
    (``pg_stat_ssl``), authenticated by scram-sha-256 (the server's log); and be
    refused without a password, with a wrong one, and without TLS.
    """
    problems: list[str] = []
    try:
        conn = _connect(server, login)
    except psycopg.OperationalError:
        problems.append("refused with the password over TLS")
    else:
        with conn:
            row = conn.execute(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone()
            if not (row and row[0]):
                problems.append("pg_stat_ssl: not TLS")
            if not _scram_logged(server, conn.info.backend_pid):
                problems.append("not authenticated by scram-sha-256")
    for attempt, (overrides, reason) in REFUSALS.items():
        error = _refused(server, login, **overrides)
        if error is None:
            problems.append(f"{attempt}: accepted")
        elif reason not in str(error):
            problems.append(f"{attempt}: refused for another reason")
    return problems


def _shown(exc: BaseException) -> str:
    return "".join([str(exc), repr(exc), *traceback.format_exception(exc)])


def _start_tls_server(postgres_factory):
    server = postgres_factory(tls=True, settings=LOGGED)
    if server.binaries.major < 14:
        pytest.skip("Postgres logs how a session authenticated from version 14 on")
    return server


@pytest.fixture
def tls_server(postgres_factory):
    return _start_tls_server(postgres_factory)


def test_scram_over_tls_only(tls_server) -> None:
    login = tls_server.tls
    assert login is not None and login.user == TLS_ROLE
    assert tls_scram_problems(tls_server, login) == []
    with _connect(tls_server, login) as conn:
        ssl, version = conn.execute(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
        assert ssl and version.startswith("TLS")
        assert conn.pgconn.used_password
    # The certificate is a real one for 127.0.0.1, signed by the harness's CA.
    with _connect(tls_server, login, sslmode="verify-full", sslrootcert=str(login.ca_file)):
        pass
    with tls_server.connect() as admin:  # the server stores a SCRAM verifier, not a password
        (stored,) = admin.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", [TLS_ROLE]
        ).fetchone()
        assert stored.startswith("SCRAM-SHA-256$")


def test_the_key_file_is_private_to_the_server_user(tls_server) -> None:
    """Postgres refuses a key others can read; root runs the server as another user."""
    info = (tls_server.data_dir / "server.key").stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == tls_server.data_dir.stat().st_uid  # initdb's user: the server's
    if os.geteuid() == 0:
        assert info.st_uid != 0


def test_the_password_is_never_shown(tls_server) -> None:
    login = tls_server.tls
    errors = [
        _refused(tls_server, login, password=login.password[::-1]),
        _refused(tls_server, login, password=""),
        _refused(tls_server, login, sslmode="disable"),
    ]
    assert all(errors), errors
    shown = [_shown(exc) for exc in errors]
    assert "password authentication failed" in shown[0]  # the paths were really taken
    assert "no password supplied" in shown[1] and "no encryption" in shown[2]
    texts = [repr(tls_server), str(tls_server), repr(login), str(login), *shown]
    texts.append(tls_server.log_tail(100_000))
    texts += [p.read_text(errors="replace") for p in tls_server.data_dir.glob("*.conf")]
    assert not [t for t in texts if login.password in t]


class _PlainLogin(TlsLogin):
    """A broken login: asks for no TLS, whatever the check asks."""

    def connect_kwargs(self, **overrides):
        return {**super().connect_kwargs(**overrides), "sslmode": "disable"}


@pytest.mark.canary
def test_canary_the_check_fails_a_trusting_server(server_control) -> None:
    """The default server (trust, no TLS) fails every refusal, and TLS itself."""
    login = TlsLogin(server_control.superuser, "any-password", Path("/nonexistent"))
    assert tls_scram_problems(server_control, login) == [
        "refused with the password over TLS",
        "without a password: refused for another reason",
        "with a wrong password: refused for another reason",
        "without TLS: accepted",
    ]


@pytest.mark.canary
def test_canary_the_check_fails_a_session_without_tls(server_control) -> None:
    """A session the server accepted without TLS is caught by pg_stat_ssl and the log."""
    login = _PlainLogin(server_control.superuser, "any-password", Path("/nonexistent"))
    assert tls_scram_problems(server_control, login) == [
        "pg_stat_ssl: not TLS",
        "not authenticated by scram-sha-256",
        "without a password: accepted",
        "with a wrong password: accepted",
        "without TLS: accepted",
    ]


@pytest.mark.canary
@pytest.mark.restarts_server
def test_canary_the_check_fails_tls_with_trust(postgres_factory) -> None:
    """TLS on but trust instead of scram-sha-256: caught by the log and the refusals.

    The server is restarted, not reloaded: a reload applies at some moment after
    ``pg_reload_conf()`` returns, a restart before the server accepts again.
    """
    server = _start_tls_server(postgres_factory)
    hba = server.data_dir / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    server.restart("fast")
    problems = tls_scram_problems(server, server.tls)
    assert problems == [
        "not authenticated by scram-sha-256",
        "without a password: accepted",
        "with a wrong password: accepted",
    ]


def test_a_tls_server_leaves_nothing_behind(tls_server) -> None:
    """close() with a TLS session open: directory (key included), processes, watchdog gone."""
    conn = _connect(tls_server, tls_server.tls)
    base = tls_server.base_dir
    key = tls_server.data_dir / "server.key"
    pids = [tls_server.pid, conn.info.backend_pid]
    watchdog = (tls_server.watchdog_pid, reaper.start_time(tls_server.watchdog_pid))
    assert key.exists() and all(reaper.alive(pid) for pid in pids)
    try:
        tls_server.close()
    finally:
        conn.close()
    assert not base.exists() and not reaper.processes_in([base])
    assert not any(reaper.alive(pid) for pid in pids)
    assert not reaper.alive(*watchdog)
