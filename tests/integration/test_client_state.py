"""Client-side state is session state too: each kind is seen, restored, and its leak caught.

A request can change the psycopg connection itself - autocommit, isolation
level, read only, deferrable, prepare_threshold, prepared_max, the row,
cursor and server-cursor factories, notice and notify handlers, adapters
registered on ``conn.adapters``, notifications left unconsumed - and return
it. For every such change:

- the session fingerprint sees it (on a plain connection, no pool): the
  field named in :data:`CLIENT_STATES` differs, and only that one (this also
  guards the fingerprint's reads of psycopg's private attributes);
- plain_pool's reset undoes it: the next checkout fingerprints like a fresh
  connection, and the next user sees no effect (``SELECT 1`` returns ``1``,
  ``conn.notifies()`` returns nothing);
- canaries: a backend with no reset, and one whose reset forgets the notice
  handlers (or the row factory), are caught by the same check.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from psycopg import rows
from psycopg.types.string import TextLoader

from chaos.fingerprint import session_fingerprint
from chaos.targets.variants import VARIANTS
from plain_pool import DatabaseWrapper, close_all_pools
from tests.integration.test_backend_session import leakage_problems


@pytest.fixture(autouse=True)
def _close_pools():
    yield
    close_all_pools()


def _ignore(_: object) -> None:
    """A handler a request adds and never removes."""


class _MyCursor(psycopg.ClientCursor):  # type: ignore[type-arg]
    pass


class _MyServerCursor(psycopg.ServerCursor):  # type: ignore[type-arg]
    pass


def _pending_notification(conn: psycopg.Connection) -> None:
    conn.execute("LISTEN client_state")
    conn.execute("NOTIFY client_state, 'left behind'")  # autocommit: delivered at once


def _register_type(conn: psycopg.Connection) -> None:
    info = psycopg.types.TypeInfo.fetch(conn, "int4")
    assert info is not None
    info.register(conn)


#: name -> (what the request does, the fingerprint field it changes).
CLIENT_STATES: dict[str, tuple[Callable[[psycopg.Connection], None], str]] = {
    "autocommit": (lambda c: setattr(c, "autocommit", False), "autocommit"),
    "isolation_level": (
        lambda c: setattr(c, "isolation_level", psycopg.IsolationLevel.SERIALIZABLE),
        "isolation_level",
    ),
    "read_only": (lambda c: setattr(c, "read_only", True), "read_only"),
    "deferrable": (lambda c: setattr(c, "deferrable", True), "deferrable"),
    "prepare_threshold": (lambda c: setattr(c, "prepare_threshold", 0), "prepare_threshold"),
    "prepared_max": (lambda c: setattr(c, "prepared_max", 1), "prepared_max"),
    "row_factory": (lambda c: setattr(c, "row_factory", rows.dict_row), "row_factory"),
    "cursor_factory": (lambda c: setattr(c, "cursor_factory", _MyCursor), "cursor_factory"),
    "server_cursor_factory": (
        lambda c: setattr(c, "server_cursor_factory", _MyServerCursor),
        "server_cursor_factory",
    ),
    "notice_handler": (lambda c: c.add_notice_handler(_ignore), "notice_handlers"),
    "notify_handler": (lambda c: c.add_notify_handler(_ignore), "notify_handlers"),
    "loader": (lambda c: c.adapters.register_loader("int4", TextLoader), "adapters"),
    "dumper": (
        lambda c: c.adapters.register_dumper(int, psycopg.types.numeric.IntBinaryDumper),
        "adapters",
    ),
    "type_info": (_register_type, "adapters"),
    "pending_notification": (_pending_notification, "pending_notifies"),
}


@pytest.mark.parametrize("state", list(CLIENT_STATES))
def test_fingerprint_sees_client_state(state, postgres):
    change, field = CLIENT_STATES[state]
    with postgres.connect() as conn:
        conn.execute("SELECT 1")  # psycopg made the connection's adapters (a copy)
        before = session_fingerprint(conn)
        change(conn)
        after = session_fingerprint(conn)
    differences = before.diff(after)
    changed = [d.split(":", 1)[0] for d in differences]
    extra = {"listening_channels"} if state == "pending_notification" else set()
    assert set(changed) == {field} | extra, differences


@pytest.mark.parametrize("state", list(CLIENT_STATES))
def test_reset_restores_client_state(state, postgres, make_db_settings):
    change, _ = CLIENT_STATES[state]
    assert leakage_problems(DatabaseWrapper, make_db_settings(postgres), change) == []


@pytest.mark.parametrize("server_side_binding", [False, True])
def test_reset_restores_configured_cursor_factory_and_threshold(
    server_side_binding, postgres, make_db_settings
):
    """The configured values come back, not psycopg's defaults."""
    options = {"prepare_threshold": 3, "server_side_binding": server_side_binding}
    settings = make_db_settings(postgres, POSTGRES_OPTIONS=options)
    for state in ("prepare_threshold", "cursor_factory"):
        assert leakage_problems(DatabaseWrapper, settings, CLIENT_STATES[state][0]) == []


def _pooled(postgres, make_db_settings) -> DatabaseWrapper:
    settings = make_db_settings(postgres, POSTGRES_POOL={"min_size": 1, "max_size": 1})
    return DatabaseWrapper(settings, alias="client-state")


def test_next_user_loads_int4_as_int(postgres, make_db_settings):
    db = _pooled(postgres, make_db_settings)
    conn = db.ensure_connection()
    conn.adapters.register_loader("int4", TextLoader)
    assert conn.execute("SELECT 1").fetchone() == ("1",)
    db.close()
    again = db.ensure_connection()
    assert again is conn
    assert again.execute("SELECT 1").fetchone() == (1,)
    db.close()


def test_next_user_gets_no_stale_notification(postgres, make_db_settings):
    db = _pooled(postgres, make_db_settings)
    conn = db.ensure_connection()
    _pending_notification(conn)
    db.close()
    again = db.ensure_connection()
    assert again is conn
    assert list(again.notifies(timeout=0)) == []
    db.close()


@pytest.mark.canary
@pytest.mark.parametrize("state", list(CLIENT_STATES))
def test_canary_no_reset_leaks_client_state(state, postgres, make_db_settings):
    change, _ = CLIENT_STATES[state]
    problems = leakage_problems(VARIANTS["NoResetOnReturn"], make_db_settings(postgres), change)
    assert problems != []


@pytest.mark.canary
@pytest.mark.parametrize(
    ("variant", "state", "field"),
    [
        ("KeepsNoticeHandlers", "notice_handler", "notice_handlers"),
        ("KeepsRowFactory", "row_factory", "row_factory"),
    ],
)
def test_canary_reset_forgets_one_attribute(variant, state, field, postgres, make_db_settings):
    change, _ = CLIENT_STATES[state]
    problems = leakage_problems(VARIANTS[variant], make_db_settings(postgres), change)
    assert [p.split(":", 1)[0] for p in problems] == [field], problems
