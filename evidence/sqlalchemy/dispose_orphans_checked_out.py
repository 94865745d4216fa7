"""``engine.dispose()`` does not close a connection that is checked out; given back later, its
server session stays open until Python's cyclic garbage collector frees the old pool.

SQLAlchemy 2.1.9 documents it (``Engine.dispose``: connections still checked out "will not
be closed ... when they are closed individually, eventually the Pool which they are
associated with will be garbage collected and they will be closed out fully"). The old
QueuePool and its connection records reference each other, so reference counting never
frees them: the session lives until a full ``gc`` collection. A service that replaces its
engine (a settings change, ``dispose()`` after a fork or a failover) while requests are
running keeps those sessions on the server, idle, counted against ``max_connections``.

Run: ``PYTHONPATH=src:. .tox/matrix/bin/python evidence/sqlalchemy/dispose_orphans_checked_out.py``

Output (2026-12-06)::

    sqlalchemy 2.1.9, psycopg 3.3.9, server 15.18
    sessions of 'svc' while a request holds one:       1
    after engine.dispose() (still held):               1
    after the request's conn.close():                  1
    1 s later:                                         1
    3 s later:                                         1
    gc.collect() freed 50 objects; sessions now:       0
"""

from __future__ import annotations

import gc
import time

import psycopg
import sqlalchemy
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import QueuePool

from chaos.postgres import PostgresServer


def main() -> None:
    with PostgresServer() as server:
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
            pool_size=2,
            max_overflow=0,
            connect_args={"application_name": "svc"},
        )
        print(
            f"sqlalchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}, "
            f"server {server.version}"
        )
        with server.connect() as admin:

            def sessions() -> int:
                sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'svc'"
                return int(admin.execute(sql).fetchone()[0])

            conn = engine.connect()
            conn.exec_driver_sql("SELECT 1").all()
            print(f"{'sessions of ' + repr('svc') + ' while a request holds one:':<51}{sessions()}")
            engine.dispose()
            print(f"{'after engine.dispose() (still held):':<51}{sessions()}")
            conn.close()
            del conn
            time.sleep(0.2)
            print(f"{'after the request' + chr(39) + 's conn.close():':<51}{sessions()}")
            time.sleep(1.0)
            print(f"{'1 s later:':<51}{sessions()}")
            time.sleep(2.0)
            print(f"{'3 s later:':<51}{sessions()}")
            freed = gc.collect()
            time.sleep(0.2)
            print(f"{f'gc.collect() freed {freed} objects; sessions now:':<51}{sessions()}")


if __name__ == "__main__":
    main()
