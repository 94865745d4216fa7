"""DatabaseSettings: validation and parsing. Every error names the key."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from plain_pool import DatabaseSettings, ImproperlyConfigured

BASE = {"POSTGRES_DATABASE": "app", "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": 5432}


def make(**changes):
    return DatabaseSettings.from_dict({**BASE, **changes})


def test_defaults():
    s = make()
    assert s.pool is None and not s.pooled
    assert s.conn_max_age == 0
    assert s.conn_health_checks is False
    assert s.disable_server_side_cursors is False
    assert s.prepare_threshold is None
    assert s.time_zone == "UTC" and s.use_tz is True
    assert s.connection_timezone == "UTC"


def test_connection_timezone_follows_use_tz():
    assert make(TIME_ZONE="Europe/Paris").connection_timezone == "UTC"
    assert make(TIME_ZONE="Europe/Paris", USE_TZ=False).connection_timezone == "Europe/Paris"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"POSTGRES_NAME": "x"}, "POSTGRES_NAME"),
        ({"POSTGRES_DATABASE": ""}, "POSTGRES_DATABASE"),
        ({"POSTGRES_DATABASE": None}, "POSTGRES_DATABASE"),
        ({"POSTGRES_HOST": 1}, "POSTGRES_HOST"),
        ({"POSTGRES_USER": None}, "POSTGRES_USER"),
        ({"POSTGRES_PASSWORD": 3}, "POSTGRES_PASSWORD"),
        ({"POSTGRES_PORT": 0}, "POSTGRES_PORT"),
        ({"POSTGRES_PORT": "abc"}, "POSTGRES_PORT"),
        ({"POSTGRES_PORT": True}, "POSTGRES_PORT"),
        ({"POSTGRES_OPTIONS": []}, "POSTGRES_OPTIONS"),
        ({"POSTGRES_OPTIONS": {"conect_timeout": 2}}, "conect_timeout"),
        ({"POSTGRES_OPTIONS": {"dbname": "x"}}, "dbname"),
        ({"POSTGRES_OPTIONS": {"connect_timeout": [1]}}, "connect_timeout"),
        ({"POSTGRES_OPTIONS": {"assume_role": ""}}, "assume_role"),
        ({"POSTGRES_OPTIONS": {"prepare_threshold": -1}}, "prepare_threshold"),
        ({"POSTGRES_OPTIONS": {"prepare_threshold": True}}, "prepare_threshold"),
        ({"POSTGRES_OPTIONS": {"server_side_binding": "yes"}}, "server_side_binding"),
        ({"POSTGRES_POOL": "yes"}, "POSTGRES_POOL"),
        ({"POSTGRES_POOL": {"max_szie": 4}}, "max_szie"),
        ({"POSTGRES_POOL": {"timeout": "5"}}, "timeout"),
        ({"POSTGRES_POOL": {"min_size": True}}, "min_size"),
        ({"POSTGRES_POOL": {"min_size": -1}}, "min_size"),
        ({"POSTGRES_POOL": {"min_size": 4, "max_size": 2}}, "max_size"),
        ({"POSTGRES_POOL": {"timeout": 0}}, "timeout"),
        ({"POSTGRES_POOL": {"num_workers": 0}}, "num_workers"),
        ({"POSTGRES_POOL": {"check": "yes"}}, "check"),
        ({"POSTGRES_POOL": {"configure": print}}, "configure"),
        ({"POSTGRES_POOL": {"reset": print}}, "reset"),
        ({"POSTGRES_POOL": {"kwargs": {}}}, "kwargs"),
        ({"POSTGRES_POOL": {"open": True}}, "open"),
        ({"POSTGRES_POOL": True, "POSTGRES_CONN_MAX_AGE": 60}, "POSTGRES_CONN_MAX_AGE"),
        ({"POSTGRES_POOL": True, "POSTGRES_CONN_MAX_AGE": None}, "POSTGRES_CONN_MAX_AGE"),
        ({"POSTGRES_CONN_MAX_AGE": -1}, "POSTGRES_CONN_MAX_AGE"),
        ({"POSTGRES_CONN_MAX_AGE": "60"}, "POSTGRES_CONN_MAX_AGE"),
        ({"POSTGRES_CONN_HEALTH_CHECKS": 1}, "POSTGRES_CONN_HEALTH_CHECKS"),
        ({"POSTGRES_DISABLE_SERVER_SIDE_CURSORS": "no"}, "POSTGRES_DISABLE_SERVER_SIDE_CURSORS"),
        ({"TIME_ZONE": "Mars/Olympus"}, "TIME_ZONE"),
        ({"TIME_ZONE": ""}, "TIME_ZONE"),
        ({"USE_TZ": "yes"}, "USE_TZ"),
    ],
)
def test_bad_input_names_the_key(changes, named):
    with pytest.raises(ImproperlyConfigured, match=named):
        make(**changes)


def test_not_a_dict():
    with pytest.raises(ImproperlyConfigured):
        DatabaseSettings.from_dict(["POSTGRES_DATABASE"])  # type: ignore[arg-type]


def test_user_dicts_are_not_mutated():
    def my_check(conn):
        pass

    options = {"connect_timeout": 3, "assume_role": "app", "prepare_threshold": 0}
    pool = {"min_size": 1, "max_size": 2, "check": my_check}
    settings = {**BASE, "POSTGRES_OPTIONS": options, "POSTGRES_POOL": pool}
    before = copy.copy(settings), dict(options), dict(pool)
    s = DatabaseSettings.from_dict(settings)
    assert (settings, options, pool) == (before[0], before[1], before[2])
    assert s.pool is not None and s.pool["check"] is my_check
    assert "assume_role" not in s.options and s.assume_role == "app"
    with pytest.raises(TypeError):
        s.options["x"] = 1  # type: ignore[index]
    # replace() does not touch the original either
    s.replace(TIME_ZONE="Europe/Paris")
    assert settings["POSTGRES_OPTIONS"] is options and options == before[1]


def test_user_check_wins_over_default_without_type_error():
    from plain_pool import DatabaseWrapper

    def my_check(conn):
        pass

    db = DatabaseWrapper(
        {**BASE, "POSTGRES_POOL": {"check": my_check}, "POSTGRES_CONN_HEALTH_CHECKS": True}
    )
    assert db.checkout_policy.health_check(db.settings) is my_check
    from plain_pool import health

    db2 = DatabaseWrapper({**BASE, "POSTGRES_POOL": True, "POSTGRES_CONN_HEALTH_CHECKS": True})
    assert db2.checkout_policy.health_check(db2.settings) is health.check_connection
    db3 = DatabaseWrapper({**BASE, "POSTGRES_POOL": True})
    assert db3.checkout_policy.health_check(db3.settings) is None


def test_pool_true_and_dict():
    assert dict(make(POSTGRES_POOL=True).pool) == {}
    assert dict(make(POSTGRES_POOL={"min_size": 2, "max_size": 4}).pool) == {
        "min_size": 2,
        "max_size": 4,
    }
    assert make(POSTGRES_POOL=False).pool is None


def test_port_as_digit_string():
    assert make(POSTGRES_PORT="6432").port == 6432


def test_replace_validates():
    s = make()
    assert s.replace(TIME_ZONE="Asia/Tokyo", USE_TZ=False).connection_timezone == "Asia/Tokyo"
    with pytest.raises(ImproperlyConfigured, match="TIME_ZONE"):
        s.replace(TIME_ZONE="Nowhere/Land")


def test_identity_ignores_time_zone_only():
    s = make(POSTGRES_POOL=True)
    assert s.identity() == s.replace(TIME_ZONE="Asia/Tokyo", USE_TZ=False).identity()
    assert s.identity() != s.replace(POSTGRES_PORT=5433).identity()


# -- URLs -------------------------------------------------------------------
def test_from_url_basic():
    s = DatabaseSettings.from_url("postgres://bob:s%40cret@db.example:6432/app")
    assert (s.user, s.password, s.host, s.port, s.database) == (
        "bob",
        "s@cret",
        "db.example",
        6432,
        "app",
    )
    assert s.pool is None


def test_from_url_query_parameters():
    s = DatabaseSettings.from_url(
        "postgresql://u@h/app?pool=true&conn_max_age=0&health_checks=true&sslmode=require"
        "&connect_timeout=5&pool_max_size=8&pool_timeout=2.5&time_zone=Europe/Paris&use_tz=false"
        "&assume_role=reader&prepare_threshold=0&disable_server_side_cursors=1"
    )
    assert dict(s.pool) == {"max_size": 8, "timeout": 2.5}
    assert s.conn_health_checks is True
    assert s.options == {"sslmode": "require", "connect_timeout": "5"}
    assert s.connection_timezone == "Europe/Paris"
    assert s.assume_role == "reader" and s.prepare_threshold == 0
    assert s.disable_server_side_cursors is True


def test_from_url_extra_wins():
    pool = {"min_size": 1, "max_size": 2}
    s = DatabaseSettings.from_url("postgres://u@h/app?pool=true", POSTGRES_POOL=pool)
    assert dict(s.pool) == pool


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mysql://u@h/app", "scheme"),
        ("postgres://u@h/app?pool=maybe", "pool"),
        ("postgres://u@h/app?bogus=1", "bogus"),
        ("postgres://u@h/app?pool=true&conn_max_age=60", "POSTGRES_CONN_MAX_AGE"),
        ("postgres://u@h/app?pool_max_size=abc", "pool_max_size"),
        ("postgres://u@h/app?pool_check=x", "check"),
        ("postgres://u@h/app?pool=false&pool_max_size=3", "pool"),
        ("postgres://u@h/app?dbname=x", "dbname"),
        ("postgres://u@h:99999/app", "port"),
        ("postgres://u@h/", "POSTGRES_DATABASE"),
        ("postgres://u@h/app?time_zone=Nowhere/Land", "TIME_ZONE"),
    ],
)
def test_from_url_errors(url, named):
    with pytest.raises(ImproperlyConfigured, match=named):
        DatabaseSettings.from_url(url)


def test_coerce():
    s = make()
    assert DatabaseSettings.coerce(s) is s
    assert DatabaseSettings.coerce("postgres://u@h/app").database == "app"
    with pytest.raises(ImproperlyConfigured):
        DatabaseSettings.coerce(42)  # type: ignore[arg-type]


def test_missing_psycopg_pool_is_improperly_configured():
    """Simulated in a subprocess: psycopg_pool made unimportable."""
    src = Path(__file__).resolve().parents[2] / "src"
    code = textwrap.dedent(
        """
        import sys
        sys.modules["psycopg_pool"] = None  # import raises ImportError
        from plain_pool import DatabaseSettings, ImproperlyConfigured
        DatabaseSettings.from_dict({"POSTGRES_DATABASE": "x"})  # no pool: fine
        try:
            DatabaseSettings.from_dict({"POSTGRES_DATABASE": "x", "POSTGRES_POOL": True})
        except ImproperlyConfigured as exc:
            print(exc)
            sys.exit(0 if "psycopg[pool]" in str(exc) else 2)
        sys.exit(1)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "POSTGRES_POOL" in proc.stdout
