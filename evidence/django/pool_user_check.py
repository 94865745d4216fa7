"""A ``check`` in ``OPTIONS["pool"]`` raises ``TypeError`` at the first query: Django's
backend always passes its own ``check=`` to ``psycopg_pool.ConnectionPool`` and then
unpacks ``**pool_options`` on top. Django ticket #37075
(https://code.djangoproject.com/ticket/37075), still in 5.2.19. So a user cannot install
their own pool check (psycopg_pool's documented way to validate connections) with
Django's pool; ``CONN_HEALTH_CHECKS`` only chooses between ``check_connection`` and none.
No server session is opened (pg_stat_activity below).

Run: ``PYTHONPATH=src:. .tox/matrix/bin/python evidence/django/pool_user_check.py``

Recorded output (Django 5.2.19, psycopg 3.3.9, psycopg_pool 3.3.3, Postgres 15;
2026-12-06):

    Django 5.2.19, psycopg_pool 3.3.3
    OPTIONS: {'application_name': 'user_check', 'pool': {'min_size': 1, 'max_size': 1, 'check':
        <function my_check at 0x7fd4c73b84a0>}}
    Traceback (most recent call last):
      File "evidence/django/pool_user_check.py", line 56, in main
        connections["default"].cursor()
      File "django/utils/asyncio.py", line 26, in inner
        return func(*args, **kwargs)
               ^^^^^^^^^^^^^^^^^^^^^
      File "django/db/backends/base/base.py", line 320, in cursor
        return self._cursor()
               ^^^^^^^^^^^^^^
      File "django/db/backends/base/base.py", line 295, in _cursor
        self.close_if_health_check_failed()
      File "django/db/backends/postgresql/base.py", line 498, in close_if_health_check_failed
        if self.pool:
           ^^^^^^^^^
      File "django/db/backends/postgresql/base.py", line 210, in pool
        pool = ConnectionPool(
               ^^^^^^^^^^^^^^^
    TypeError: psycopg_pool.pool.ConnectionPool() got multiple values for keyword argument 'check'
    pg_stat_activity sessions with application_name 'user_check': 0
"""

from __future__ import annotations

import traceback

import django
import psycopg_pool
from django.conf import settings
from django.db import connections

from chaos.postgres import PostgresServer


def my_check(conn: object) -> None:
    """What a user's check would do (never called)."""


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
                    "CONN_HEALTH_CHECKS": False,
                    "OPTIONS": {
                        "application_name": "user_check",
                        "pool": {"min_size": 1, "max_size": 1, "check": my_check},
                    },
                }
            },
            INSTALLED_APPS=[],
        )
        django.setup()
        print(f"Django {django.get_version()}, psycopg_pool {psycopg_pool.__version__}")
        print("OPTIONS:", settings.DATABASES["default"]["OPTIONS"])
        try:
            connections["default"].cursor()
        except TypeError as exc:
            site = django.__file__.rsplit("django/", 1)[0]
            print("".join(traceback.format_exception(exc)).rstrip().replace(site, ""))
        with pg.connect() as admin:
            count = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'user_check'"
            ).fetchone()[0]
        print(f"pg_stat_activity sessions with application_name 'user_check': {count}")


if __name__ == "__main__":
    main()
