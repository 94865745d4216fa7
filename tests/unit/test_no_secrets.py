"""No password reaches a message, a log line, a repr or a report.

A known password goes through every path that prints settings or connection
information - each error branch of ``from_url`` and ``from_dict``, the reprs of
settings, wrappers, pool entries, scenarios and targets, a connection error
raised through plain_pool (and what it logs), a failing scenario's summary
table, JSON, timeline and explanation - and must not come out. Each case also
checks that the path was really taken (the expected message, the mask), so
that a test cannot pass by printing nothing. The pytest header, the chaos
replay section and the report files of a whole failing run are checked end to
end in tests/integration/test_no_secrets_end_to_end.py.
"""

from __future__ import annotations

import json
import logging
import socket
import traceback

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from chaos.postgres import ExternalPostgres
from chaos.report import format_progress, render_table, render_timeline_svg
from chaos.report.secrets import env_secrets
from chaos.scenarios import Expectations, FaultStep, Scenario, ScenarioRegistry
from chaos.scenarios._runner import FaultWindow, Op, ScenarioResult
from plain_pool import DatabaseSettings, DatabaseWrapper, ImproperlyConfigured, pools
from plain_pool._redact import MASK, mask_url, redact, redact_data, safe_repr, secrets_in

PW = "pw-s3cret-XYZ"
#: The same password percent-encoded, as it is written in a URL.
PW_URL = "pw%2Ds3cret%2DXYZ"


def leaks(*texts: object) -> list[str]:
    """The texts that show the password (as typed or percent-encoded)."""
    return [str(t) for t in texts if PW in str(t) or PW_URL in str(t)]


def shown(exc: BaseException) -> list[str]:
    """Everything a user could see of an exception: str, repr, the printed traceback."""
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


# -- settings: every error branch ----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"postgres://u:{PW}@h:port/db", "invalid port"),
        (f"postgres://u:{PW}@h:99999/db", "invalid port"),
        (f"postgres://u:{PW_URL}@h:port/db", "invalid port"),
        (f"postgres://u:{PW}#frag@h:5432/db", "invalid port"),  # '#' unescaped: port misparsed
        (f"postgres://u:{PW}@[::1/db", "malformed"),
        (f"mysql://u:{PW}@h/db", "scheme"),
        (f"u:{PW}@h/db", "scheme"),
        (f"postgres://u:{PW}@h/db?pool=perhaps", "must be a boolean"),
        (f"postgres://u:{PW}@h/db?use_tz={PW}", "must be a boolean"),
        (f"postgres://u:{PW}@h/db?pool_timeout={PW}", "must be a number"),
        (f"postgres://u:{PW}@h/db?conn_max_age={PW}", "must be a number"),
        (f"postgres://u:{PW}@h/db?prepare_threshold={PW}", "must be a number"),
        (f"postgres://u:{PW}@h/db?pool_check=x", "cannot be given in a URL"),
        (f"postgres://u:{PW}@h/db?password={PW}", "cannot be given as a query parameter"),
        (f"postgres://u:{PW}@h/db?{PW}=1", "is not a libpq option"),
        (f"postgres://u:{PW}@h/db?pool=false&pool_min_size=1", "'pool' is false"),
        (f"postgres://u:{PW}@h/", "POSTGRES_DATABASE is required"),
        (f"postgres://u:{PW}@h/db?time_zone={PW}", "not a known time zone"),
        (f"postgres://u:{PW}@h/db?conn_max_age=-1", "POSTGRES_CONN_MAX_AGE"),
        (f"postgres://u:{PW}@h/db?pool=true&conn_max_age=5", "persistent connections"),
        (f"postgres://u:{PW}@h/db?pool_max_size=1&pool_min_size=2", "must be >= min_size"),
        (f"postgres://u:{PW}@h/db?pool_num_workers=0", "num_workers"),
    ],
)
def test_bad_urls_never_show_the_password(url, expected):
    with pytest.raises(ImproperlyConfigured, match=expected) as info:
        DatabaseSettings.from_url(url)
    assert not leaks(*shown(info.value))


def test_a_bad_url_is_shown_masked():
    with pytest.raises(ImproperlyConfigured) as info:
        DatabaseSettings.from_url(f"postgres://u:{PW}@h:port/db")
    assert str(info.value) == f"database URL has an invalid port: 'postgres://u:{MASK}@h:port/db'"


def test_url_extra_keys_are_masked_too():
    with pytest.raises(ImproperlyConfigured, match="time zone"):
        DatabaseSettings.from_url("postgres://u@h/db", POSTGRES_PASSWORD=PW, TIME_ZONE=PW)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"POSTGRES_PASSWORD": PW.encode()}, "POSTGRES_PASSWORD must be a str"),
        ({"POSTGRES_PASSWORD": [PW]}, "POSTGRES_PASSWORD must be a str"),
        ({"POSTGRES_PASSWORD": {"value": PW}}, "POSTGRES_PASSWORD must be a str"),
        ({"PASSWORD": PW}, "unknown database setting 'PASSWORD'"),
        ({PW: PW, "POSTGRES_PASSWORD": PW}, "unknown database setting"),
        ({"POSTGRES_OPTIONS": {"password": PW}}, "set with POSTGRES_PASSWORD"),
        ({"POSTGRES_OPTIONS": {"sslpassword": [PW]}}, "must be a str or a number"),
        ({"POSTGRES_OPTIONS": f"host=h password={PW}"}, "POSTGRES_OPTIONS must be a dict"),
        ({"POSTGRES_OPTIONS": {"sslpassword": PW, PW: 1}}, "is not a libpq connection option"),
        ({"POSTGRES_POOL": f"postgres://u:{PW}@h/db"}, "POSTGRES_POOL must be False, True"),
        ({"POSTGRES_POOL": {"name": [PW]}, "POSTGRES_PASSWORD": PW}, "must be a str"),
        ({"POSTGRES_HOST": f"postgres://u:{PW}@h/db".encode()}, "POSTGRES_HOST must be a str"),
        ({"POSTGRES_PORT": PW, "POSTGRES_PASSWORD": PW}, "POSTGRES_PORT"),
        ({"TIME_ZONE": PW, "POSTGRES_PASSWORD": PW}, "not a known time zone"),
        ({"POSTGRES_DATABASE": "", "POSTGRES_PASSWORD": PW}, "POSTGRES_DATABASE is required"),
        ({"USE_TZ": PW, "POSTGRES_PASSWORD": PW}, "USE_TZ must be True or False"),
    ],
)
def test_bad_dicts_never_show_the_password(settings, expected):
    with pytest.raises(ImproperlyConfigured, match=expected) as info:
        DatabaseSettings.from_dict({"POSTGRES_DATABASE": "db", **settings})
    assert not leaks(*shown(info.value))


@pytest.mark.parametrize("value", [f"postgres://u:{PW}@h/db".encode(), (f"postgres://u:{PW}@h",)])
def test_settings_of_the_wrong_kind_never_show_the_password(value):
    with pytest.raises(ImproperlyConfigured, match="must be a dict, a URL") as info:
        DatabaseSettings.coerce(value)
    assert not leaks(*shown(info.value))


# -- reprs -------------------------------------------------------------------------


@pytest.fixture
def secret_settings():
    settings = DatabaseSettings.from_url(
        f"postgres://app:{PW_URL}@127.0.0.1:1/app?pool=true&pool_timeout=0.5&pool_min_size=1"
        f"&sslpassword={PW}&connect_timeout=1"
    )
    assert settings.password == PW  # the URL's password, decoded
    yield settings
    pools.close_all(timeout=1)


def test_settings_wrapper_and_pool_entry_reprs(secret_settings):
    wrapper = DatabaseWrapper(secret_settings, alias="secrets")
    assert wrapper.pool is not None  # registers a pool entry (not opened: no connection)
    entries = [e for e in pools.entries() if e.key[1] == "secrets"]
    assert entries and entries[0].key[2] == secret_settings.identity()
    texts = [
        repr(secret_settings),
        str(secret_settings),
        repr(secret_settings.identity()),
        repr(wrapper),
        repr(entries),
        repr(entries[0].key),
    ]
    assert not leaks(*texts)
    assert f"'sslpassword': '{MASK}'" in repr(secret_settings)
    # the identity still tells passwords apart (the registry must not share pools)
    other = DatabaseSettings.from_dict({**secret_settings.to_dict(), "POSTGRES_PASSWORD": "x"})
    assert other.identity() != secret_settings.identity()
    assert DatabaseSettings.from_dict(secret_settings.to_dict()).identity() == (
        secret_settings.identity()
    )


def test_scenario_repr_masks_its_settings():
    scenario = Scenario(
        name="s",
        faults=(),
        workload=lambda ctx: None,
        expect=Expectations(),
        settings={"POSTGRES_PASSWORD": PW, "POSTGRES_OPTIONS": {"sslpassword": PW}},
    )
    ScenarioRegistry().add(scenario)
    assert not leaks(repr(scenario)) and "POSTGRES_PASSWORD" in repr(scenario)


def test_target_and_external_server_reprs():
    # imported here: importing chaos.targets before chaos.machines is a circular import
    from chaos.machines import PoolMachine  # noqa: F401
    from chaos.targets.base import TargetOptions
    from chaos.targets.plain_pool import PlainPoolTarget

    server = ExternalPostgres(f"postgresql://app:{PW_URL}@127.0.0.1:1/app")
    target = PlainPoolTarget(server=server, host="127.0.0.1", port=1, options=TargetOptions())
    try:
        assert not leaks(repr(server), repr(target), target.description, vars(target).get("alias"))
    finally:
        target.close()


# -- connection errors through plain_pool ----------------------------------------------


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("pooled", [False, True])
def test_connection_errors_and_logs_never_show_the_password(pooled, closed_port, caplog):
    settings = {
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": closed_port,
        "POSTGRES_DATABASE": "app",
        "POSTGRES_USER": "app",
        "POSTGRES_PASSWORD": PW,
        "POSTGRES_OPTIONS": {"connect_timeout": 1, "sslpassword": PW},
        "POSTGRES_POOL": {"min_size": 1, "timeout": 0.5} if pooled else False,
    }
    db = DatabaseWrapper(settings, alias=f"secrets-{pooled}")
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(PoolTimeout if pooled else psycopg.OperationalError) as info:
            db.ensure_connection()
    finally:
        db.close_pool()
    assert not leaks(*shown(info.value), caplog.text, repr(db))
    if not pooled:
        assert "127.0.0.1" in str(info.value)  # the real libpq error, not an empty one


# -- the scenario report ---------------------------------------------------------------


def failing_result() -> ScenarioResult:
    """A failed scenario whose every text field holds the password, as careless code does."""
    dsn = f"postgres://app:{PW}@db/app"
    op = Op(
        worker=0,
        kind="write",
        started=1.0,
        ended=1.2,
        error_type="OperationalError",
        error=f"connection to {dsn} failed (password={PW})",
    )
    window = FaultWindow(
        FaultStep(0.5, "crash"),
        applied_at=1.5,
        ended_at=1.6,
        error=f"crash could not be applied: {PW}",
    )
    return ScenarioResult(
        name="secret-probe",
        faults="crash()@0.5s",
        verdict="fail",
        violations=[f"planted: {PW}", f"settings {{'POSTGRES_PASSWORD': '{PW}'}}"],
        windows=[window],
        ops=[op, Op(0, "write", 1.3, 1.31, ok=True)],
        t0=1.0,
        duration_s=1.0,
        seed=None,
        seeded=False,
        ledger=None,
        sessions=f"sessions: {PW}",
        notes=[f"dsn {dsn}", PW],
        metrics={"dsn": dsn, "nested": [{"password": PW}]},
        fault_journal=f"journal {PW}",
        secrets=(PW,),
    )


def test_failing_scenario_report_table_json_and_timeline(tmp_path):
    result = failing_result()
    row = result.as_dict()
    row["replay"] = 'tox -e chaos -- "x"'
    text = json.dumps(row)
    (tmp_path / "summary.json").write_text(text)
    outputs = [
        text,
        (tmp_path / "summary.json").read_text(),
        render_table([row]),
        format_progress(row),
        render_timeline_svg(row),
        result.explain(),
        repr(result),
    ]
    assert not leaks(*outputs)
    assert f"planted: {MASK}" in render_table([row])  # the violation is shown, masked
    assert f"postgres://app:{MASK}@db/app" in result.explain()


def test_report_plugin_masks_the_environment_passwords():
    environ = {
        "PLAIN_POOL_PG_DSN": f"postgresql://app:{PW_URL}@db:5432/app",
        "PGPASSWORD": "other-secret",
        "HTTP_PROXY": "http://proxy:8080",
    }
    found = env_secrets(environ)
    assert PW in found and PW_URL in found and "other-secret" in found
    row = {"violations": [f"{PW} and other-secret"], "notes": [{"dsn": PW_URL}]}
    assert not leaks(json.dumps(redact_data(row, found)))


# -- the masking helper itself -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"postgres://u:{PW}@h:5432/db", f"postgres://u:{MASK}@h:5432/db"),
        (f"postgres://u:{PW}@h/db?x=1", f"postgres://u:{MASK}@h/db?x=1"),
        (f"host=h password={PW} user=u", f"host=h password={MASK} user=u"),
        (f"password='{PW} x' user=u", f"password='{MASK}' user=u"),
        (f"{{'POSTGRES_PASSWORD': '{PW}', 'x': 1}}", f"{{'POSTGRES_PASSWORD': '{MASK}', 'x': 1}}"),
        (f'{{"sslpassword": "{PW}"}}', f'{{"sslpassword": "{MASK}"}}'),
        ("postgres://u@h:5432/db", "postgres://u@h:5432/db"),
    ],
)
def test_redact(text, masked):
    assert redact(text) == masked


def test_mask_url_safe_repr_and_secrets_in():
    assert mask_url(f"postgresql://u:{PW_URL}@h/db") == f"postgresql://u:{MASK}@h/db"
    assert (
        safe_repr({"a": {"sslpassword": PW}, "b": 1})
        == f"{{'a': {{'sslpassword': '{MASK}'}}, 'b': 1}}"
    )
    assert set(secrets_in(f"postgresql://u:{PW_URL}@h/db")) == {PW, PW_URL}
    assert redact(f"a {PW} b", [PW]) == f"a {MASK} b"
    assert redact("a abc b", ["abc"]) == "a abc b"  # too short to search for in free text


def test_a_malformed_external_dsn_is_reported_without_its_password():
    """psycopg's conninfo parser quotes the bad token, password included."""
    from chaos.postgres import ServerUnavailable, parse_dsn

    dsn = "postgresql://u:pw%zzs3cret@127.0.0.1/db"
    with pytest.raises(ServerUnavailable) as raised:
        parse_dsn(dsn)
    shown = str(raised.value)
    assert "not a valid connection string" in shown
    assert "pw%zzs3cret" not in shown and "zzs3cret" not in shown
    assert raised.value.__cause__ is None and raised.value.__context__ is None
