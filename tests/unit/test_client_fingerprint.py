"""The client side of the session fingerprint, without a server.

- coverage: everything plain_pool's reset restores on the client side is a
  fingerprint field (so a reset that forgets it is caught at the next
  checkout), and every client-side field has a dirt kind the machines can
  leave behind;
- the adapter-map comparison on real psycopg ``AdaptersMap`` objects: a
  registration on the connection shows, the copy every cursor makes does not
  hide it.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg.adapt import AdaptersMap
from psycopg.rows import dict_row, tuple_row
from psycopg.types import TypeInfo
from psycopg.types.numeric import IntBinaryDumper
from psycopg.types.string import TextLoader

from chaos.fingerprint import CLIENT_FIELDS, _changed_adapter_maps, qualified_name
from chaos.machines.dirt import DIRT, ClientAttr, Dirt, PendingNotification
from plain_pool import session_reset

#: ClientAttr.attr values that are not the name of the field they change.
_ATTR_FIELDS = {
    "notice_handler": "notice_handlers",
    "notify_handler": "notify_handlers",
    "loader": "adapters",
}


def _field_changed_by(dirt: Dirt) -> str | None:
    if isinstance(dirt, ClientAttr):
        return _ATTR_FIELDS.get(dirt.attr, dirt.attr)
    if isinstance(dirt, PendingNotification):
        return "pending_notifies"
    return None


def test_everything_the_reset_restores_is_fingerprinted():
    restored = set(session_reset.client_defaults(prepare_threshold=None, cursor_factory=None))
    restored |= {"cursor_factory", *session_reset.PRIVATE_CLIENT_STATE}
    assert restored == set(CLIENT_FIELDS)


def test_every_client_field_has_a_dirt_kind():
    assert {_field_changed_by(d) for d in DIRT} >= set(CLIENT_FIELDS)


@pytest.mark.parametrize("dirt", [d for d in DIRT if isinstance(d, ClientAttr)], ids=repr)
def test_client_dirt_repr_is_python_and_resolves(dirt):
    import chaos.machines.dirt as module

    assert eval(repr(dirt), vars(module)) == dirt
    dirt.resolved()  # a name it prints is one it knows


def test_client_defaults_autocommit_first_and_configured_values():
    defaults = session_reset.client_defaults(prepare_threshold=3, cursor_factory=psycopg.Cursor)
    assert next(iter(defaults)) == "autocommit"
    assert defaults["prepare_threshold"] == 3
    assert defaults["cursor_factory"] is psycopg.Cursor
    assert defaults["row_factory"] is tuple_row
    no_factory = session_reset.client_defaults(prepare_threshold=None, cursor_factory=None)
    assert "cursor_factory" not in no_factory


def test_qualified_names():
    assert qualified_name(tuple_row) == "psycopg.rows.tuple_row"
    assert qualified_name(dict_row) == "psycopg.rows.dict_row"
    assert qualified_name(psycopg.ClientCursor) == "psycopg.ClientCursor"
    assert qualified_name(print) == "builtins.print"


def _connection_map() -> AdaptersMap:
    """What a connection gets: a copy of the global map."""
    return AdaptersMap(psycopg.adapters)


def test_fresh_and_unused_adapters_are_unchanged():
    assert _changed_adapter_maps(None) == ()
    conn_map = _connection_map()
    AdaptersMap(conn_map)  # every cursor copies its connection's map
    assert _changed_adapter_maps(conn_map) == ()


def test_a_loader_registered_on_the_connection_shows_after_a_cursor_copy():
    conn_map = _connection_map()
    conn_map.register_loader("int4", TextLoader)
    AdaptersMap(conn_map)  # resets conn_map's copy-on-write flags: must not hide the change
    assert _changed_adapter_maps(conn_map) == ("loaders",)


def test_a_dumper_registered_on_the_connection_shows():
    conn_map = _connection_map()
    conn_map.register_dumper(int, IntBinaryDumper)
    changed = _changed_adapter_maps(conn_map)
    assert "dumpers" in changed and "loaders" not in changed


def test_a_type_registered_on_the_connection_shows():
    conn_map = _connection_map()
    conn_map.types.add(TypeInfo("chaos_type", 999_999, 999_998))
    assert _changed_adapter_maps(conn_map) == ("types",)
