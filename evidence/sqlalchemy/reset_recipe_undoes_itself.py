"""The ``reset`` event recipe in SQLAlchemy's PostgreSQL docs undoes itself with psycopg 3:
its own ``rollback()`` reverts the ``RESET ALL`` and ``DISCARD TEMP`` it just ran.

SQLAlchemy 2.1.9 ("Temporary Table / Resource Reset for Connection Pooling" in
``dialects/postgresql/base.py``) suggests ``pool_reset_on_return=None`` and::

    @event.listens_for(postgresql_engine, "reset")
    def _reset_postgresql(dbapi_connection, connection_record, reset_state):
        if not reset_state.terminate_only:
            dbapi_connection.execute("CLOSE ALL")
            dbapi_connection.execute("RESET ALL")
            dbapi_connection.execute("DISCARD TEMP")
        dbapi_connection.rollback()

The DBAPI connection is not in autocommit, so psycopg opens a transaction (``BEGIN``)
before ``CLOSE ALL``; ``RESET ALL`` and ``DISCARD TEMP`` are transactional in PostgreSQL
and the recipe's final ``rollback()`` reverts them. Only ``CLOSE ALL`` sticks. The next
request gets the committed ``SET`` and the temp table as if there were no recipe. (The
same holds for psycopg2, which begins implicitly too.) Running the three statements with
autocommit switched on around them, as the docs' own ``connect`` recipe for
``search_path`` does, would make them stick. No upstream ticket found; the maintainers'
position that the default reset is a ROLLBACK by design is in sqlalchemy/sqlalchemy#8693.

Run (from the repository root)::

    PYTHONPATH=src:. .tox/matrix/bin/python evidence/sqlalchemy/reset_recipe_undoes_itself.py

Output (2026-12-06)::

    sqlalchemy 2.1.9, psycopg 3.3.9, server 15.18
    request 2 on pid 19922 (same session):
      work_mem 8MB (RESET ALL reverted), temp tables ['leftover'] (DISCARD TEMP
      reverted), cursors [] (CLOSE ALL stuck)
    what the server saw after request 1's COMMIT:
      BEGIN
      CLOSE ALL
      RESET ALL
      DISCARD TEMP
      ROLLBACK
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import sqlalchemy
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.pool import QueuePool

from chaos.postgres import PostgresServer


def main() -> None:
    with PostgresServer(settings={"log_statement": "all"}) as server:
        url = URL.create(
            "postgresql+psycopg",
            username=server.superuser,
            host=server.host,
            port=server.port,
            database=server.dbname,
        )
        engine = create_engine(
            url, poolclass=QueuePool, pool_size=1, max_overflow=0, pool_reset_on_return=None
        )

        @event.listens_for(engine, "reset")
        def _reset_postgresql(dbapi_connection: Any, connection_record: Any, reset_state: Any):
            if not reset_state.terminate_only:
                dbapi_connection.execute("CLOSE ALL")
                dbapi_connection.execute("RESET ALL")
                dbapi_connection.execute("DISCARD TEMP")
            dbapi_connection.rollback()

        print(
            f"sqlalchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}, "
            f"server {server.version}"
        )
        with engine.connect() as conn:  # request 1
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            conn.exec_driver_sql("SET work_mem TO '8MB'")
            conn.exec_driver_sql("CREATE TEMP TABLE leftover (x int)")
            conn.exec_driver_sql("DECLARE cur CURSOR WITH HOLD FOR SELECT 1")
            conn.commit()
        with engine.connect() as conn:  # request 2
            row = conn.exec_driver_sql(
                "SELECT pg_backend_pid(), current_setting('work_mem'),"
                " ARRAY(SELECT relname::text FROM pg_class"
                "       WHERE relnamespace = pg_my_temp_schema()),"
                " ARRAY(SELECT name::text FROM pg_cursors)"
            ).one()
        engine.dispose()
        same = "same session" if row[0] == pid else "ANOTHER session"
        print(f"request 2 on pid {row[0]} ({same}):")
        print(f"  work_mem {row[1]} (RESET ALL reverted), temp tables {row[2]} (DISCARD TEMP")
        print(f"  reverted), cursors {row[3]} (CLOSE ALL stuck)")
        log = server.log_path.read_text() if server.log_path else ""
        entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", log)
        statements = [
            " ".join(e.split("statement: ", 1)[1].split())
            for e in entries
            if f"[{pid}]" in e and "statement: " in e
        ]
        after = statements[statements.index("COMMIT") + 1 :]
        print("what the server saw after request 1's COMMIT:")
        for sql in after[:5]:
            print(f"  {sql[:70]}")


if __name__ == "__main__":
    main()
