"""``OPTIONS["assume_role"]`` together with ``OPTIONS["pool"]``: no request ever gets a
connection (``PoolTimeout`` every time). Django's own code only, no adapter.

Why (read in ``django/db/backends/postgresql/base.py``, 5.2.19): the pool is built with
``configure=self._configure_connection``, which psycopg_pool calls in its worker thread
on every new connection. ``_configure_role`` composes ``SET ROLE %s`` with
``self.ops.compose_sql`` -> ``mogrify(sql, params, self.connection)`` where
``self.connection`` is the DatabaseWrapper: ``mogrify`` opens ``wrapper.cursor()`` ->
``ensure_connection()`` -> ``connect()`` -> ``get_new_connection()`` ->
``self.pool.getconn()``, from inside the pool's own ``configure``. That inner
``getconn`` waits for a connection the pool cannot finish configuring; it times out,
``configure`` fails, the pool discards the new connection and tries again, and the
request's ``getconn`` times out too. ``SET ROLE`` never reaches the server. Without
the pool the same settings work (``init_connection_state`` runs ``_configure_connection``
on an already-open wrapper, so ``mogrify``'s cursor uses it).

No Django ticket was found for it (searched code.djangoproject.com / django-updates for
assume_role with pool); the nearest, #37075, is another collision in the same
``ConnectionPool(...)`` call.

Run: ``PYTHONPATH=src:. .tox/matrix/bin/python evidence/django/assume_role_with_pool.py``

Recorded output (Django 5.2.19, psycopg 3.3.9, psycopg_pool 3.3.3, Postgres 15;
2026-12-06):

    Django 5.2.19, psycopg 3.3.9, psycopg_pool 3.3.3, Postgres 15.18
    DATABASES["pooled"]["OPTIONS"] = {'assume_role': 'chaos_app', 'application_name': 'pooled',
        'pool': {'min_size': 1, 'max_size': 2, 'timeout': 3}}
    default: current_user = chaos_app
    stack of the pool's pool-1-worker-0 at 1.5s (Django frames, getconn):
        django/db/backends/postgresql/base.py:377 _configure_connection: commit_role =
            self._configure_role(connection)
        django/db/backends/postgresql/base.py:363 _configure_role: sql = self.ops.compose_sql("SET
            ROLE %s", [new_role])
        django/db/backends/postgresql/operations.py:202 compose_sql: return mogrify(sql, params,
            self.connection)
        django/db/backends/postgresql/psycopg_any.py:21 mogrify: with connection.cursor() as cursor:
        django/utils/asyncio.py:26 inner: return func(*args, **kwargs)
        django/db/backends/base/base.py:320 cursor: return self._cursor()
        django/db/backends/base/base.py:296 _cursor: self.ensure_connection()
        django/utils/asyncio.py:26 inner: return func(*args, **kwargs)
        django/db/backends/base/base.py:279 ensure_connection: self.connect()
        django/utils/asyncio.py:26 inner: return func(*args, **kwargs)
        django/db/backends/base/base.py:256 connect: self.connection =
            self.get_new_connection(conn_params)
        django/utils/asyncio.py:26 inner: return func(*args, **kwargs)
        django/db/backends/postgresql/base.py:330 get_new_connection: connection =
            self.pool.getconn()
        psycopg_pool/pool.py:214 getconn: return self._getconn_with_check_loop(deadline)
        psycopg_pool/pool.py:226 _getconn_with_check_loop: conn = self._getconn_unchecked(deadline -
            monotonic())
        psycopg_pool/pool.py:271 _getconn_unchecked: conn = pos.wait(timeout=timeout)
    pooled: django.db.utils.OperationalError after 3.0s; traceback:
    Traceback (most recent call last):
      File "django/db/backends/base/base.py", line 279, in ensure_connection
        self.connect()
      File "django/utils/asyncio.py", line 26, in inner
        return func(*args, **kwargs)
               ^^^^^^^^^^^^^^^^^^^^^
      File "django/db/backends/base/base.py", line 256, in connect
        self.connection = self.get_new_connection(conn_params)
                          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
      File "django/utils/asyncio.py", line 26, in inner
        return func(*args, **kwargs)
               ^^^^^^^^^^^^^^^^^^^^^
      File "django/db/backends/postgresql/base.py", line 330, in get_new_connection
        connection = self.pool.getconn()
                     ^^^^^^^^^^^^^^^^^^^
      File "psycopg_pool/pool.py", line 218, in getconn
        raise PoolTimeout(
    psycopg_pool.PoolTimeout: couldn't get a connection after 3.00 sec

    The above exception was the direct cause of the following exception:

    Traceback (most recent call last):
      File "evidence/django/assume_role_with_pool.py", line 82, in run
        with connections[alias].cursor() as cursor:
             ^^^^^^^^^^^^^^^^^^^^^^^^^^^
      File "django/utils/asyncio.py", line 26, in inner
        return func(*args, **kwargs)
               ^^^^^^^^^^^^^^^^^^^^^
      File "django/db/backends/base/base.py", line 320, in cursor
        return self._cursor()
               ^^^^^^^^^^^^^^
      File "django/db/backends/base/base.py", line 296, in _cursor
        self.ensure_connection()
      File "django/utils/asyncio.py", line 26, in inner
        return func(*args, **kwargs)
               ^^^^^^^^^^^^^^^^^^^^^
      File "django/db/backends/base/base.py", line 278, in ensure_connection
        with self.wrap_database_errors:
      File "django/db/utils.py", line 91, in __exit__
        raise dj_exc_value.with_traceback(traceback) from exc_value
      File "django/db/backends/base/base.py", line 279, in ensure_connection
        self.connect()
      File "django/utils/asyncio.py", line 26, in inner
        return func(*args, **kwargs)
               ^^^^^^^^^^^^^^^^^^^^^
      File "django/db/backends/base/base.py", line 256, in connect
        self.connection = self.get_new_connection(conn_params)
                          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
      File "django/utils/asyncio.py", line 26, in inner
        return func(*args, **kwargs)
               ^^^^^^^^^^^^^^^^^^^^^
      File "django/db/backends/postgresql/base.py", line 330, in get_new_connection
        connection = self.pool.getconn()
                     ^^^^^^^^^^^^^^^^^^^
      File "psycopg_pool/pool.py", line 218, in getconn
        raise PoolTimeout(
    django.db.utils.OperationalError: couldn't get a connection after 3.00 sec
    log psycopg.pool WARNING: error connecting in 'pool-1': couldn't get a connection after 3.00 sec
    log psycopg.pool WARNING: error connecting in 'pool-1': couldn't get a connection after 3.00 sec
    pg_stat_activity (application_name no_pool / pooled):
        (4026, 'pooled', 'postgres', 'idle', '')
        (4027, 'pooled', 'postgres', 'idle', '')
    server log (log_statement = all), statements of those sessions:
        [4016] no_pool: LOG:  statement: SET ROLE 'chaos_app'
        [4016] no_pool: LOG:  statement: SELECT current_user
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from typing import Any

import django
import psycopg
import psycopg_pool
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import connections

from chaos.postgres import PostgresServer

ROLE = "chaos_app"
#: Printed paths start at the package (the virtualenv prefix left out).
SITE = django.__file__.rsplit("django/", 1)[0]


def dump_pool_workers(after: float) -> threading.Timer:
    """After ``after`` s, print the stacks of psycopg_pool's worker threads (Django's frames):
    where the connection being configured waits."""

    def dump() -> None:
        frames = sys._current_frames()
        for thread in threading.enumerate():
            if "worker" not in thread.name or thread.ident not in frames:
                continue
            stack = traceback.extract_stack(frames[thread.ident])
            shown = [f for f in stack if "django" in f.filename or "getconn" in f.name]
            if any(f.name == "_configure_role" for f in shown):
                print(f"stack of the pool's {thread.name} at {after}s (Django frames, getconn):")
                for frame in shown:
                    where = frame.filename.split("site-packages/")[-1]
                    print(f"    {where}:{frame.lineno} {frame.name}: {frame.line}")
                return

    timer = threading.Timer(after, dump)
    timer.start()
    return timer


def request(alias: str) -> None:
    """One request in a thread of its own: its first query, as a view's would run."""

    def run() -> None:
        request_started.send(sender=None, environ={})
        started = time.monotonic()
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT current_user")
                print(f"{alias}: current_user = {cursor.fetchone()[0]}")
        except Exception as exc:
            print(
                f"{alias}: {type(exc).__module__}.{type(exc).__name__} after "
                f"{time.monotonic() - started:.1f}s; traceback:"
            )
            text = "".join(traceback.format_exception(exc)).rstrip()
            print(text.replace(SITE, ""))
        finally:
            request_finished.send(sender=None)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="log %(name)s %(levelname)s: %(message)s")
    with PostgresServer(settings={"log_statement": "all", "log_line_prefix": "[%p] %a: "}) as pg:
        pg.create_role(ROLE)
        base: dict[str, Any] = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "postgres",
            "USER": "postgres",
            "HOST": pg.host,
            "PORT": pg.port,
        }
        settings.configure(
            DATABASES={
                "default": {
                    **base,
                    "OPTIONS": {"assume_role": ROLE, "application_name": "no_pool"},
                },
                "pooled": {
                    **base,
                    "OPTIONS": {
                        "assume_role": ROLE,
                        "application_name": "pooled",
                        "pool": {"min_size": 1, "max_size": 2, "timeout": 3},
                    },
                },
            },
            INSTALLED_APPS=[],
        )
        django.setup()
        print(
            f"Django {django.get_version()}, psycopg {psycopg.__version__}, "
            f"psycopg_pool {psycopg_pool.__version__}, Postgres {pg.version}"
        )
        print('DATABASES["pooled"]["OPTIONS"] =', settings.DATABASES["pooled"]["OPTIONS"])
        request("default")
        dump_pool_workers(1.5)
        request("pooled")
        with pg.connect() as admin:
            rows = admin.execute(
                "SELECT pid, application_name, usename, state, query FROM pg_stat_activity "
                "WHERE application_name IN ('no_pool', 'pooled') ORDER BY pid"
            ).fetchall()
        print("pg_stat_activity (application_name no_pool / pooled):")
        for row in rows:
            print("   ", row)
        print("server log (log_statement = all), statements of those sessions:")
        for line in pg.log_path.read_text(errors="replace").splitlines():
            if ("no_pool:" in line or "pooled:" in line) and "statement:" in line:
                print("   ", line)
        connections["pooled"].close_pool()


if __name__ == "__main__":
    main()
