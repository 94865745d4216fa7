"""A PgBouncer the harness owns, in front of the harness's Postgres.

Found like the Postgres binaries (:mod:`chaos._binaries`): an explicit path
(``--pgbouncer-bin``, argument) or ``PLAIN_POOL_PGBOUNCER``, which must then be
usable (a typo fails loudly); otherwise ``pgbouncer`` on ``PATH``, then
``/usr/sbin`` (Debian's package), ``/usr/bin``, ``/usr/local/bin``. Missing, the
PgBouncer tests and targets are skipped with :data:`NOT_FOUND`.

:class:`PgBouncer` writes its ``pgbouncer.ini`` and auth file into a temp dir of
its own (``plain-pool-pgbouncer-*``, :mod:`chaos._tempdirs`) and runs the binary
directly (not daemonized) with:

- ``listen_addr = 127.0.0.1`` on a free port, no unix socket;
- ``pool_mode`` per instance (session / transaction / statement), the pool size,
  every other setting PgBouncer's default unless ``settings`` says otherwise
  (``server_reset_query = DISCARD ALL``, ``server_reset_query_always = 0``,
  ``server_login_retry = 15``, ``query_wait_timeout = 120``): the suite measures
  PgBouncer as it is shipped;
- the real auth path: ``auth_type = scram-sha-256`` against :data:`LOGIN_ROLE`, a
  role created on the harness Postgres with a fresh random password at every
  start; the auth file holds the SCRAM verifier read from ``pg_authid``, never the
  password (the harness's Postgres trusts 127.0.0.1, so PgBouncer's own logins to
  it need no password). The role is a superuser, as the harness's ``postgres``
  is, so the machines' ``SET ROLE`` rows work through it;
- ``admin_users = LOGIN_ROLE``: the controls (``RELOAD``, ``PAUSE``/``RESUME``,
  ``KILL``, ``SET default_pool_size``, ``SHOW POOLS/CLIENTS/SERVERS``) go through
  the admin console (database ``pgbouncer``, simple query protocol);
- ``ignore_startup_parameters = extra_float_digits, options``: PgBouncer 1.18
  refuses ``options`` (the harness's ``-c statement_timeout``), so the role has
  ``statement_timeout`` as its own default instead (``ALTER ROLE ... SET``: source
  ``user``, not a session GUC, and what ``DISCARD ALL`` goes back to).

Behind it PgBouncer connects to ``server_host``/``server_port``: the server
itself, or a fault proxy in front of it (faults on the server hop). Faults on the
client hop are a proxy in front of :attr:`PgBouncer.port`.

When the harness runs as root PgBouncer runs as the Postgres harness's
unprivileged user (``postgres`` or ``nobody``; the temp dir is chowned to it).
Cleanup is the Postgres harness's: :meth:`PgBouncer.close`, ``atexit``, a
parent-death signal (``setpriv --pdeathsig``) and a :mod:`chaos.reaper` watchdog
that kills the process and removes the dir when the owner dies by SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from chaos import reaper
from chaos._tempdirs import make_temp_dir
from chaos.postgres import LOOPBACK, _free_port, _popen, _tail, _unprivileged_user, _write_private
from plain_pool._redact import redact

PGBOUNCER_ENV = "PLAIN_POOL_PGBOUNCER"
SYSTEM_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/bin")
POOL_MODES = ("session", "transaction", "statement")
#: The login every client of a harness PgBouncer uses (scram-sha-256, random password).
LOGIN_ROLE = "chaos_bouncer"
#: The server-side statement_timeout of LOGIN_ROLE (the harness's chaos bound, ms).
ROLE_STATEMENT_TIMEOUT_MS = 5000
#: Why the PgBouncer tests and targets are skipped on a machine without it.
NOT_FOUND = "pgbouncer not found"
LOG_NAME = "pgbouncer.log"
_VERSION_RE = re.compile(r"PgBouncer\s+(\d+(?:\.\d+)*\S*)")


class PgBouncerNotFound(RuntimeError):
    """No usable pgbouncer binary; the message lists every place searched."""


class PgBouncerStartError(RuntimeError):
    """pgbouncer did not start; the message carries its log tail."""


@dataclasses.dataclass(frozen=True)
class PgBouncerBinary:
    path: Path
    version: str  # e.g. "1.18.0"
    source: str  # "explicit", "env:PLAIN_POOL_PGBOUNCER", "PATH", "/usr/sbin"


def _version_of(path: Path) -> str:
    if not os.access(path, os.X_OK) or path.is_dir():
        raise ValueError("not an executable file")
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ValueError(f"--version failed: {exc}") from exc
    match = _VERSION_RE.search(out.stdout + out.stderr)
    if out.returncode != 0 or not match:
        raise ValueError(f"--version exited {out.returncode}: {out.stdout.strip()[:200]!r}")
    return match.group(1)


def find_pgbouncer(
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    system_dirs: tuple[str, ...] = SYSTEM_DIRS,
) -> PgBouncerBinary:
    """The pgbouncer binary (see the module docstring for the order)."""
    environ = os.environ if environ is None else environ
    forced = None
    if explicit is not None and str(explicit):
        forced = ("explicit", str(explicit))
    elif environ.get(PGBOUNCER_ENV):
        forced = (f"env:{PGBOUNCER_ENV}", environ[PGBOUNCER_ENV])
    if forced is not None:
        source, raw = forced
        path = Path(raw).expanduser()
        try:
            return PgBouncerBinary(path.resolve(), _version_of(path), source)
        except ValueError as exc:
            raise PgBouncerNotFound(
                f"pgbouncer given by {source} is not usable: {path}: {exc}"
            ) from None
    searched: list[str] = []
    on_path = shutil.which("pgbouncer", path=environ.get("PATH", os.defpath))
    candidates = [("PATH", on_path)] if on_path else []
    if not on_path:
        searched.append("PATH: no pgbouncer")
    candidates += [(d, str(Path(d) / "pgbouncer")) for d in system_dirs]
    for source, raw in candidates:
        path = Path(raw)
        if not path.exists():
            searched.append(f"{source}: no {path}")
            continue
        try:
            return PgBouncerBinary(path.resolve(), _version_of(path), source)
        except ValueError as exc:
            searched.append(f"{source}: {path}: {exc}")
    raise PgBouncerNotFound(
        f"{NOT_FOUND}. Searched:\n  - "
        + "\n  - ".join(searched)
        + f"\nSet {PGBOUNCER_ENV} or install it (Debian: apt-get install -y pgbouncer)."
    )


_found: dict[str, PgBouncerBinary | PgBouncerNotFound] = {}


def pgbouncer_binary() -> PgBouncerBinary:
    """:func:`find_pgbouncer` for this process's environment, searched once per setting."""
    key = os.environ.get(PGBOUNCER_ENV, "")
    if key not in _found:
        try:
            _found[key] = find_pgbouncer()
        except PgBouncerNotFound as exc:
            _found[key] = exc
    found = _found[key]
    if isinstance(found, PgBouncerNotFound):
        raise found
    return found


def unavailable() -> str | None:
    """:data:`NOT_FOUND` (the skip reason) when there is no usable pgbouncer, else None."""
    try:
        pgbouncer_binary()
    except PgBouncerNotFound:
        return NOT_FOUND
    return None


# --- the login role ----------------------------------------------------------------------


def _ensure_login(server: Any, password: str) -> str:
    """LOGIN_ROLE exists (superuser, login) with ``password``; return its SCRAM verifier.

    The password is given as a verifier computed on the client (libpq's
    ``PQencryptPasswordConn``), so no statement carries it in clear.
    """
    ident = sql.Identifier(LOGIN_ROLE)
    with server._admin() as conn:
        with contextlib.suppress(psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            if not conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", [LOGIN_ROLE]
            ).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} SUPERUSER LOGIN").format(ident))
        verifier = conn.pgconn.encrypt_password(
            password.encode(), LOGIN_ROLE.encode(), b"scram-sha-256"
        ).decode()
        conn.execute(
            sql.SQL("ALTER ROLE {} SUPERUSER LOGIN PASSWORD {}").format(
                ident, sql.Literal(verifier)
            )
        )
        conn.execute(
            sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(
                ident, sql.Literal(ROLE_STATEMENT_TIMEOUT_MS)
            )
        )
        row = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", [LOGIN_ROLE]
        ).fetchone()
    assert row is not None and row[0].startswith("SCRAM-SHA-256$")
    return str(row[0])


# --- the process -------------------------------------------------------------------------

_LIVE: set[PgBouncer] = set()
_LIVE_LOCK = threading.RLock()
_atexit_installed = False


def _close_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for bouncer in live:
        with contextlib.suppress(Exception):
            bouncer.close()


def _ini_value(value: Any) -> str:
    text = str(value)
    if "\n" in text or "\r" in text:
        raise ValueError("a pgbouncer.ini value cannot hold a line break")
    return text


class PgBouncer:
    """A throwaway PgBouncer in a temp dir; a context manager (start / close).

    ``server``: the harness Postgres (its ``_admin()`` creates the login role;
    its ``dbname``). ``server_host``/``server_port``: where PgBouncer connects
    (default the server itself; a proxy's address for faults on the server hop).
    ``settings``: extra ``[pgbouncer]`` lines over the ones this class writes;
    ``aliases``: extra ``[databases]`` entries (alias -> the server's database).
    """

    host = LOOPBACK
    user = LOGIN_ROLE

    def __init__(
        self,
        server: Any,
        *,
        pool_mode: str = "session",
        server_host: str | None = None,
        server_port: int | None = None,
        pool_size: int = 20,
        max_client_conn: int = 100,
        settings: Mapping[str, Any] | None = None,
        aliases: Mapping[str, str] | None = None,
        binary: PgBouncerBinary | None = None,
        start_timeout: float = 20.0,
        parent_death_signal: bool = True,
    ) -> None:
        if pool_mode not in POOL_MODES:
            raise ValueError(f"pool_mode must be one of {POOL_MODES}, not {pool_mode!r}")
        self.server = server
        self.binary = binary or pgbouncer_binary()
        self.version = self.binary.version
        self.pool_mode = pool_mode
        self.server_host = server_host or server.host
        self.server_port = int(server_port or server.port)
        self.dbname = getattr(server, "dbname", "postgres")
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.settings = {k: _ini_value(v) for k, v in (settings or {}).items()}
        #: Extra [databases] entries: alias -> the server's database (a pool of its own).
        self.aliases = {_db_ident(k): _db_ident(v) for k, v in (aliases or {}).items()}
        self.start_timeout = start_timeout
        self.parent_death_signal = parent_death_signal
        self.port = _free_port()
        self.base_dir: Path | None = None
        self._password: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._watch: reaper.Watch | None = None
        self._user = _unprivileged_user()
        self._closed = False

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return (
            f"<PgBouncer {self.version} {self.host}:{self.port} pool_mode={self.pool_mode} "
            f"-> {self.server_host}:{self.server_port} {state} {self.base_dir}>"
        )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.is_running and self._proc else None

    @property
    def watchdog_pid(self) -> int | None:
        return self._watch.pid if self._watch is not None else None

    @property
    def ini_path(self) -> Path | None:
        return self.base_dir / "pgbouncer.ini" if self.base_dir else None

    @property
    def log_path(self) -> Path | None:
        return self.base_dir / LOG_NAME if self.base_dir else None

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines) if self.log_path else ""

    # -- how to connect (the password stays out of every repr and message)

    def connect_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """psycopg keyword arguments for a client of this PgBouncer (holds the password:
        pass it on, never print it). ``dbname`` defaults to the server's database."""
        assert self._password is not None, "start() first"
        return {
            "host": self.host,
            "port": self.port,
            "user": LOGIN_ROLE,
            "password": self._password,
            "dbname": self.dbname,
            **overrides,
        }

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A client connection through PgBouncer (autocommit by default)."""
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 5)
        return psycopg.connect(**self.connect_kwargs(**kwargs))

    @contextlib.contextmanager
    def admin(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection to the admin console (database ``pgbouncer``), closed after."""
        conn = psycopg.connect(
            **self.connect_kwargs(dbname="pgbouncer"),
            autocommit=True,
            connect_timeout=5,
            cursor_factory=psycopg.ClientCursor,
        )
        try:
            yield conn
        finally:
            conn.close()

    def command(self, text: str) -> list[dict[str, Any]]:
        """Run one admin console command (simple query protocol); its rows as dicts."""
        with self.admin() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(text)
            return cur.fetchall() if cur.description is not None else []

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW POOLS`` / ``CLIENTS`` / ``SERVERS`` / ``DATABASES`` / ``CONFIG``..."""
        if not what.isalpha():
            raise ValueError(f"not a SHOW subject: {what!r}")
        return self.command(f"SHOW {what.upper()}")

    def reload(self) -> None:
        """Re-read pgbouncer.ini (``RELOAD``)."""
        self.command("RELOAD")

    def pause(self, db: str | None = None) -> None:
        """``PAUSE``: wait until every server connection is released, then hold clients."""
        self.command("PAUSE" + (f" {_db_ident(db)}" if db else ""))

    def resume(self, db: str | None = None) -> None:
        self.command("RESUME" + (f" {_db_ident(db)}" if db else ""))

    def kill(self, db: str | None = None) -> None:
        """``KILL db``: drop every client and server connection of the database; new clients
        then wait until ``RESUME db``."""
        self.command(f"KILL {_db_ident(db or self.dbname)}")

    def set_pool_size(self, n: int) -> None:
        """``default_pool_size`` for every pool, at once (``SET`` on the admin console)."""
        self.command(f"SET default_pool_size = {int(n)}")
        self.pool_size = int(n)

    # -- lifecycle

    def start(self) -> None:
        """Create the login, write the config (first call), start and wait until it listens."""
        if self.is_running:
            return
        if self._closed:
            raise PgBouncerStartError(f"{self!r} was closed (its directory is gone)")
        global _atexit_installed
        if not _atexit_installed:
            _atexit_installed = True
            atexit.register(_close_all)
        fresh = self.base_dir is None
        try:
            if fresh:
                self._prepare()
            self._start_process()
        except BaseException:
            if fresh:
                self.close()
            raise

    def _prepare(self) -> None:
        base = make_temp_dir("pgbouncer")
        self.base_dir = base
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._watch = reaper.watch(remove_paths=[base], first_signal=signal.SIGTERM)
        if self._user is not None:
            os.chown(base, self._user.pw_uid, self._user.pw_gid)
        self._password = secrets.token_urlsafe(24)
        verifier = _ensure_login(self.server, self._password)
        _write_private(
            base / "userlist.txt", f'"{LOGIN_ROLE}" "{verifier}"\n'.encode(), self._user, 0o600
        )
        self._write_ini()

    def _write_ini(self) -> None:
        assert self.base_dir is not None
        conf = {
            "listen_addr": LOOPBACK,
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "scram-sha-256",
            "auth_file": str(self.base_dir / "userlist.txt"),
            "admin_users": LOGIN_ROLE,
            "pool_mode": self.pool_mode,
            "default_pool_size": str(self.pool_size),
            "max_client_conn": str(self.max_client_conn),
            "ignore_startup_parameters": "extra_float_digits, options",
            "pidfile": str(self.base_dir / "pgbouncer.pid"),
            **self.settings,
        }
        lines = [
            "; plain-pool harness PgBouncer",
            "[databases]",
            f"* = host={self.server_host} port={self.server_port}",
            *(
                f"{alias} = host={self.server_host} port={self.server_port} dbname={db}"
                for alias, db in self.aliases.items()
            ),
            "[pgbouncer]",
            *(f"{k} = {v}" for k, v in conf.items()),
        ]
        ini = self.base_dir / "pgbouncer.ini"
        ini.write_text("\n".join(lines) + "\n")
        if self._user is not None:
            os.chown(ini, self._user.pw_uid, self._user.pw_gid)

    def _start_process(self) -> None:
        for attempt in range(5):
            self._spawn()
            try:
                self._wait_listening()
                return
            except PgBouncerStartError:
                taken = "already in use" in self.log_tail(10)
                self._kill()
                if not taken or attempt == 4:
                    raise
                self.port = _free_port()  # lost a race for the port
                self._write_ini()

    def _spawn(self) -> None:
        assert self.base_dir is not None and self._watch is not None
        cmd = [str(self.binary.path), str(self.base_dir / "pgbouncer.ini")]
        with open(self.base_dir / LOG_NAME, "ab") as log:
            if self._user is not None:
                os.fchown(log.fileno(), self._user.pw_uid, self._user.pw_gid)
            self._proc = _popen(
                cmd,
                user=self._user,
                cwd=self.base_dir,
                deathsig=signal.SIGTERM if self.parent_death_signal else None,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._watch.add_pid(self._proc.pid)

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise PgBouncerStartError(
                    f"pgbouncer exited ({None if self._proc is None else self._proc.returncode})"
                    + self._log_excerpt()
                )
            # Its own log line, not just an open port: another process may have taken the
            # port between _free_port() and PgBouncer's bind (PgBouncer then exits: "nowhere
            # to listen on"), and a connect would reach that process.
            if self._says_listening():
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.settimeout(1.0)
                    if s.connect_ex((self.host, self.port)) == 0:
                        return
            if time.monotonic() > deadline:
                raise PgBouncerStartError(
                    f"{self!r} not listening after {self.start_timeout}s" + self._log_excerpt()
                )
            time.sleep(0.02)

    def _says_listening(self) -> bool:
        assert self._proc is not None and self.log_path is not None
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        return f"[{self._proc.pid}] LOG listening on {self.host}:{self.port}" in text

    def _log_excerpt(self) -> str:
        secrets_ = [self._password] if self._password else []
        return redact(f"\n--- last lines of {self.log_path} ---\n{self.log_tail()}", secrets_)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (PgBouncer's immediate shutdown) and wait; SIGKILL past ``timeout``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        if self._watch is not None:
            self._watch.forget_pid(proc.pid)
        self._proc = None

    def restart(self) -> None:
        """Stop, then start on the same port (its clients lose their connections)."""
        self.stop()
        self._start_process()

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()
        if self._watch is not None:
            self._watch.forget_pid(proc.pid)
        self._proc = None

    def close(self) -> None:
        """Stop and remove the directory; idempotent."""
        self._closed = True
        try:
            try:
                self.stop()
            except Exception:
                self._kill()
        finally:
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)
            if self._watch is not None:
                if self.base_dir is not None and self.base_dir.exists():
                    self._watch.reap_now()
                else:
                    self._watch.cancel()
                self._watch = None
            with _LIVE_LOCK:
                _LIVE.discard(self)


def _db_ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name
