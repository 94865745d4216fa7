"""A watchdog that cleans up after a process that died without cleaning up.

``atexit`` and signal handlers cover a normal exit, Ctrl-C and SIGTERM, but
not SIGKILL (or the OOM killer, or a segfault): then nothing in the owner runs.
So every server the harness starts is also watched by a tiny separate process
that waits for its owner to die and then kills the registered processes and
removes the registered paths. Reusable by any component::

    from chaos import reaper

    watch = reaper.watch(remove_paths=[tmpdir], first_signal=signal.SIGQUIT)
    proc = subprocess.Popen(..., start_new_session=True)
    watch.add_pid(proc.pid)        # after every (re)start
    ...
    # normal shutdown: clean up yourself, then
    watch.cancel()                 # the watchdog exits without touching anything

How it notices the owner's death: its stdin is a pipe whose only write end is
held by the owner (Python makes fds non-inheritable, so no other child keeps it
open); the owner's death closes it. It also polls the owner's pid (and start
time, against pid reuse), which is what ``python -m chaos.reaper --owner PID``
relies on when started by hand.

What it does then: send ``first_signal`` to every registered process that is
still the same process (pid and start time match), wait ``grace`` seconds,
then SIGKILL them and their process group (processes started with
``start_new_session=True`` lead their own group: a postmaster's backends are
in it), then ``rmtree`` every registered path.

Runs as a plain script (``python -I path/to/reaper.py``): stdlib only, no
dependence on ``sys.path`` or the current directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

POLL_INTERVAL = 0.2


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc``), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def alive(pid: int, started: str | None = None) -> bool:
    """True if ``pid`` exists, is not a zombie and (when known) has the same start time."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except FileNotFoundError:
        return False
    except OSError:
        return True
    rest = stat[stat.rfind(")") + 2 :].split()
    if rest and rest[0] in ("Z", "X"):
        return False
    return started is None or started == "-" or (len(rest) > 19 and rest[19] == started)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def processes_in(
    dirs: Iterable[str | os.PathLike[str]], exclude: Iterable[int] = ()
) -> dict[int, str]:
    """Processes whose cwd or command line is inside one of ``dirs`` (Linux ``/proc``).

    A postmaster's command line names its data dir, and every Postgres process
    (backends included, which lead their own process groups) runs with the data
    dir as its working directory.
    """
    found: dict[int, str] = {}
    prefixes = [os.fspath(d).rstrip("/") for d in dirs]
    if not prefixes or not os.path.isdir("/proc"):
        return found
    for pid, cwd, cmdline in iter_processes(exclude):
        if any(cwd == p or cwd.startswith(p + "/") or p in cmdline for p in prefixes):
            found[pid] = cmdline
    return found


def iter_processes(exclude: Iterable[int] = ()) -> Iterator[tuple[int, str, str]]:
    """(pid, cwd, command line) of every live process but this one (Linux ``/proc``).

    Zombies and kernel threads (empty command line) are left out; a process
    whose cwd cannot be read gets ``""``.
    """
    if not os.path.isdir("/proc"):
        return
    skip = {os.getpid(), *exclude}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            cwd = ""
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmdline:
            yield int(entry.name), cwd, cmdline


def kill_processes_in(
    dirs: Iterable[str | os.PathLike[str]], exclude: Iterable[int] = (), timeout: float = 5.0
) -> dict[int, str]:
    """SIGKILL what :func:`processes_in` finds until nothing is left; return what was found."""
    dirs = list(dirs)
    exclude = set(exclude)
    found: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        procs = processes_in(dirs, exclude)
        if not procs or time.monotonic() > deadline:
            return found
        found.update(procs)
        for pid in procs:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def reap(
    pids: dict[int, str | None],
    paths: Iterable[str],
    first_signal: int = signal.SIGTERM,
    grace: float = 5.0,
    exclude: Iterable[int] = (),
) -> None:
    """Kill the processes still alive (politely, then not), then remove the paths.

    Processes still working inside ``paths`` afterwards (orphaned Postgres
    backends) are SIGKILLed too; ``exclude`` protects the owner.
    """
    paths = list(paths)
    groups: set[int] = set()
    for pid, started in pids.items():
        if not alive(pid, started):
            continue
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:
                groups.add(pid)
        with contextlib.suppress(OSError):
            os.kill(pid, first_signal)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not any(alive(p, s) for p, s in pids.items()) and not any(map(_group_alive, groups)):
            break
        time.sleep(0.05)
    for pid, started in pids.items():
        if alive(pid, started):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    for pgid in groups:
        # Safe even after the leader died: Linux does not reuse a pid while it names a group.
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(map(_group_alive, groups)):
        time.sleep(0.05)
    kill_processes_in(paths, exclude)
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


class Watch:
    """Handle on a running watchdog (see :func:`watch`)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _send(self, line: str) -> None:
        stdin = self._proc.stdin
        if stdin is None or stdin.closed:
            return
        try:
            stdin.write(line.encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def add_pid(self, pid: int) -> None:
        """Kill this process (and its group, if it leads one) when the owner dies."""
        self._send(f"kill {pid} {start_time(pid) or '-'}")

    def forget_pid(self, pid: int) -> None:
        self._send(f"forget {pid}")

    def cancel(self, timeout: float = 5.0) -> None:
        """The owner cleaned up itself: stop the watchdog without it touching anything."""
        self._send("cancel")
        self._close(timeout)

    def reap_now(self, timeout: float = 30.0) -> None:
        """Make the watchdog clean up now (as if the owner had died) and wait for it.

        ``timeout`` exceeds the watchdog's own worst case (its grace, then two 5 s
        waits for stragglers), so it is not killed while it still has work to do.
        """
        self._close(timeout)

    def _close(self, timeout: float) -> None:
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def watch(
    owner_pid: int | None = None,
    remove_paths: Iterable[str | os.PathLike[str]] = (),
    *,
    first_signal: int = signal.SIGTERM,
    grace: float = 5.0,
) -> Watch:
    """Start a watchdog for ``owner_pid`` (default: this process); see the module docstring.

    It runs in its own session, so a Ctrl-C in the terminal does not reach it.
    """
    owner = os.getpid() if owner_pid is None else owner_pid
    cmd = [
        sys.executable,
        "-I",
        str(Path(__file__).resolve()),
        "--owner",
        str(owner),
        "--owner-started",
        start_time(owner) or "-",
        "--stdin-control",
        "--signal",
        str(int(first_signal)),
        "--grace",
        str(grace),
    ]
    for path in remove_paths:
        cmd += ["--remove", os.fspath(path)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    return Watch(proc)


class _Orders:
    """What the owner asked for over the pipe: processes to kill, paths to remove, or cancel."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.pids: dict[int, str | None] = {}
        self.paths = list(paths)
        self.cancelled = False
        self._buffer = b""

    def feed(self, chunk: bytes) -> None:
        """Apply every complete line in ``chunk`` (a partial last line waits for the rest)."""
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        for raw in lines:
            self._apply(raw.decode().strip())

    def _apply(self, line: str) -> None:
        command, _, rest = line.partition(" ")
        if command == "cancel":
            self.cancelled = True
        elif command == "kill":
            pid, _, started = rest.partition(" ")
            self.pids[int(pid)] = started or None
        elif command == "forget":
            self.pids.pop(int(rest), None)
        elif command == "remove":
            self.paths.append(rest)


def _read_chunk(fd: int, orders: _Orders) -> bool:
    """Read what is in the pipe into ``orders``; True at EOF (the owner closed it or died)."""
    chunk = os.read(fd, 65536)
    orders.feed(chunk)
    return not chunk


def _follow_owner(fd: int | None, orders: _Orders, owner: int, started: str | None) -> None:
    """Take orders until the owner dies (EOF on the pipe, or its pid is gone) or cancels."""
    eof = False
    while not eof and not orders.cancelled and alive(owner, started):
        if fd is None:
            time.sleep(POLL_INTERVAL)
        elif select.select([fd], [], [], POLL_INTERVAL)[0]:
            eof = _read_chunk(fd, orders)
    if fd is not None and not eof and not orders.cancelled:
        _drain(fd, orders)


def _drain(fd: int, orders: _Orders) -> None:
    """Read the orders a dead owner left in the pipe.

    Its pid is gone but the pipe is still open (a forked child of the owner holds
    the write end). What the owner wrote is already in the pipe: read until it
    would block, without waiting for more.
    """
    while select.select([fd], [], [], 0)[0]:
        if _read_chunk(fd, orders):
            return


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.reaper", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--owner", type=int, required=True, help="pid to watch")
    parser.add_argument(
        "--owner-started", default=None, help="its start time (/proc), against reuse"
    )
    parser.add_argument("--remove", action="append", default=[], help="path to remove")
    parser.add_argument("--signal", default=str(int(signal.SIGTERM)), help="first signal")
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument(
        "--stdin-control",
        action="store_true",
        help="commands on stdin; EOF means the owner is gone",
    )
    return parser.parse_args(argv)


def _main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # Our own session keeps a terminal's signals away; these must not end us either.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    first = int(args.signal) if args.signal.isdigit() else signal.Signals[args.signal].value
    owner_started = args.owner_started or start_time(args.owner)
    orders = _Orders(args.remove)
    fd = sys.stdin.fileno() if args.stdin_control else None
    _follow_owner(fd, orders, args.owner, owner_started)
    if not orders.cancelled:
        reap(orders.pids, orders.paths, first, args.grace, exclude=[args.owner])
    return 0


if __name__ == "__main__":
    sys.exit(_main())
