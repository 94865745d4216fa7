"""With persistent connections (``CONN_MAX_AGE`` > 0), a transaction a request opened
with a raw ``BEGIN`` and never ended outlives the request: ``request_finished`` keeps
the connection (``close_if_unusable_or_obsolete`` compares only Django's own autocommit
flag with ``AUTOCOMMIT``, and Django never saw the ``BEGIN``). What the thread's later
requests get, Django's own code only, no adapter:

- the session stays "idle in transaction" between requests (pg_stat_activity);
- request 2's autocommit ``INSERT`` through Django's cursor returns normally, inside that
  transaction: an acknowledged write that is never committed;
- request 3's ``transaction.atomic()`` fails (``set_autocommit(False)`` on a connection
  INTRANS: psycopg refuses), and so does every later ``atomic()`` on that thread while
  the connection lives (``is_usable()`` still answers, so the error does not drop it);
- when the connection is finally closed, everything is rolled back: the abandoned
  write (correct) and request 2's acknowledged one (lost).

With ``CONN_MAX_AGE = 0`` (or the pool: psycopg_pool rolls back at ``putconn``) the
transaction ends with the request. No Django ticket found for it.

Run: ``PYTHONPATH=src:. .tox/matrix/bin/python evidence/django/persistent_open_transaction.py``

Recorded output (Django 5.2.19, psycopg 3.3.9, Postgres 15; 2026-12-06):

    Django 5.2.19, Postgres 15.18, CONN_MAX_AGE 600
    after request 1, pg_stat_activity: [(10962, 'idle in transaction', "INSERT INTO ledger VALUES
        ('abandoned by")]
    request 2: INSERT returned normally (autocommit, as Django believes)
    after request 2, pg_stat_activity: [(10962, 'idle in transaction', "INSERT INTO ledger VALUES
        ('acknowledged")]
    request 3: atomic() -> django.db.utils.ProgrammingError: can't change 'autocommit' now:
        connection in transaction status INTRANS
    request 4: atomic() -> django.db.utils.ProgrammingError: can't change 'autocommit' now:
        connection in transaction status INTRANS
    committed rows after the connection closed: []
"""

from __future__ import annotations

import threading
from typing import Any

import django
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import connections, transaction

from chaos.postgres import PostgresServer

APP = "persistent_tx"


def activity(pg: PostgresServer) -> list[tuple[Any, ...]]:
    with pg.connect() as admin:
        return admin.execute(
            "SELECT pid, state, left(query, 40) FROM pg_stat_activity WHERE application_name = %s",
            [APP],
        ).fetchall()


def main() -> None:
    with PostgresServer() as pg:
        settings.configure(
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": "postgres",
                    "USER": "postgres",
                    "HOST": pg.host,
                    "PORT": pg.port,
                    "CONN_MAX_AGE": 600,
                    "CONN_HEALTH_CHECKS": True,
                    "OPTIONS": {"application_name": APP},
                }
            },
            INSTALLED_APPS=[],
        )
        django.setup()
        print(f"Django {django.get_version()}, Postgres {pg.version}, CONN_MAX_AGE 600")
        with pg.connect() as admin:
            admin.execute("CREATE TABLE ledger (note text)")

        def requests() -> None:  # one worker thread serving three requests
            db = connections["default"]
            request_started.send(sender=None, environ={})
            db.cursor().execute("BEGIN")
            db.cursor().execute("INSERT INTO ledger VALUES ('abandoned by request 1')")
            request_finished.send(sender=None)
            print("after request 1, pg_stat_activity:", activity(pg))

            request_started.send(sender=None, environ={})
            db.cursor().execute("INSERT INTO ledger VALUES ('acknowledged to request 2')")
            print("request 2: INSERT returned normally (autocommit, as Django believes)")
            request_finished.send(sender=None)
            print("after request 2, pg_stat_activity:", activity(pg))

            for number in (3, 4):
                request_started.send(sender=None, environ={})
                try:
                    with transaction.atomic():
                        db.cursor().execute(f"INSERT INTO ledger VALUES ('request {number}')")
                except Exception as exc:
                    print(
                        f"request {number}: atomic() -> {type(exc).__module__}."
                        f"{type(exc).__name__}: {exc}"
                    )
                request_finished.send(sender=None)
            db.close()  # the connection ends (CONN_MAX_AGE reached, or the worker exits)

        thread = threading.Thread(target=requests)
        thread.start()
        thread.join()
        with pg.connect() as admin:
            rows = admin.execute("SELECT note FROM ledger").fetchall()
        print("committed rows after the connection closed:", rows)


if __name__ == "__main__":
    main()
