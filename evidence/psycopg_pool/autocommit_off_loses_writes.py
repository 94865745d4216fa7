"""A request that turns ``autocommit`` off and gives the connection back leaves it off:
the next request's writes run inside a transaction it never opened, and ``putconn``
rolls them back. psycopg_pool's and psycopg's own code only, no adapter.

A pool as an application using psycopg_pool directly builds it (``min_size = max_size
= 1``, ``kwargs={"autocommit": True}``: every statement commits on its own, the mode
the application is written for). Request 1 sets ``conn.autocommit = False`` (say, to
run a transaction by hand) and returns the connection without running anything:
the session is idle, so ``putconn`` has nothing to roll back and does not restore
the attribute (``_reset_connection`` in ``psycopg_pool/pool.py`` looks only at the
transaction status). Request 2 gets the same connection and runs ``INSERT``: psycopg
sends ``BEGIN`` first (autocommit is off), the ``INSERT`` succeeds, request 2 returns
the connection, and ``putconn`` finds it "in transaction" and rolls it back (the
warning "rolling back returned connection"). Request 2 was told its write succeeded;
the table is empty. The control run (request 1 leaves autocommit alone) keeps the row.
The server log (``log_statement = all``) shows what request 2's session ran.

No reset callback is configured: psycopg_pool's ``reset`` is opt-in, and a reset that
sets ``conn.autocommit = True`` avoids this. Django's pooled backend is not affected
(it sets autocommit at every checkout, see ``evidence/django/session_state_leaks.py``).

Run (from the repository root)::

    PYTHONPATH=src:. .tox/matrix/bin/python evidence/psycopg_pool/autocommit_off_loses_writes.py

Recorded output (psycopg 3.3.9, psycopg_pool 3.3.3, Postgres 15; 2026-12-06):

    psycopg 3.3.9, psycopg_pool 3.3.3, 15.18
    control (autocommit left on)
      request 2: same session True, autocommit True
      request 2: INSERT succeeded, session then IDLE
      pool warnings at request 2's putconn: []
      server log of that session: ['INSERT INTO t VALUES (1)']
      rows in t afterwards: 1
    request 1 sets autocommit=False
      request 2: same session True, autocommit False
      request 2: INSERT succeeded, session then INTRANS
      pool warnings at request 2's putconn: ['rolling back returned connection']
      server log of that session: ['BEGIN', 'INSERT INTO t VALUES (1)', 'ROLLBACK']
      rows in t afterwards: 0
"""

from __future__ import annotations

import logging

import psycopg
import psycopg_pool
from psycopg_pool import ConnectionPool

from chaos.postgres import PostgresServer


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().split(":", 1)[0])


def run(pg: PostgresServer, turn_off: bool) -> None:
    with pg.connect(autocommit=True) as admin:
        admin.execute("TRUNCATE t")
    warnings = Warnings()
    logging.getLogger("psycopg.pool").addHandler(warnings)
    offset = pg.log_path.stat().st_size
    with ConnectionPool(
        pg.conninfo(), min_size=1, max_size=1, kwargs={"autocommit": True}, open=True
    ) as pool:
        conn = pool.getconn()
        pid = conn.info.backend_pid
        if turn_off:
            conn.autocommit = False
        pool.putconn(conn)

        conn = pool.getconn()
        same = conn.info.backend_pid == pid
        autocommit = conn.autocommit
        conn.execute("INSERT INTO t VALUES (1)")
        answered = conn.info.transaction_status.name
        pool.putconn(conn)
    logging.getLogger("psycopg.pool").removeHandler(warnings)
    with pg.connect() as admin:
        rows = admin.execute("SELECT count(*) FROM t").fetchone()[0]
    log = pg.log_path.read_text(errors="replace")[offset:]
    statements = [
        line.split("statement: ", 1)[1]
        for line in log.splitlines()
        if f"[{pid}]" in line and "statement: " in line
    ]
    label = "request 1 sets autocommit=False" if turn_off else "control (autocommit left on)"
    print(label)
    print(f"  request 2: same session {same}, autocommit {autocommit}")
    print(f"  request 2: INSERT succeeded, session then {answered}")
    print(f"  pool warnings at request 2's putconn: {warnings.messages}")
    print(f"  server log of that session: {statements}")
    print(f"  rows in t afterwards: {rows}")


def main() -> None:
    with PostgresServer(settings={"log_statement": "all", "log_line_prefix": "[%p] "}) as pg:
        print(
            f"psycopg {psycopg.__version__}, psycopg_pool {psycopg_pool.__version__}, {pg.version}"
        )
        with pg.connect(autocommit=True) as admin:
            admin.execute("CREATE TABLE t (x int)")
        run(pg, turn_off=False)
        run(pg, turn_off=True)


if __name__ == "__main__":
    main()
