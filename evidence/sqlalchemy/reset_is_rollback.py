"""SQLAlchemy's reset on return is a ROLLBACK: committed session state reaches the next request.

SQLAlchemy 2.1.9, psycopg 3.3.9, PostgreSQL 15. ``create_engine(..., poolclass=QueuePool,
pool_size=1, max_overflow=0, pool_pre_ping=True, pool_reset_on_return="rollback")``; two
requests, each ``engine.connect()`` ... ``conn.close()``. The first commits session state
(commit as you go) and leaves one more ``SET`` uncommitted; the second reads the session.

What SQLAlchemy sends when the connection goes back (``_ConnectionFairy._reset`` ->
``dialect.do_rollback`` -> psycopg ``rollback()``): ``ROLLBACK`` when a transaction is open,
nothing otherwise; at the next checkout the pre-ping (``;``). No ``DISCARD``, ``RESET``,
``UNLISTEN`` or ``DEALLOCATE``: SQLAlchemy's PostgreSQL docs say so ("Temporary Table /
Resource Reset for Connection Pooling") and offer a ``reset`` event recipe instead (which
undoes itself with psycopg: reset_recipe_undoes_itself.py). Upstream: the maintainers'
position that the reset is a ROLLBACK by design, sqlalchemy/sqlalchemy#8693.

Run: ``PYTHONPATH=src:. .tox/matrix/bin/python evidence/sqlalchemy/reset_is_rollback.py``

Output (2026-12-06)::

    sqlalchemy 2.1.9, psycopg 3.3.9, server 15.18
    request 1: backend pid 16520
    request 2: backend pid 16520 (same session)
      current_user          chaos_app        (session_user postgres)
      work_mem              8MB              (committed SET)
      statement_timeout     0                (uncommitted SET: rolled back)
      temp tables           ['leftover']
      advisory locks        ['4242']
      listening             ['chan']
      prepared statements   ['stmt']
      cursors               ['cur']
    what the server saw from that session after request 1's COMMIT:
      BEGIN
      SET statement_timeout TO '1234ms'
      ROLLBACK
      ;
      BEGIN
      SELECT pg_backend_pid(), current_user::text, session_user::text, curre
      ROLLBACK

The ``ROLLBACK`` after request 1 is the whole reset (the ``;`` is request 2's pre-ping):
everything committed before it - the SET, SET ROLE, the temp table, the session advisory
lock, LISTEN, PREPARE, the WITH HOLD cursor - is request 2's. Only the uncommitted SET
went away, with its transaction.
"""

from __future__ import annotations

import re

import psycopg
import sqlalchemy
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import QueuePool

from chaos.postgres import PostgresServer

STATE_SQL = """
SELECT pg_backend_pid(), current_user::text, session_user::text,
       current_setting('work_mem'), current_setting('statement_timeout'),
       ARRAY(SELECT relname::text FROM pg_class WHERE relnamespace = pg_my_temp_schema()),
       ARRAY(SELECT objid::text FROM pg_locks
             WHERE pid = pg_backend_pid() AND locktype = 'advisory'),
       ARRAY(SELECT pg_listening_channels()),
       ARRAY(SELECT name::text FROM pg_prepared_statements),
       ARRAY(SELECT name::text FROM pg_cursors)
"""


def main() -> None:
    with PostgresServer(settings={"log_statement": "all"}) as server:
        server.create_role("chaos_app")
        url = URL.create(
            "postgresql+psycopg",
            username=server.superuser,
            host=server.host,
            port=server.port,
            database=server.dbname,
        )
        engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=True,
            pool_reset_on_return="rollback",
        )
        print(
            f"sqlalchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}, "
            f"server {server.version}"
        )
        with engine.connect() as conn:  # request 1
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            for sql in (
                "SET work_mem TO '8MB'",
                "SET ROLE chaos_app",
                "CREATE TEMP TABLE leftover (x int)",
                "SELECT pg_advisory_lock(4242)",
                "LISTEN chan",
                "PREPARE stmt AS SELECT 1",
                "DECLARE cur CURSOR WITH HOLD FOR SELECT 1",
            ):
                conn.exec_driver_sql(sql)
            conn.commit()
            conn.exec_driver_sql("SET statement_timeout TO '1234ms'")  # never committed
        print(f"request 1: backend pid {pid}")
        with engine.connect() as conn:  # request 2
            row = conn.exec_driver_sql(STATE_SQL).one()
        engine.dispose()
        same = "same session" if row[0] == pid else "ANOTHER session"
        print(f"request 2: backend pid {row[0]} ({same})")
        print(f"  current_user          {row[1]:<16} (session_user {row[2]})")
        print(f"  work_mem              {row[3]:<16} (committed SET)")
        print(f"  statement_timeout     {row[4]:<16} (uncommitted SET: rolled back)")
        for label, value in zip(
            ("temp tables", "advisory locks", "listening", "prepared statements", "cursors"),
            row[5:],
            strict=True,
        ):
            print(f"  {label:<21} {value}")
        log = server.log_path.read_text() if server.log_path else ""
        entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", log)
        statements = [
            " ".join(e.split("statement: ", 1)[1].split())
            for e in entries
            if f"[{pid}]" in e and "statement: " in e
        ]
        after = statements[statements.index("COMMIT") + 1 :]
        print("what the server saw from that session after request 1's COMMIT:")
        for sql in after:
            print(f"  {sql[:70]}")


if __name__ == "__main__":
    main()
