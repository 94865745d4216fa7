"""After a runtime ``TIME_ZONE`` change, the pooled backend keeps handing out sessions in
the OLD zone when another thread's wrapper builds the new pool. Reachable only through
runtime settings changes (``override_settings`` / ``setting_changed``: tests, typically
multi-threaded ones such as LiveServerTestCase), never in a deployment whose settings do
not change. Django's own code only, no adapter.

Why (Django 5.2.19): ``setting_changed``'s receiver ``update_connections_time_zone``
(``django/test/signals.py``) walks ``connections.all(initialized_only=True)`` - the
CURRENT thread's wrappers - deletes their cached ``timezone``/``timezone_name`` and calls
``ensure_timezone()``, which closes the alias's pool. Another thread's wrapper still has
the old ``timezone_name`` cached; when that thread's next request finds no pool, its
``pool`` property builds one with ``configure=self._configure_connection``, bound to that
stale wrapper, so every connection of the new pool gets ``set_config('TimeZone', <old>)``.
If the changing thread never used the alias, nothing is closed at all and the existing
pool keeps its sessions in the old zone (part 2).

Pool of 1: thread W is a long-lived worker serving requests; the main thread changes
``TIME_ZONE`` (``USE_TZ = False``, so the session zone is ``TIME_ZONE``).

Run: ``PYTHONPATH=src:. .tox/matrix/bin/python evidence/django/timezone_change_other_thread.py``

Recorded output (Django 5.2.19, psycopg 3.3.9, psycopg_pool 3.3.3, Postgres 15;
2026-12-06):

    Django 5.2.19, Postgres 15.18

    1. the main thread used the database before changing TIME_ZONE:
    settings.TIME_ZONE = Europe/Paris
      worker request: session zone Europe/Paris (backend 8105)
      main request:   session zone Europe/Paris (backend 8105)
    settings.TIME_ZONE = America/New_York (changed in the main thread)
      worker request: session zone Europe/Paris (backend 8112)
      main request:   session zone Europe/Paris (backend 8112)
      server log since the change (log_statement = all), zone settings sent:
        LOG:  statement: SELECT set_config('TimeZone', 'Europe/Paris', false)

    2. the main thread never used that alias (only the worker did):
    settings.TIME_ZONE = Europe/Paris
      worker request: session zone Europe/Paris (backend 8118)
    settings.TIME_ZONE = America/New_York (changed in the main thread)
      worker request: session zone Europe/Paris (backend 8118)
      server log since the change (log_statement = all), zone settings sent:
        (none)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import django
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import connections
from django.test import override_settings

from chaos.postgres import PostgresServer


class Worker:
    """A long-lived thread serving one request at a time (as a threaded WSGI server's)."""

    def __init__(self) -> None:
        self.jobs: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self.results: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            self.results.put(job())

    def call(self, job: Callable[[], Any]) -> Any:
        self.jobs.put(job)
        return self.results.get()


def request(alias: str) -> str:
    """A request: its first query reads the session's zone."""
    request_started.send(sender=None, environ={})
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT current_setting('TimeZone'), pg_backend_pid()")
            zone, pid = cursor.fetchone()
        return f"session zone {zone} (backend {pid})"
    finally:
        request_finished.send(sender=None)


def set_config_lines(pg: PostgresServer, offset: int) -> list[str]:
    text = pg.log_path.read_text(errors="replace")[offset:]
    return [line.split("] ", 1)[1] for line in text.splitlines() if "set_config" in line]


def part(pg: PostgresServer, alias: str, main_used_db: bool) -> None:
    worker = Worker()
    print(f"settings.TIME_ZONE = {settings.TIME_ZONE}")
    print("  worker request:", worker.call(lambda: request(alias)))
    if main_used_db:
        print("  main request:  ", request(alias))
    offset = pg.log_path.stat().st_size
    override = override_settings(TIME_ZONE="America/New_York")
    override.enable()  # in the main thread
    try:
        print(f"settings.TIME_ZONE = {settings.TIME_ZONE} (changed in the main thread)")
        print("  worker request:", worker.call(lambda: request(alias)))
        if main_used_db:
            print("  main request:  ", request(alias))
        print("  server log since the change (log_statement = all), zone settings sent:")
        for line in set_config_lines(pg, offset) or ["(none)"]:
            print("   ", line)
    finally:
        override.disable()
        worker.call(lambda: connections[alias].close_pool())
        worker.jobs.put(None)


def main() -> None:
    with PostgresServer(settings={"log_statement": "all", "log_line_prefix": "[%p] "}) as pg:
        pooled = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "postgres",
            "USER": "postgres",
            "HOST": pg.host,
            "PORT": pg.port,
            "OPTIONS": {"pool": {"min_size": 1, "max_size": 1}},
        }
        settings.configure(
            DATABASES={"default": pooled, "other": dict(pooled)},
            INSTALLED_APPS=[],
            USE_TZ=False,
            TIME_ZONE="Europe/Paris",
        )
        django.setup()
        print(f"Django {django.get_version()}, Postgres {pg.version}")
        print("\n1. the main thread used the database before changing TIME_ZONE:")
        part(pg, "default", main_used_db=True)
        print("\n2. the main thread never used that alias (only the worker did):")
        part(pg, "other", main_used_db=False)


if __name__ == "__main__":
    main()
