"""SQLAlchemy resets ``postgresql_readonly`` to ``False``, not to the server's default: after
one read-only request, the connection begins every transaction ``READ WRITE``.

SQLAlchemy 2.1.9 undoes what a request set with ``execution_options(isolation_level=...,
postgresql_readonly=..., postgresql_deferrable=...)`` when the connection goes back
(``DefaultDialect._reset_characteristics``): isolation back to the level read at the
engine's first connect, ``read_only`` and ``deferrable`` to ``False``
(``PGReadOnlyConnectionCharacteristic.reset_characteristic``). A fresh psycopg connection
has ``None`` for all three (plain ``BEGIN``: the server's ``default_transaction_*``
apply); after the reset psycopg sends ``BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE
NOT DEFERRABLE`` or part of it, which overrides them. With a role the DBA made read-only
(``ALTER ROLE reader SET default_transaction_read_only = on``), a fresh connection cannot
write, yet the same connection after a request that asked for read-only can.

Run (from the repository root)::

    PYTHONPATH=src:. .tox/matrix/bin/python evidence/sqlalchemy/readonly_reset_pins_read_write.py

Output (2026-12-06)::

    sqlalchemy 2.1.9, psycopg 3.3.9, server 15.18
    fresh connection (pid 18094): INSERT refused: ReadOnlySqlTransaction
    request 1 (pid 18094): execution_options(postgresql_readonly=True), SELECT
    request 2 (pid 18094): read_only on the DBAPI connection = False; INSERT committed
    rows in t: 1
    what the server saw from that session (BEGINs):
      BEGIN
      BEGIN
      BEGIN
      BEGIN READ ONLY
      BEGIN READ WRITE

(The first two BEGINs are the dialect's first-connect queries, the third the fresh
connection's refused INSERT.)
"""

from __future__ import annotations

import re

import psycopg
import sqlalchemy
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import QueuePool

from chaos.postgres import PostgresServer


def main() -> None:
    with PostgresServer(settings={"log_statement": "all"}) as server:
        server.create_role("reader", login=True)
        with server.connect() as admin:
            admin.execute("ALTER ROLE reader SET default_transaction_read_only = on")
            admin.execute("CREATE TABLE t (x int)")
            admin.execute("GRANT ALL ON t TO reader")
        url = URL.create(
            "postgresql+psycopg",
            username="reader",
            host=server.host,
            port=server.port,
            database=server.dbname,
        )
        engine = create_engine(url, poolclass=QueuePool, pool_size=1, max_overflow=0)
        print(
            f"sqlalchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}, "
            f"server {server.version}"
        )
        with engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            conn.rollback()
            try:
                conn.exec_driver_sql("INSERT INTO t VALUES (1)")
                conn.commit()
                print(f"fresh connection (pid {pid}): INSERT committed")
            except sqlalchemy.exc.DBAPIError as exc:
                print(f"fresh connection (pid {pid}): INSERT refused: {type(exc.orig).__name__}")
        with engine.connect() as conn:  # a read-only report
            conn.execution_options(postgresql_readonly=True)
            conn.exec_driver_sql("SELECT count(*) FROM t").scalar()
            print(f"request 1 (pid {pid}): execution_options(postgresql_readonly=True), SELECT")
        with engine.connect() as conn:  # the next request
            dbapi = conn.connection.dbapi_connection
            read_only = dbapi.read_only
            try:
                conn.exec_driver_sql("INSERT INTO t VALUES (2)")
                conn.commit()
                outcome = "INSERT committed"
            except sqlalchemy.exc.DBAPIError as exc:
                outcome = f"INSERT refused: {type(exc.orig).__name__}"
            print(
                f"request 2 (pid {pid}): read_only on the DBAPI connection = {read_only}; "
                + outcome
            )
        engine.dispose()
        with server.connect() as admin:
            print(f"rows in t: {admin.execute('SELECT count(*) FROM t').fetchone()[0]}")
        log = server.log_path.read_text() if server.log_path else ""
        begins = re.findall(rf"\[{pid}\] [^\n]*statement: (BEGIN[^\n]*)", log)
        print("what the server saw from that session (BEGINs):")
        for sql in begins:
            print(f"  {sql.strip()}")


if __name__ == "__main__":
    main()
