"""Start or attach to a Toxiproxy server from tests and tools.

:class:`ToxiproxyServer` uses a real server when one is configured
(``TOXIPROXY_URL``) or installed (``toxiproxy-server`` on PATH), else starts
the embedded one (``python -m chaos.toxiproxy --port 0``) and waits for its
readiness line. A child server never outlives its parent: ``close()`` and
``atexit`` stop it, and ``PR_SET_PDEATHSIG`` makes the kernel send it SIGTERM
if the parent is SIGKILLed (the signal is tied to the *thread* that started
it, so start servers from a long-lived thread, e.g. the main one).

Besides toxiproxy-python's client (``.client()``), thin JSON helpers cover
what that client lacks: updating a toxic, ``/populate``, raw requests.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from chaos.toxiproxy import EMBEDDED_MARKER
from chaos.toxiproxy.server import READY_PREFIX

REPO_ROOT = Path(__file__).resolve().parents[2]
_PR_SET_PDEATHSIG = 1


class ToxiproxyError(RuntimeError):
    """A request to the Toxiproxy API failed (status and body attached)."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        super().__init__(f"{method} {path} -> {status}: {body!r}")
        self.status = status
        self.body = body


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None


def _die_with_parent(parent_pid: int) -> None:
    """preexec_fn: SIGTERM us when the parent (thread) dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ToxiproxyServer:
    """A Toxiproxy API endpoint for the duration of a ``with`` block.

    ``kind`` is ``"embedded"`` or ``"real"``; ``url``, ``host``, ``port``,
    ``version`` describe it; ``pid`` is set for a server this object started.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        prefer: str | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
        startup_timeout: float = 20.0,
    ) -> None:
        """``url`` (else ``$TOXIPROXY_URL``) attaches; ``prefer="embedded"`` ignores real ones."""
        self._url_arg = url
        self._prefer = prefer
        self._extra_args = list(extra_args)
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        #: The server's stderr, in a file with no name: nothing to leave behind, even when
        #: this process is killed before close() (a named log outlived a SIGKILL).
        self._log: IO[bytes] | None = None
        self._lock = threading.Lock()
        self.kind = ""
        self.url = ""
        self.host = ""
        self.port = 0
        self.version = ""
        self.pid: int | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> ToxiproxyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        url = self._url_arg or (
            None if self._prefer == "embedded" else os.environ.get("TOXIPROXY_URL")
        )
        binary = None if self._prefer == "embedded" else shutil.which("toxiproxy-server")
        if url:
            self._attach(url)
        elif binary:
            self._start_real(binary)
        else:
            self._start_embedded()
        self.version = self._probe_version()
        if url:
            self.kind = "embedded" if EMBEDDED_MARKER in self.version else "real"

    def _attach(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url if "//" in url else f"http://{url}")
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 8474
        self.url = f"http://{self.host}:{self.port}"

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        if self._log is None:
            self._log = tempfile.TemporaryFile(prefix="toxiproxy-", suffix=".log")  # noqa: SIM115 - closed by close()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
        )
        self._proc = proc
        self.pid = proc.pid
        atexit.register(self.close)
        return proc

    def _start_embedded(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        argv = [sys.executable, "-m", "chaos.toxiproxy", "--host", "127.0.0.1", "--port", "0"]
        proc = self._spawn(argv + self._extra_args, env)
        assert proc.stdout is not None
        line = self._read_ready_line(proc)
        address = line[len(READY_PREFIX) :].strip()
        self.host, _, port = address.rpartition(":")
        self.port = int(port)
        self.url = f"http://{self.host}:{self.port}"
        self.kind = "embedded"

    def _read_ready_line(self, proc: subprocess.Popen[bytes]) -> str:
        assert proc.stdout is not None
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(self._startup_timeout)
        line = result[0].decode() if result else ""
        if not line.startswith(READY_PREFIX):
            log = self._log_text()  # before close(), which drops the log
            self.close()
            raise RuntimeError(f"embedded toxiproxy did not start: {line!r}\n{log}")
        return line

    def _start_real(self, binary: str) -> None:
        port = _free_port()
        self._spawn([binary, "-host", "127.0.0.1", "-port", str(port)])
        self.host, self.port, self.url, self.kind = (
            "127.0.0.1",
            port,
            f"http://127.0.0.1:{port}",
            "real",
        )
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            try:
                self.request("GET", "/version")
                return
            except OSError:
                time.sleep(0.05)
        log = self._log_text()  # before close(), which drops the log
        self.close()
        raise RuntimeError(f"toxiproxy-server did not start\n{log}")

    def _log_text(self) -> str:
        try:
            if self._log is None:
                return ""
            self._log.seek(0)
            return self._log.read().decode(errors="replace")
        except (OSError, ValueError):  # ValueError: already closed
            return ""

    def _probe_version(self) -> str:
        response = self.request("GET", "/version")
        try:
            value = response.json()
        except ValueError:
            return response.raw.decode(errors="replace").strip()
        return str(value.get("version", "")) if isinstance(value, dict) else str(value)

    @property
    def running(self) -> bool:
        return self._proc is None or self._proc.poll() is None

    def close(self) -> None:
        """Stop a server this object started (SIGTERM, then SIGKILL) and drop its log."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
            atexit.unregister(self.close)
        if self._log is not None:
            self._log.close()
            self._log = None

    # --- clients ---------------------------------------------------------------------------
    def client(self) -> Any:
        """toxiproxy-python's ``Toxiproxy`` pointed at this server.

        That client keeps host and port in class attributes, so it talks to the
        server whose ``client()`` was called last.
        """
        from toxiproxy import Toxiproxy

        client = Toxiproxy()
        client.update_api_consumer(self.host, self.port)
        return client

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Response:
        """One HTTP request; ``body`` is sent as JSON, ``raw`` as is."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            payload: bytes | None
            if raw is not None:
                payload = raw.encode() if isinstance(raw, str) else raw
            elif body is not None:
                payload = json.dumps(body).encode()
            else:
                payload = None
            hdrs = {"User-Agent": "plain-pool-harness"}
            if payload is not None:
                hdrs["Content-Type"] = "application/json"
            hdrs.update(headers or {})
            conn.request(method, path, body=payload, headers=hdrs)
            resp = conn.getresponse()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        expect: int | tuple[int, ...] = (200, 201, 204),
    ) -> Any:
        """A request that must succeed; returns the decoded JSON body (None for 204)."""
        response = self.request(method, path, body)
        expected = (expect,) if isinstance(expect, int) else expect
        if response.status not in expected:
            try:
                detail = response.json()
            except ValueError:
                detail = response.raw
            raise ToxiproxyError(method, path, response.status, detail)
        return response.json() if response.status != 204 else None

    # --- glue for what toxiproxy-python lacks ----------------------------------------------
    def proxies(self) -> dict[str, Any]:
        return self.call("GET", "/proxies")

    def get_proxy(self, name: str) -> dict[str, Any]:
        return self.call("GET", f"/proxies/{_q(name)}")

    def create_proxy(
        self, name: str, upstream: str, listen: str = "127.0.0.1:0", enabled: bool = True
    ) -> dict[str, Any]:
        body = {"name": name, "upstream": upstream, "listen": listen, "enabled": enabled}
        return self.call("POST", "/proxies", body)

    def update_proxy(self, name: str, **fields: Any) -> dict[str, Any]:
        return self.call("POST", f"/proxies/{_q(name)}", fields)

    def delete_proxy(self, name: str) -> None:
        self.call("DELETE", f"/proxies/{_q(name)}")

    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        stream: str = "downstream",
        name: str | None = None,
        toxicity: float = 1.0,
        attributes: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"type": type, "stream": stream, "toxicity": toxicity}
        body["attributes"] = attributes or {}
        if name:
            body["name"] = name
        return self.call("POST", f"/proxies/{_q(proxy)}/toxics", body)

    def update_toxic(
        self,
        proxy: str,
        toxic: str,
        attributes: dict[str, int] | None = None,
        toxicity: float | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"attributes": attributes or {}}
        if toxicity is not None:
            body["toxicity"] = toxicity
        return self.call("POST", f"/proxies/{_q(proxy)}/toxics/{_q(toxic)}", body)

    def remove_toxic(self, proxy: str, toxic: str) -> None:
        self.call("DELETE", f"/proxies/{_q(proxy)}/toxics/{_q(toxic)}")

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/proxies/{_q(proxy)}/toxics")

    def populate(self, proxies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.call("POST", "/populate", proxies)["proxies"]

    def reset(self) -> None:
        self.call("POST", "/reset")

    def describe(self) -> str:
        where = f"pid {self.pid}" if self.pid else self.url
        return f"{self.kind} toxiproxy {self.version} at {self.url} ({where})"


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


_NAMES = itertools.count(1)


@dataclass
class ProxyHandle:
    """One proxy on a :class:`ToxiproxyServer`, with the calls tests and faults need."""

    server: ToxiproxyServer
    name: str
    upstream: str
    listen: str = ""
    toxic_names: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, server: ToxiproxyServer, upstream: str, name: str | None = None) -> ProxyHandle:
        name = name or f"proxy_{os.getpid()}_{next(_NAMES)}"
        info = server.create_proxy(name, upstream)
        return cls(server, name, upstream, info["listen"])

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def address(self) -> tuple[str, int]:
        return self.listen_host, self.listen_port

    def proxy(self) -> Any:
        """toxiproxy-python's ``Proxy`` object for this proxy."""
        return self.server.client().get_proxy(self.name)

    def info(self) -> dict[str, Any]:
        return self.server.get_proxy(self.name)

    def add_toxic(
        self,
        type: str,
        *,
        stream: str = "downstream",
        name: str | None = None,
        toxicity: float = 1.0,
        **attributes: int,
    ) -> str:
        """Add a toxic; returns its name."""
        toxic = self.server.add_toxic(
            self.name, type, stream=stream, name=name, toxicity=toxicity, attributes=attributes
        )
        return toxic["name"]

    def update_toxic(self, name: str, toxicity: float | None = None, **attributes: int) -> dict:
        return self.server.update_toxic(self.name, name, attributes, toxicity)

    def remove_toxic(self, name: str) -> None:
        self.server.remove_toxic(self.name, name)

    def toxics(self) -> list[dict[str, Any]]:
        return self.server.toxics(self.name)

    def disable(self) -> None:
        self.server.update_proxy(self.name, enabled=False)

    def enable(self) -> None:
        info = self.server.update_proxy(self.name, enabled=True)
        self.listen = info["listen"]

    def reset(self) -> None:
        """Every toxic removed and the proxy enabled (this proxy only)."""
        for toxic in self.toxics():
            self.remove_toxic(toxic["name"])
        self.enable()

    def delete(self) -> None:
        try:
            self.server.delete_proxy(self.name)
        except ToxiproxyError as exc:
            if exc.status != 404:
                raise
