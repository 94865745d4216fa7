"""A PostgreSQL server the harness owns, and the faults it can inflict on it.

:class:`PostgresServer` runs ``initdb`` into a fresh temp directory
(``plain-pool-pg-*``) and runs the ``postgres`` binary directly as a child
process (not through ``pg_ctl``), so the harness sends the shutdown signals
itself: smart = SIGTERM, fast = SIGINT, immediate = SIGQUIT, and a crash is
a SIGKILL of one backend, after which the postmaster resets every session.

It listens on 127.0.0.1 only, on a free port, with trust authentication for
127.0.0.1 only and no unix socket; ``fsync=off`` (the suite tests the pool,
not the disk), but commits are crash-safe at the process level.

``tls=True`` gives a connection setup as costly as a production one (what
connect-per-request pays): ``ssl=on`` with a throwaway certificate (trustme,
made at start, key file 0600 owned by the server's user), and a login role,
:data:`TLS_ROLE`, that may only connect over TLS with its password
(``hostssl ... scram-sha-256``); :attr:`PostgresServer.tls` holds how to log in.
The superuser stays trusted, for the harness's own administration.

Postgres refuses to run as root. When the harness runs as root, ``initdb``
and ``postgres`` run as the ``postgres`` user (or ``nobody``) and the temp
dir is chowned to it.

Cleanup is layered so that nothing survives the test process: :meth:`close`
(context manager exit, fixture teardown); ``atexit`` and a SIGTERM handler
for every server still open; a parent-death signal on the postmaster; and a
watchdog process (:mod:`chaos.reaper`) that kills the postmaster and removes
the directory when the owner dies by SIGKILL.

:class:`ExternalPostgres` (``PLAIN_POOL_PG_DSN``) and :class:`DockerPostgres`
(testcontainers) offer the same surface; their process controls raise
:class:`ServerControlUnavailable`, which the fixtures turn into skips.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import dataclasses
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chaos import reaper
from chaos._binaries import BinariesNotFound, PostgresBinaries, find_binaries
from chaos._tempdirs import make_temp_dir
from plain_pool._redact import redact, secrets_in

__all__ = [
    "DSN_ENV",
    "MODE_ENV",
    "TLS_ROLE",
    "BinariesNotFound",
    "DockerPostgres",
    "ExternalPostgres",
    "PostgresBinaries",
    "PostgresServer",
    "PostgresStartError",
    "ServerControlUnavailable",
    "ServerUnavailable",
    "TlsLogin",
    "find_binaries",
    "parse_dsn",
]

MODE_ENV = "PLAIN_POOL_PG_MODE"
DSN_ENV = "PLAIN_POOL_PG_DSN"
LOOPBACK = "127.0.0.1"
LOG_NAME = "postgres.log"
SHUTDOWN_SIGNALS = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}
# Applied after initdb, before the caller's settings (which win). fsync=off only
# risks data on an OS crash; synchronous_commit stays on so that a commit
# acknowledged before a backend crash or an immediate stop survives it (the
# write ledger relies on that).
BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": LOOPBACK,
    "unix_socket_directories": "",
    "shared_buffers": "16MB",
    "fsync": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "autovacuum": "off",
    "jit": "off",
    "huge_pages": "off",
    "timezone": "UTC",
    "lc_messages": "C",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "log_min_messages": "warning",
}
# tls=True: the files are relative to the data dir. password_encryption is already the
# default since Postgres 14; set so that the role's verifier is SCRAM on any version.
TLS_SETTINGS: dict[str, str] = {
    "ssl": "on",
    "ssl_cert_file": "server.crt",
    "ssl_key_file": "server.key",
    "password_encryption": "scram-sha-256",
}
#: The login role of a ``tls=True`` server (TLS and scram-sha-256 only).
TLS_ROLE = "app_tls"
_PR_SET_PDEATHSIG = 1


class ServerControlUnavailable(RuntimeError):
    """The server is not ours to control (external or Docker); tests needing it skip."""


class ServerUnavailable(RuntimeError):
    """The selected mode cannot provide a server here (e.g. no Docker engine)."""


class PostgresStartError(RuntimeError):
    """initdb or postgres failed; the message carries the command output or log tail."""


# --- process plumbing ------------------------------------------------------------------


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The account to run Postgres as, when we are root (None when we are not)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresStartError("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _quote(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def _pdeathsig_preexec(sig: int):  # pragma: no cover - runs in the forked child
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)

    def set_pdeathsig() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return set_pdeathsig


def _child_env() -> dict[str, str]:
    """The environment for initdb/postgres: ours minus PG* variables that could redirect them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    env["TZ"] = "UTC"
    return env


def _popen(
    cmd: list[str],
    *,
    user: pwd.struct_passwd | None,
    cwd: Path,
    deathsig: int | None,
    **kwargs: Any,
) -> subprocess.Popen[bytes]:
    """Start a server-side child: own session, dropped privileges, a parent-death signal.

    The parent-death signal must be set *after* the uid change (the kernel
    clears it on credential changes). CPython runs ``preexec_fn`` after
    ``setreuid`` for ``user=``, but ``preexec_fn`` is unsafe once threads
    exist (pool workers), so ``setpriv --pdeathsig`` (util-linux) is used when
    present: it runs after the uid change and then execs the real command,
    so the child's pid stays the command's pid. The signal is delivered when
    the *thread* that forked exits, hence only from the main thread.
    """
    preexec = None
    if deathsig is not None and threading.current_thread() is threading.main_thread():
        setpriv = shutil.which("setpriv")
        if setpriv:
            cmd = [setpriv, f"--pdeathsig={signal.Signals(deathsig).name[3:]}", "--", *cmd]
        elif threading.active_count() == 1:
            preexec = _pdeathsig_preexec(deathsig)
    if user is not None:
        kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=_child_env(),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=preexec,
        **kwargs,
    )


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


# --- TLS and scram-sha-256 (tls=True) -----------------------------------------------


@dataclasses.dataclass(frozen=True)
class TlsLogin:
    """How to log in to a ``tls=True`` server; the repr leaves the password out.

    ``ca_file`` is the throwaway CA that signed the server's certificate (for
    ``sslmode=verify-full``); ``sslmode=require`` needs nothing.
    """

    user: str
    password: str = dataclasses.field(repr=False)
    ca_file: Path

    def connect_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """libpq / psycopg keyword arguments for this login, TLS required.

        The dict holds the password: pass it on, never print it.
        """
        return {"user": self.user, "password": self.password, "sslmode": "require", **overrides}


def _write_private(path: Path, data: bytes, user: pwd.struct_passwd | None, mode: int) -> None:
    """Write a new file created with ``mode`` (no moment with wider permissions), owned by
    ``user`` (Postgres refuses a key file that others can read, or that it does not own)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


def _write_tls_files(data_dir: Path, ca_file: Path, user: pwd.struct_passwd | None) -> None:
    """A throwaway CA (its key only in memory) and a certificate for 127.0.0.1 it signed.

    RSA 2048, not trustme's ECDSA default: the key type of Debian's snakeoil
    certificate and of the managed services' default CAs, so the handshake
    costs what it usually costs.
    """
    try:
        import trustme
    except ImportError as exc:
        raise PostgresStartError(
            "PostgresServer(tls=True) needs trustme: pip install 'plain-pool[chaos]'"
        ) from exc
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert(LOOPBACK, "localhost", key_type=trustme.KeyType.RSA)
    ca_file.write_bytes(ca.cert_pem.bytes())
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    _write_private(data_dir / TLS_SETTINGS["ssl_cert_file"], chain, user, 0o644)
    key = leaf.private_key_pem.bytes()
    _write_private(data_dir / TLS_SETTINGS["ssl_key_file"], key, user, 0o600)


# --- servers ---------------------------------------------------------------------------


_LIVE: set[PostgresServer] = set()
_LIVE_LOCK = threading.RLock()
_handlers_installed = False


def _close_all(mode: str = "fast") -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.close(mode=mode)


def _on_sigterm(signum: int, frame: Any) -> None:
    """Clean up every open server, then die of SIGTERM as if we had no handler."""
    _close_all(mode="immediate")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_exit_handlers() -> None:
    """atexit always; a SIGTERM handler only if nobody installed one (main thread only)."""
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_close_all)
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError):
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, _on_sigterm)


class _ConnectMixin:
    host: str
    port: int
    superuser: str
    dbname: str
    _base_conninfo: dict[str, Any]

    def __enter__(self) -> Self:
        self.start()  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]

    def conninfo(self, **overrides: Any) -> str:
        """A libpq connection string for the superuser; keyword arguments override or add."""
        params = {**self._base_conninfo, **overrides}
        return make_conninfo("", **{k: v for k, v in params.items() if v is not None})

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """An autocommit superuser connection for administration (the caller closes it)."""
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 5)
        return psycopg.connect(self.conninfo(), **kwargs)

    @contextlib.contextmanager
    def _admin(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for the harness's own queries, its backend gone when the block ends.

        Tests count backends and connection slots (``backend_pids``, ``max_connections``);
        a backend still exiting after its client closed would be counted, by chance.
        """
        conn = self.connect()
        pid = conn.info.backend_pid
        try:
            yield conn
        finally:
            conn.close()
            self._await_backend_exit(pid)

    def _await_backend_exit(self, pid: int) -> None:
        """Wait until backend ``pid`` has exited (only a server we own can be watched)."""

    def backend_pids(self) -> set[int]:
        """Client backends in ``pg_stat_activity``, excluding the connection asking."""
        with self._admin() as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchall()
        return {row[0] for row in rows}

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Wait until a connection succeeds; return ``time.monotonic()`` of that success."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            self._check_alive()
            try:
                conn = psycopg.connect(self.conninfo(), autocommit=True, connect_timeout=2)
            except psycopg.OperationalError as exc:
                last = exc
            else:
                accepted = time.monotonic()
                pid = conn.info.backend_pid
                conn.close()
                self._await_backend_exit(pid)  # ready means: no connection of ours left
                return accepted
            if time.monotonic() >= deadline:
                raise PostgresStartError(
                    f"{self!r} not accepting connections after {timeout}s: {last}"
                    + self._log_excerpt()
                )
            time.sleep(0.05)

    def _check_alive(self) -> None:
        pass

    def _log_excerpt(self) -> str:
        return ""


class PostgresServer(_ConnectMixin):
    """A throwaway Postgres server in a temp dir; a context manager (start / close).

    ``settings`` are extra ``postgresql.conf`` lines (they override the
    speed-oriented defaults in ``BASE_SETTINGS``). ``tls=True``: TLS on and the
    :data:`TLS_ROLE` login, scram-sha-256 over TLS only (see the module docstring).
    """

    mode: ClassVar[str] = "owned"
    supports_control: ClassVar[bool] = True
    host = LOOPBACK
    superuser = "postgres"
    dbname = "postgres"

    def __init__(
        self,
        binaries: PostgresBinaries | None = None,
        *,
        port: int | None = None,
        max_connections: int = 100,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        parent_death_signal: bool = True,
        tls: bool = False,
    ) -> None:
        self.parent_death_signal = parent_death_signal
        self.binaries = binaries or find_binaries()
        self.version = self.binaries.version
        self._fixed_port = port is not None
        self.port = port if port is not None else _free_port()
        self.max_connections = max_connections
        self.settings = {**BASE_SETTINGS, "max_connections": str(max_connections)}
        if tls:
            self.settings.update(TLS_SETTINGS)
        self.settings.update({k: str(v) for k, v in (settings or {}).items()})
        #: How to log in with TLS and scram-sha-256 (``tls=True`` only; set by start()).
        self.tls: TlsLogin | None = None
        self._tls_wanted = tls
        self.start_timeout = start_timeout
        self.base_dir: Path | None = None
        self.data_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._watch: reaper.Watch | None = None
        self._user = _unprivileged_user()
        self._closed = False

    @property
    def _base_conninfo(self) -> dict[str, Any]:  # type: ignore[override]
        return {"host": self.host, "port": self.port, "user": self.superuser, "dbname": self.dbname}

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        if self._tls_wanted:
            state += " tls"
        return f"<PostgresServer {self.version} {self.host}:{self.port} {state} {self.data_dir}>"

    # -- lifecycle

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while running."""
        return self._proc.pid if self.is_running and self._proc else None

    @property
    def watchdog_pid(self) -> int | None:
        """The reaper watching this server (None before start and after close)."""
        return self._watch.pid if self._watch is not None else None

    @property
    def log_path(self) -> Path | None:
        return self.data_dir / LOG_NAME if self.data_dir else None

    def start(self) -> None:
        """initdb on first call, then start the postmaster and wait until it accepts."""
        if self.is_running:
            return
        if self._closed:
            raise PostgresStartError(f"{self!r} was closed (its directory is gone)")
        _install_exit_handlers()
        fresh = self.data_dir is None
        try:
            if fresh:
                self._create_cluster()
                self._start_postmaster()
                if self._tls_wanted:
                    self._create_tls_login()
            else:  # a restart after stop(): clients and proxies point at this port
                self._respawn()
        except BaseException:
            if fresh:  # nothing worth keeping: do not wait for atexit to remove it
                self.close()
            raise

    def _start_postmaster(self) -> None:
        for attempt in range(5):
            self._spawn()
            try:
                self.wait_ready(self.start_timeout)
                return
            except PostgresStartError:
                port_taken = "already in use" in _tail(self.log_path, 10)  # type: ignore[arg-type]
                self._kill()
                if not port_taken:
                    raise
                if self._fixed_port or attempt == 4:
                    raise
                self.port = _free_port()  # lost a race for the port: pick another

    def _create_cluster(self) -> None:
        base = make_temp_dir("pg")
        self.base_dir = base
        with _LIVE_LOCK:
            _LIVE.add(self)
        # The watchdog exists before any server process does.
        self._watch = reaper.watch(remove_paths=[base], first_signal=signal.SIGQUIT)
        if self._user is not None:
            os.chown(base, self._user.pw_uid, self._user.pw_gid)
        data = base / "data"
        cmd = [
            str(self.binaries.path("initdb")),
            "-D",
            str(data),
            "-U",
            self.superuser,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]
        if self.binaries.major >= 13:
            cmd.append("--no-instructions")
        proc = _popen(
            cmd,
            user=self._user,
            cwd=base,
            deathsig=signal.SIGKILL if self.parent_death_signal else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._watch.add_pid(proc.pid)
        out, _ = proc.communicate(timeout=120)
        self._watch.forget_pid(proc.pid)
        if proc.returncode != 0:
            hint = ""
            if self._user is not None:
                hint = (
                    f"\n(initdb ran as {self._user.pw_name!r}: it needs read/execute access to "
                    f"{self.binaries.bindir} and {base.parent})"
                )
            raise PostgresStartError(
                f"initdb failed ({proc.returncode}): {' '.join(cmd)}\n"
                + out.decode(errors="replace")[-4000:]
                + hint
            )
        self.data_dir = data
        conf = data / "postgresql.conf"
        with conf.open("a") as f:
            f.write("\n# plain-pool harness\n")
            for key, value in self.settings.items():
                f.write(f"{key} = {_quote(value)}\n")
        if self._tls_wanted:
            _write_tls_files(data, base / "ca.crt", self._user)
            (data / "pg_hba.conf").write_text(
                "# plain-pool harness: TCP on 127.0.0.1 only; the superuser trusted (the\n"
                "# harness's administration), every other role over TLS with scram-sha-256\n"
                f"host all {self.superuser} {LOOPBACK}/32 trust\n"
                f"hostssl all all {LOOPBACK}/32 scram-sha-256\n"
            )
            return
        (data / "pg_hba.conf").write_text(
            "# plain-pool harness: trust, TCP on 127.0.0.1 only\n"
            f"host all all {LOOPBACK}/32 trust\n"
        )

    def _create_tls_login(self) -> None:
        """The :data:`TLS_ROLE` login with a fresh random password.

        The server gets the SCRAM verifier computed here (libpq's
        ``PQencryptPasswordConn``, as psql's ``\\password`` does), never the
        password: a statement that failed, and was logged, would not show it.
        """
        assert self.base_dir is not None
        password = secrets.token_urlsafe(24)
        with self._admin() as conn:
            verifier = conn.pgconn.encrypt_password(
                password.encode(), TLS_ROLE.encode(), b"scram-sha-256"
            )
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(TLS_ROLE), sql.Literal(verifier.decode())
                )
            )
        self.tls = TlsLogin(TLS_ROLE, password, self.base_dir / "ca.crt")

    def _spawn(self) -> None:
        assert self.data_dir is not None and self._watch is not None
        cmd = [str(self.binaries.path("postgres")), "-D", str(self.data_dir), "-p", str(self.port)]
        with open(self.data_dir / LOG_NAME, "ab") as log:
            self._proc = _popen(
                cmd,
                user=self._user,
                cwd=self.data_dir,
                deathsig=signal.SIGQUIT if self.parent_death_signal else None,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._watch.add_pid(self._proc.pid)

    def _await_backend_exit(self, pid: int, timeout: float = 10.0) -> None:
        """Wait until backend ``pid`` has exited; it frees its connection slot as it exits."""
        deadline = time.monotonic() + timeout
        while reaper.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.005)

    def _check_alive(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            code = None if self._proc is None else self._proc.returncode
            raise PostgresStartError(
                f"postgres is not running (exit code {code})" + self._log_excerpt()
            )

    def _log_excerpt(self) -> str:
        if self.log_path is None:
            return ""
        return f"\n--- last lines of {self.log_path} ---\n{_tail(self.log_path)}"

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines) if self.log_path else ""

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Shut down (smart = SIGTERM, fast = SIGINT, immediate = SIGQUIT) and wait for exit.

        If the postmaster does not exit within ``timeout``, it and its process
        group are SIGKILLed.
        """
        if mode not in SHUTDOWN_SIGNALS:
            raise ValueError(f"mode must be one of {sorted(SHUTDOWN_SIGNALS)}, not {mode!r}")
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(SHUTDOWN_SIGNALS[mode])
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        self._reap_group(proc.pid)
        if self._watch is not None:
            self._watch.forget_pid(proc.pid)
        self._proc = None

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()
        self._reap_group(proc.pid)
        self._proc = None

    def _reap_group(self, pgid: int, timeout: float = 5.0) -> None:
        """Make sure no process of this cluster survives its postmaster.

        Backends lead their own process groups, so after a SIGKILLed
        postmaster they are found by their working directory (the data dir);
        they exit by themselves on postmaster death, stragglers are SIGKILLed.
        """
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
        if self.data_dir is None:
            return
        deadline = time.monotonic() + timeout
        while reaper.processes_in([self.data_dir]) and time.monotonic() < deadline:
            time.sleep(0.02)
        reaper.kill_processes_in([self.data_dir])

    def close(self, mode: str = "fast") -> None:
        """Stop the server and remove its directory; idempotent."""
        self._closed = True
        try:
            try:
                self.stop(mode, timeout=15.0)
            except Exception:
                self._kill()
        finally:
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)
            if self._watch is not None:
                if self.base_dir is not None and self.base_dir.exists():
                    self._watch.reap_now()  # let the watchdog try (it waits for stragglers)
                else:
                    self._watch.cancel()
                self._watch = None
            with _LIVE_LOCK:
                _LIVE.discard(self)

    # -- faults and administration

    def restart(self, mode: str = "fast") -> float:
        """Stop (fast or immediate) and start again; return when it accepted a connection."""
        if mode not in ("fast", "immediate", "smart"):
            raise ValueError(f"restart mode must be fast, immediate or smart, not {mode!r}")
        self.stop(mode)
        return self._respawn()

    def _respawn(self) -> float:
        # Same port: clients point at it. Another process may briefly hold it (a
        # free-port probe); retry a few times before giving up.
        for attempt in range(10):
            self._spawn()
            try:
                return self.wait_ready(self.start_timeout)
            except PostgresStartError:
                port_taken = "already in use" in self.log_tail(10)
                self._kill()
                if not port_taken or attempt == 9:
                    raise
                time.sleep(0.3)
        raise AssertionError("unreachable")

    def crash(self, timeout: float = 60.0) -> float:
        """SIGKILL a client backend: the postmaster kills every session and recovers.

        Uses a backend of its own (so one always exists), waits until every
        process that existed before the kill is gone (the reset really
        happened), then until the server accepts again; returns that time.
        """
        self._check_alive()
        conn = self.connect()
        try:
            victim = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            before = {
                row[0]
                for row in conn.execute("SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL")
            }
            os.kill(victim, signal.SIGKILL)
        finally:
            with contextlib.suppress(Exception):
                conn.close()
        deadline = time.monotonic() + timeout
        while any(reaper.alive(pid) for pid in before):
            if time.monotonic() > deadline:
                raise PostgresStartError(f"no crash reset after {timeout}s" + self._log_excerpt())
            time.sleep(0.02)
        return self.wait_ready(max(1.0, deadline - time.monotonic()))

    def terminate_backends(self, *, exclude_pids: Iterable[int] = (), timeout: float = 30.0) -> int:
        """``pg_terminate_backend`` each client backend (but ``exclude_pids``); wait until gone.

        ``timeout`` only bounds the wait (a backend exits within milliseconds when the
        machine is not stalled).
        """
        excluded = [int(p) for p in exclude_pids]
        with self._admin() as conn:
            pids = [
                row[0]
                for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
                    " AND pid <> pg_backend_pid() AND NOT (pid = ANY(%s::int[]))",
                    [excluded],
                )
            ]
            count = 0
            for pid in pids:
                row = conn.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()
                count += bool(row and row[0])
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s::int[])", [pids]
                ).fetchone()
                if not row or row[0] == 0:
                    break
                time.sleep(0.02)
        return count

    def set_max_connections(self, n: int) -> None:
        """``ALTER SYSTEM SET max_connections`` and restart (fast)."""
        with self._admin() as conn:
            row = conn.execute(
                "SELECT sum(setting::int) FROM pg_settings"
                " WHERE name IN ('superuser_reserved_connections', 'reserved_connections')"
            ).fetchone()
            reserved = int(row[0]) if row and row[0] is not None else 0
            if n <= reserved:
                raise ValueError(
                    f"max_connections must exceed the {reserved} reserved connections, got {n}"
                )
            conn.execute(sql.SQL("ALTER SYSTEM SET max_connections = {}").format(sql.Literal(n)))
        self.restart("fast")
        self.max_connections = n

    def create_role(
        self,
        name: str,
        *,
        login: bool = False,
        member_of_superuser_can_set: bool = True,
        grant_to: Iterable[str] = (),
    ) -> None:
        _create_role(self, name, login, member_of_superuser_can_set, grant_to)


def _create_role(
    server: _ConnectMixin,
    name: str,
    login: bool,
    to_superuser: bool,
    grant_to: Iterable[str],
) -> None:
    """Create ``name`` if missing (idempotent) and make it SET ROLE-able by ``grant_to``.

    A superuser can always SET ROLE; ``to_superuser`` also grants membership
    so that ``pg_has_role`` agrees. ``grant_to`` lists other (login) roles
    that must be able to ``SET ROLE`` to it.
    """
    ident = sql.Identifier(name)
    with server._admin() as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE ROLE {} {}").format(ident, sql.SQL("LOGIN" if login else "NOLOGIN"))
            )
        elif login:
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(ident))
        grantees = list(grant_to)
        if to_superuser:
            grantees.append(server.superuser)
        for grantee in grantees:
            if grantee == name:
                continue
            conn.execute(sql.SQL("GRANT {} TO {}").format(ident, sql.Identifier(grantee)))


def parse_dsn(dsn: str) -> dict[str, Any]:
    """``conninfo_to_dict``, whose errors quote the DSN: ours mask its password, and the
    original is not chained (pytest would print it)."""
    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        message = redact(str(exc), secrets_in(dsn))
    raise ServerUnavailable(f"{DSN_ENV} is not a valid connection string: {message}")


class ExternalPostgres(_ConnectMixin):
    """A server we do not own (``PLAIN_POOL_PG_DSN``): same surface, no process control."""

    mode: ClassVar[str] = "external"
    supports_control: ClassVar[bool] = False
    binaries: PostgresBinaries | None = None
    data_dir: Path | None = None

    def __init__(self, dsn: str | None = None) -> None:
        dsn = dsn or os.environ.get(DSN_ENV)
        if not dsn:
            raise ServerUnavailable(f"external mode needs {DSN_ENV}")
        self._set_params(parse_dsn(dsn))
        self._version: str | None = None

    def _set_params(self, params: dict[str, Any]) -> None:
        self._params = params
        self.host = str(params.get("host") or "localhost")
        self.port = int(params.get("port") or 5432)
        self.superuser = str(params.get("user") or os.environ.get("USER", "postgres"))
        self.dbname = str(params.get("dbname") or self.superuser)

    @property
    def _base_conninfo(self) -> dict[str, Any]:  # type: ignore[override]
        return {
            **self._params,
            "host": self.host,
            "port": self.port,
            "user": self.superuser,
            "dbname": self.dbname,
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port} user={self.superuser}>"

    @property
    def version(self) -> str:
        if self._version is None:
            with self.connect() as conn:
                row = conn.execute("SHOW server_version").fetchone()
            self._version = str(row[0]).split()[0] if row else "?"
        return self._version

    @property
    def is_running(self) -> bool:
        try:
            self.connect(connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def start(self) -> None:
        self.wait_ready(10.0)

    def close(self, mode: str = "fast") -> None:
        pass

    def _unavailable(self, what: str) -> ServerControlUnavailable:
        return ServerControlUnavailable(
            f"{what} needs a server the harness owns ({self.mode} mode)"
        )

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        raise self._unavailable("stop")

    def restart(self, mode: str = "fast") -> float:
        raise self._unavailable("restart")

    def crash(self, timeout: float = 60.0) -> float:
        raise self._unavailable("crash")

    def terminate_backends(self, *, exclude_pids: Iterable[int] = (), timeout: float = 30.0) -> int:
        raise self._unavailable("terminate_backends")

    def set_max_connections(self, n: int) -> None:
        raise self._unavailable("set_max_connections")

    def create_role(
        self,
        name: str,
        *,
        login: bool = False,
        member_of_superuser_can_set: bool = True,
        grant_to: Iterable[str] = (),
    ) -> None:
        try:
            _create_role(self, name, login, member_of_superuser_can_set, grant_to)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ServerControlUnavailable(f"cannot create role {name!r}: {exc}") from exc


def docker_available(timeout: float = 1.0) -> tuple[bool, str]:
    """Does a Docker engine answer ``/_ping`` within ``timeout``? (answer, reason)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            path = host[len("unix://") :]
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(path)
        elif host.startswith("tcp://"):
            hostport = host[len("tcp://") :].rstrip("/")
            h, _, p = hostport.rpartition(":")
            sock = socket.create_connection((h, int(p)), timeout=timeout)
        else:
            return False, f"unsupported DOCKER_HOST {host!r}"
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(64)
    except OSError as exc:
        return False, f"no Docker engine at {host}: {exc}"
    if b" 200 " not in reply:
        return False, f"Docker engine at {host} answered {reply[:40]!r}"
    return True, f"Docker engine at {host}"


class DockerPostgres(ExternalPostgres):
    """Postgres in a container (testcontainers); no process control (like external)."""

    mode: ClassVar[str] = "docker"
    image = "postgres:16-alpine"

    def __init__(self, image: str | None = None) -> None:
        self.image = image or os.environ.get("PLAIN_POOL_PG_IMAGE", self.image)
        self._container: Any = None
        self._version = None
        self._set_params({"host": LOOPBACK, "port": 0, "user": "postgres", "dbname": "postgres"})

    def start(self) -> None:
        if self._container is not None:
            return
        ok, reason = docker_available()
        if not ok:
            raise ServerUnavailable(reason)
        try:
            from testcontainers.postgres import PostgresContainer
        except ImportError as exc:
            raise ServerUnavailable("docker mode needs `pip install testcontainers`") from exc
        container = PostgresContainer(self.image, username="postgres", password="postgres")
        container.start()
        self._container = container
        self._set_params(
            {
                "host": container.get_container_host_ip(),
                "port": int(container.get_exposed_port(5432)),
                "user": "postgres",
                "password": "postgres",
                "dbname": container.dbname,
            }
        )
        self.wait_ready(30.0)

    def close(self, mode: str = "fast") -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.stop()
            self._container = None


def selected_mode(environ: Mapping[str, str] | None = None) -> str:
    """``PLAIN_POOL_PG_MODE``, else ``external`` if ``PLAIN_POOL_PG_DSN`` is set, else ``owned``."""
    environ = os.environ if environ is None else environ
    mode = (environ.get(MODE_ENV) or "").strip().lower()
    if not mode:
        mode = "external" if environ.get(DSN_ENV) else "owned"
    if mode not in ("owned", "external", "docker"):
        raise ValueError(f"{MODE_ENV} must be owned, external or docker, not {mode!r}")
    return mode
