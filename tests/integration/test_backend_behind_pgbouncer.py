"""plain_pool behind PgBouncer transaction mode: what its reset restores there.

Through a transaction pooler the server session's startup packet is the pooler's, so
``DISCARD ALL`` goes back to the pooler's values, not the app's, and PgBouncer records
the reset values as the client's own (evidence/pgbouncer/hybrid_plain_pool_application_name.py).
The checkout must read what the session reports after the reset and configure what differs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from psycopg_pool import PoolTimeout

from chaos.faults import Nemesis
from chaos.faults.network import HalfOpen
from chaos.pgbouncer import LOGIN_ROLE
from plain_pool import DatabaseWrapper, pools

APP = "behind-pgbouncer"


@pytest.fixture
def bouncer(pgbouncer_factory: Any, postgres: Any) -> Any:
    return pgbouncer_factory(postgres, pool_mode="transaction", pool_size=1)


def _settings(bouncer: Any, **extra: Any) -> dict[str, Any]:
    return {
        "POSTGRES_HOST": bouncer.host,
        "POSTGRES_PORT": bouncer.port,
        "POSTGRES_DATABASE": bouncer.dbname,
        "POSTGRES_USER": LOGIN_ROLE,
        "POSTGRES_PASSWORD": bouncer.connect_kwargs()["password"],
        "POSTGRES_OPTIONS": {"application_name": APP},
        "POSTGRES_POOL": {"min_size": 1, "max_size": 1},
        **extra,
    }


def _two_requests(settings: dict[str, Any], dirt: str, probe: str) -> tuple[Any, Any]:
    db = DatabaseWrapper(settings, alias="behind-pgbouncer")
    try:
        before = db.cursor().execute(probe).fetchone()
        db.cursor().execute(dirt)
        db.close()  # back to the pool: DISCARD ALL through PgBouncer
        after = db.cursor().execute(probe).fetchone()
        db.close()
        return before, after
    finally:
        db.close()
        pools.close_all()


def test_the_application_name_survives_the_reset(bouncer: Any) -> None:
    probe = "SELECT current_setting('application_name')"
    before, after = _two_requests(_settings(bouncer), "SET work_mem = '8MB'", probe)
    assert before == after == (APP,)


def test_the_zone_survives_the_reset_when_the_pooler_drops_startup_options(bouncer: Any) -> None:
    """PgBouncer 1.18 ignores ``options`` (``-c TimeZone=...``): the zone comes from SET."""
    settings = _settings(bouncer, TIME_ZONE="Asia/Kathmandu", USE_TZ=False)
    before, after = _two_requests(settings, "SET TIME ZONE 'America/Lima'", "SHOW TimeZone")
    assert before == after == ("Asia/Kathmandu",)


def test_a_half_open_server_hop_ends_the_checkout_in_the_pools_timeout(
    pgbouncer_factory: Any, postgres: Any, tcp_proxy_factory: Any, caplog: Any
) -> None:
    """Behind PgBouncer every checkout SETs the zone again (the reset went back to the
    server's), so that statement must give up at the checkout's deadline: it waited for
    CONFIGURE_TIMEOUT (2 s) past a pool timeout of 1 s before."""
    caplog.set_level(logging.INFO, logger="plain_pool")
    server_hop = tcp_proxy_factory(postgres.host, postgres.port)
    bouncer = pgbouncer_factory(
        postgres,
        pool_mode="transaction",
        pool_size=1,
        server_host=server_hop.listen_host,
        server_port=server_hop.listen_port,
    )
    timeout = 1.0
    settings = _settings(
        bouncer,
        TIME_ZONE="Asia/Kathmandu",
        USE_TZ=False,
        POSTGRES_POOL={"min_size": 1, "max_size": 1, "timeout": timeout},
    )
    db = DatabaseWrapper(settings, alias="behind-pgbouncer-half-open")
    nemesis = Nemesis(server_hop, None)
    try:
        db.cursor().execute("SELECT 1")
        db.close()  # DISCARD ALL sent: the next checkout reads it, then SETs the zone
        _wait_until_idle(bouncer)  # the reset's answer is in: only the SET meets the fault
        nemesis.apply(HalfOpen())
        started = time.monotonic()
        with pytest.raises(PoolTimeout):
            db.cursor()
        took = time.monotonic() - started
    finally:
        nemesis.heal_all()
        db.close()
        pools.close_all()
    assert took < timeout + 0.5, f"the checkout took {took:.2f} s (pool timeout {timeout} s)"
    assert "no answer to the session configuration" in caplog.text  # the SET is what timed out


def _wait_until_idle(bouncer: Any, within: float = 5.0) -> None:
    """Until PgBouncer links no server connection to a client (``SHOW POOLS``): the
    ``DISCARD ALL`` sent on return has been answered and passed on."""
    give_up = time.monotonic() + within
    while True:
        pools = [p for p in bouncer.show("pools") if p["database"] != "pgbouncer"]
        if not any(int(p["sv_active"]) or int(p["cl_waiting"]) for p in pools):
            return
        assert time.monotonic() < give_up, f"PgBouncer still busy after {within} s: {pools}"
        time.sleep(0.005)
