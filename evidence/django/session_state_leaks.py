"""Which session state one request leaves to the next, in Django's pooled backend and
with persistent connections (``CONN_MAX_AGE``): Django's own code only, no adapter.

For every kind of dirt in ``chaos/machines/dirt.py`` (plus an open ``BEGIN`` and
Django's own ``set_autocommit(False)``), on a fresh server session each time:

- ``pool`` (``OPTIONS={"pool": {"min_size": 1, "max_size": 1}}``, so the next request
  gets that very session): request 1 in thread A (``request_started``,
  ``connection.cursor()``, the dirt, ``request_finished``, which puts the connection
  back); request 2 in thread B;
- ``persistent`` (no pool, ``CONN_MAX_AGE = 600``): requests 1 and 2 in the same
  thread (a worker thread serving its next request keeps its connection).

Request 2's session is fingerprinted (``chaos.fingerprint``: one read-only query and
the psycopg connection's client-side attributes) and compared with a session Django
opens fresh ("same session": request 2 got request 1's backend). The server runs with
``log_statement = all``; for the ``work_mem`` case the program prints every statement
the server logged on that session from request 1's ``SET`` to request 2's queries (the
fingerprint's ``SELECT``, then ``SELECT 1``): no reset in between. The ``loader`` kind
(an int4 loader registered on the psycopg connection) is invisible to the fingerprint
for Django's connections (see ``next_request``), so request 2's ``SELECT 1`` shows it.

Run: ``PYTHONPATH=src:. .tox/matrix/bin/python evidence/django/session_state_leaks.py``

Recorded output (Django 5.2.19, psycopg 3.3.9, psycopg_pool 3.3.3, Postgres 15;
2026-12-06; psycopg_pool's "rolling back returned connection" warning left out):

    Django 5.2.19, psycopg 3.3.9, 15.18
    pool SetGuc(name='work_mem', value='8MB'): same session True
        LEAKS session_gucs: extra ['work_mem=8192']
      server log of that session, request 1 to request 2:
        SET work_mem TO '8MB'
        SELECT
        SELECT 1
    pool SetGuc(name='application_name', value='chaos-dirt'): same session True
        LEAKS session_gucs: extra ['application_name=chaos-dirt']
    pool SetGuc(name='DateStyle', value='SQL, DMY'): same session True
        LEAKS session_gucs: extra ['DateStyle=SQL, DMY']
    pool SetTimeZone(zone='Pacific/Chatham'): same session True
        LEAKS timezone: expected 'UTC', got 'Pacific/Chatham'
    pool SetRole(role='chaos_intruder'): same session True
        LEAKS current_user: expected 'postgres', got 'chaos_intruder'
    pool TempTable(name='chaos_tmp'): same session True
        LEAKS temp_tables: extra ['chaos_tmp']
    pool AdvisoryLock(key=4242): same session True
        LEAKS advisory_locks: extra ['0:4242:1:ExclusiveLock:t']
    pool Listen(channel='chaos_channel'): same session True
        LEAKS listening_channels: extra ['chaos_channel']
    pool Prepare(name='chaos_stmt'): same session True
        LEAKS prepared_statements: extra ['chaos_stmt']
    pool HoldCursor(name='chaos_cursor'): same session True
        LEAKS cursors: extra ['chaos_cursor']
    pool ClientAttr(attr='isolation_level', value='SERIALIZABLE'): same session True
        LEAKS isolation_level: expected None, got 'SERIALIZABLE'
    pool ClientAttr(attr='read_only', value=True): same session True
        LEAKS read_only: expected None, got True
    pool ClientAttr(attr='deferrable', value=True): same session True
        LEAKS deferrable: expected None, got True
    pool ClientAttr(attr='autocommit', value=False): same session True
        reset
    pool ClientAttr(attr='prepare_threshold', value=0): same session True
        LEAKS prepare_threshold: expected None, got 0
    pool ClientAttr(attr='prepared_max', value=1): same session True
        LEAKS prepared_max: expected 100, got 1
    pool ClientAttr(attr='row_factory', value='dict_row'): same session True
        LEAKS row_factory: expected 'psycopg.rows.tuple_row', got 'psycopg.rows.dict_row'
    pool ClientAttr(attr='cursor_factory', value='ChaosCursor'): same session True
        LEAKS cursor_factory: expected 'django.db.backends.postgresql.base.Cursor', got
            'chaos.machines.dirt.ChaosCursor'
    pool ClientAttr(attr='server_cursor_factory', value='ChaosServerCursor'): same session True
        LEAKS server_cursor_factory: expected 'psycopg.ServerCursor', got
            'chaos.machines.dirt.ChaosServerCursor'
    pool ClientAttr(attr='notice_handler', value='ignore_notice'): same session True
        LEAKS notice_handlers: extra ['chaos.machines.dirt.ignore_notice']
    pool ClientAttr(attr='notify_handler', value='ignore_notify'): same session True
        LEAKS notify_handlers: extra ['chaos.machines.dirt.ignore_notify']
    pool ClientAttr(attr='loader', value='int4_as_text'): same session True
        LEAKS SELECT 1 returns ('1',) (a fresh session: (1,))
    pool PendingNotification(channel='chaos_notify'): same session True
        LEAKS listening_channels: extra ['chaos_notify']; pending_notifies: extra ['chaos_notify']
    pool BEGIN: same session True
        reset
    pool set_autocommit(False): same session True
        reset
    pool: 22 of 25 kinds leak to the next request

    persistent SetGuc(name='work_mem', value='8MB'): same session True
        LEAKS session_gucs: extra ['work_mem=8192']
      server log of that session, request 1 to request 2:
        SET work_mem TO '8MB'
        SELECT
        SELECT 1
    persistent SetGuc(name='application_name', value='chaos-dirt'): same session True
        LEAKS session_gucs: extra ['application_name=chaos-dirt']
    persistent SetGuc(name='DateStyle', value='SQL, DMY'): same session True
        LEAKS session_gucs: extra ['DateStyle=SQL, DMY']
    persistent SetTimeZone(zone='Pacific/Chatham'): same session True
        LEAKS timezone: expected 'UTC', got 'Pacific/Chatham'
    persistent SetRole(role='chaos_intruder'): same session True
        LEAKS current_user: expected 'postgres', got 'chaos_intruder'
    persistent TempTable(name='chaos_tmp'): same session True
        LEAKS temp_tables: extra ['chaos_tmp']
    persistent AdvisoryLock(key=4242): same session True
        LEAKS advisory_locks: extra ['0:4242:1:ExclusiveLock:t']
    persistent Listen(channel='chaos_channel'): same session True
        LEAKS listening_channels: extra ['chaos_channel']
    persistent Prepare(name='chaos_stmt'): same session True
        LEAKS prepared_statements: extra ['chaos_stmt']
    persistent HoldCursor(name='chaos_cursor'): same session True
        LEAKS cursors: extra ['chaos_cursor']
    persistent ClientAttr(attr='isolation_level', value='SERIALIZABLE'): same session True
        LEAKS isolation_level: expected None, got 'SERIALIZABLE'
    persistent ClientAttr(attr='read_only', value=True): same session True
        LEAKS read_only: expected None, got True
    persistent ClientAttr(attr='deferrable', value=True): same session True
        LEAKS deferrable: expected None, got True
    persistent ClientAttr(attr='autocommit', value=False): same session True
        LEAKS autocommit: expected True, got False
    persistent ClientAttr(attr='prepare_threshold', value=0): same session True
        LEAKS prepare_threshold: expected None, got 0
    persistent ClientAttr(attr='prepared_max', value=1): same session True
        LEAKS prepared_max: expected 100, got 1
    persistent ClientAttr(attr='row_factory', value='dict_row'): same session True
        LEAKS row_factory: expected 'psycopg.rows.tuple_row', got 'psycopg.rows.dict_row'
    persistent ClientAttr(attr='cursor_factory', value='ChaosCursor'): same session True
        LEAKS cursor_factory: expected 'django.db.backends.postgresql.base.Cursor', got
            'chaos.machines.dirt.ChaosCursor'
    persistent ClientAttr(attr='server_cursor_factory', value='ChaosServerCursor'): same session
        True
        LEAKS server_cursor_factory: expected 'psycopg.ServerCursor', got
            'chaos.machines.dirt.ChaosServerCursor'
    persistent ClientAttr(attr='notice_handler', value='ignore_notice'): same session True
        LEAKS notice_handlers: extra ['chaos.machines.dirt.ignore_notice']
    persistent ClientAttr(attr='notify_handler', value='ignore_notify'): same session True
        LEAKS notify_handlers: extra ['chaos.machines.dirt.ignore_notify']
    persistent ClientAttr(attr='loader', value='int4_as_text'): same session True
        LEAKS SELECT 1 returns ('1',) (a fresh session: (1,))
    persistent PendingNotification(channel='chaos_notify'): same session True
        LEAKS listening_channels: extra ['chaos_notify']; pending_notifies: extra ['chaos_notify']
    persistent BEGIN: same session True
        LEAKS transaction_status: expected 'IDLE', got 'INTRANS'
    persistent set_autocommit(False): same session False
        reset
    persistent: 24 of 25 kinds leak to the next request
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import django
import psycopg
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import connections

from chaos.fingerprint import session_fingerprint
from chaos.machines.dirt import DIRT, INTRUDER_ROLE, ClientAttr, Dirt, SetGuc
from chaos.postgres import PostgresServer


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a new thread (Django's connections are per thread)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def apply(alias: str, dirt: Dirt | str) -> None:
    """What a request does: SQL through Django's cursor, attributes on the psycopg one."""
    db = connections[alias]
    if dirt == "BEGIN":
        db.cursor().execute("BEGIN")
    elif dirt == "set_autocommit(False)":
        db.set_autocommit(False)
    elif isinstance(dirt, ClientAttr):
        db.ensure_connection()
        conn, value = db.connection, dirt.resolved()
        if dirt.attr in ("notice_handler", "notify_handler"):
            getattr(conn, f"add_{dirt.attr}")(value)
        elif dirt.attr == "loader":
            conn.adapters.register_loader(*value)
        else:
            setattr(conn, dirt.attr, value)
    else:
        for sql in dirt.statements():
            db.cursor().execute(sql)


def first_request(alias: str, dirt: Dirt | str) -> int:
    request_started.send(sender=None, environ={})
    apply(alias, dirt)
    pid = connections[alias].connection.info.backend_pid
    request_finished.send(sender=None)
    return pid


def next_request(alias: str) -> tuple[Any, Any]:
    """Request 2: its session's fingerprint, and what ``SELECT 1`` returns to it."""
    request_started.send(sender=None, environ={})
    db = connections[alias]
    with db.cursor():
        pass
    fingerprint = session_fingerprint(db.connection)
    with db.connection.cursor() as cur:  # psycopg's own cursor: Django's row handling aside
        one = cur.execute("SELECT 1").fetchone() if db.connection.autocommit else None
    request_finished.send(sender=None)
    db.close()  # the thread ends: a persistent connection is closed, a pooled one returned
    return fingerprint, one


def database(pg: PostgresServer, **extra: Any) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "HOST": pg.host,
        "PORT": pg.port,
        **extra,
    }


def logged_statements(pg: PostgresServer, offset: int, pid: int) -> list[str]:
    text = pg.log_path.read_text(errors="replace")[offset:]
    return [line for line in text.splitlines() if f"[{pid}]" in line and "statement:" in line]


def main() -> None:
    with PostgresServer(settings={"log_statement": "all", "log_line_prefix": "[%p] "}) as pg:
        pg.create_role(INTRUDER_ROLE)
        settings.configure(
            DATABASES={
                "default": database(pg),
                "pool": database(pg, OPTIONS={"pool": {"min_size": 1, "max_size": 1}}),
                "persistent": database(pg, CONN_MAX_AGE=600),
            },
            INSTALLED_APPS=[],
            USE_TZ=True,
            TIME_ZONE="UTC",
        )
        django.setup()
        print(f"Django {django.get_version()}, psycopg {psycopg.__version__}, {pg.version}")
        fresh, fresh_one = in_thread(lambda: next_request("default"))
        kinds: list[Dirt | str] = [*DIRT, "BEGIN", "set_autocommit(False)"]
        for mode in ("pool", "persistent"):
            leaked = []
            for dirt in kinds:
                offset = pg.log_path.stat().st_size
                if mode == "pool":
                    pid = in_thread(lambda d=dirt: first_request("pool", d))
                    seen, one = in_thread(lambda: next_request("pool"))
                    in_thread(lambda: connections["pool"].close_pool())
                else:
                    pid, (seen, one) = in_thread(
                        lambda d=dirt: (first_request("persistent", d), next_request("persistent"))
                    )
                between = logged_statements(pg, offset, pid)
                same = seen.backend_pid == pid
                diff = fresh.diff(seen)
                if isinstance(dirt, ClientAttr) and dirt.attr == "loader" and one != fresh_one:
                    # The fingerprint's ``adapters`` field names the maps a connection copied
                    # from psycopg's global ones: Django's connections copy them at connect
                    # (its adapters context), so a loader added later does not show there.
                    diff.append(f"SELECT 1 returns {one!r} (a fresh session: {fresh_one!r})")
                verdict = "LEAKS " + "; ".join(diff) if diff else "reset"
                if diff:
                    leaked.append(dirt)
                print(f"{mode} {dirt!s}: same session {same}")
                print(f"    {verdict}")
                if dirt == SetGuc("work_mem", "8MB"):
                    print("  server log of that session, request 1 to request 2:")
                    for line in between:
                        print("   ", line.split("statement: ", 1)[1][:100])
            print(f"{mode}: {len(leaked)} of {len(kinds)} kinds leak to the next request\n")


if __name__ == "__main__":
    main()
