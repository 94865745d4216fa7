"""bench/bench_reset.py: its arguments, its interleaving, its JSON, and one short real run.

The bench is what the README's table comes from: a bad argument must be refused
by name (not run a benchmark of zero seconds), every round must visit every row
(or noise would favour some rows), and the JSON must keep the keys its readers use.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_reset.py"


def _load() -> ModuleType:
    sys.path.insert(0, str(BENCH.parent))  # as `python bench/bench_reset.py` has it: _common
    spec = importlib.util.spec_from_file_location("bench_reset", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _load()
Row = bench.Row


def test_defaults():
    args = bench.parse_args([])
    assert (args.rounds, args.seconds, args.threads) == (5, 1.0, [1, 8])
    assert args.backends == ["psycopg_pool", "django", "plain_pool", "plain_pool_noreset"]
    assert args.health_checks is None and args.profile is None and not args.json
    assert args.dsn is None


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--seconds", "0"], "--seconds"),
        (["--seconds", "-1"], "--seconds"),
        (["--seconds", "nan"], "--seconds"),
        (["--seconds", "inf"], "--seconds"),
        (["--seconds", "abc"], "--seconds"),
        (["--rounds", "0"], "--rounds"),
        (["--rounds", "1.5"], "--rounds"),
        (["--threads", "1", "0"], "--threads"),
        (["--warmup", "-0.1"], "--warmup"),
        (["--profile-seconds", "0"], "--profile-seconds"),
        (["--profile", "pgbouncer"], "--profile"),
        (["--backends", "plain_pool", "sqlalchemy"], "--backends"),
        (["--health-checks", "sometimes"], "--health-checks"),
        (["--profile", "django", "--health-checks", "both"], "--health-checks"),
        (["--json", "--profile", "django"], "--profile"),
    ],
)
def test_a_bad_argument_is_refused_by_name(argv, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {named}" in err, err


def test_a_bad_dsn_is_refused_without_echoing_it(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--dsn", "host=db password=s3cret 'unterminated"])
    err = capsys.readouterr().err
    assert "argument --dsn" in err and "s3cret" not in err


def test_dsn_params_keep_options_and_hide_the_password():
    params = bench.parse_args(["--dsn", "host=db port=6543 user=u password=s3cret sslmode=require"])
    p = params.dsn
    assert (p.host, p.port, p.user, p.options) == ("db", 6543, "u", {"sslmode": "require"})
    assert "s3cret" not in repr(p)
    tagged = p.tagged("bench_reset")
    assert tagged.options["application_name"] == "bench_reset"
    assert tagged.tagged("other") is tagged  # a caller's application_name wins


def test_duplicates_are_dropped():
    args = bench.parse_args(["--threads", "8", "1", "8", "--backends", "django", "django"])
    assert args.threads == [8, 1] and args.backends == ["django"]


@pytest.mark.parametrize("rounds", [1, 3, 16, 17])
def test_every_round_visits_every_row_and_the_order_rotates(rounds):
    rows = [Row(b, t, hc) for b in ("a", "b") for hc in (False, True) for t in (1, 8)]
    plan = bench.schedule(rows, rounds)
    assert len(plan) == rounds
    for r, order in enumerate(plan):
        assert sorted(order, key=rows.index) == rows
        assert order[0] == rows[r % len(rows)]
    assert bench.schedule([], 3) == []


VERSIONS = {"python": "3.11", "psycopg": "3", "psycopg_pool": "3", "django": None}


def _summary(skipped: dict[str, str] | None = None) -> list[dict[str, Any]]:
    skipped = skipped or {}
    names = ["psycopg_pool", "django", "plain_pool"]
    rows = [Row(b, t, hc) for b in names for hc in (False, True) for t in (1, 8)]
    base = {"psycopg_pool": 1000.0, "django": 500.0, "plain_pool": 400.0}
    rates = {
        r: [base[r.backend] * r.threads * (2 if r.health_checks else 1) + d for d in (-10, 0, 30)]
        for r in rows
        if r.backend not in skipped
    }
    labels = {n: n.upper() for n in names}
    return bench.summarize(rates, skipped, rows, labels, VERSIONS, 0.5)


def test_json_shape_medians_spreads_and_ratios():
    out = _summary()
    assert len(out) == 12
    json.dumps(out)  # serialisable
    for item in out:
        assert {"backend", "threads", "health_checks", "per_second", "rounds", "versions"} <= set(
            item
        )
        assert item["versions"] == VERSIONS and "skipped" not in item
    pp = next(
        i
        for i in out
        if (i["backend"], i["threads"], i["health_checks"]) == ("plain_pool", 8, True)
    )
    assert pp["per_second"] == 6400 and (pp["min"], pp["max"]) == (6390, 6430)
    assert pp["rounds"] == [6390, 6400, 6430]
    assert pp["vs_django"] == pytest.approx(6400 / 8000, abs=1e-3)
    assert pp["vs_psycopg_pool"] == pytest.approx(6400 / 16000, abs=1e-3)
    dj = next(i for i in out if i["backend"] == "django")
    assert dj["vs_django"] == 1.0


def test_a_skipped_backend_keeps_its_rows_with_the_reason_and_no_ratios_against_it():
    out = _summary({"django": "Django is not installed"})
    dj = [i for i in out if i["backend"] == "django"]
    assert len(dj) == 4
    assert all(i["skipped"] == "Django is not installed" and i["per_second"] is None for i in dj)
    assert all(i["vs_django"] is None for i in out)
    assert all(i["vs_psycopg_pool"] is not None for i in out if i["backend"] != "django")
    table = bench.format_table(out)
    assert "skipped django: Django is not installed" in table
    assert any(line.startswith("plain_pool ") for line in table.splitlines())
    assert not any(line.startswith("django ") for line in table.splitlines())


def test_the_no_reset_variant_is_looked_up_lazily():
    """The variants may leave the package: a missing one skips its row with a reason."""
    backend = bench.PlainPool(reset=False)
    reason = backend.unavailable()
    try:
        importlib.import_module("chaos.targets.variants").VARIANTS["NoResetOnReturn"]
    except (ImportError, AttributeError, KeyError):
        assert reason and "NoResetOnReturn" in reason
    else:
        assert reason is None


def test_a_short_real_run(postgres):
    """Every row through the public APIs against a real server, JSON out, nothing left over."""
    short = ["--rounds", "2", "--seconds", "0.05", "--warmup", "0.02", "--threads", "1", "2"]
    done = subprocess.run(
        [sys.executable, str(BENCH), "--dsn", postgres.conninfo(), "--json", *short],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert len(out) == 4 * 2 * 2
    have_django = importlib.util.find_spec("django") is not None
    for item in out:
        if "skipped" in item:
            assert item["per_second"] is None and item["rounds"] == []
            assert item["backend"] == "django" and not have_django
            continue
        assert item["per_second"] > 0 and len(item["rounds"]) == 2, item
        assert item["vs_psycopg_pool"] > 0
        assert (item["vs_django"] is not None) == have_django
        assert item["versions"]["server_version"]
    assert {i["backend"] for i in out} == set(bench.BACKEND_NAMES)


def test_the_leftover_check_sees_a_pool_left_open(postgres):
    """Canary for the bench's exit check: an open pool is seen by its sessions and threads."""
    from psycopg_pool import ConnectionPool

    params = bench.ConnParams.from_conninfo(postgres.conninfo()).tagged("bench_reset_canary")
    pool = ConnectionPool(params.conninfo(), min_size=2, max_size=2, name="canary-pool", open=True)
    try:
        pool.wait()
        assert bench.still_connected(params, within=0.0) == 2
        assert "canary-pool-scheduler" in bench.pool_threads()
    finally:
        pool.close()
    assert bench.still_connected(params, within=5.0) == 0
    assert not [t for t in bench.pool_threads() if t.startswith("canary-pool")]
