"""The fault catalogue does what each fault says, and heal restores service.

Plain psycopg connections (not the pool) through the test's Toxiproxy proxy,
with the chaos-safe connect options. Network faults use the shared session
server; server faults use a server of the test's own (``private_faults``).
Timing: a lower bound is what the fault promises (a latency of L cannot answer
sooner); an upper bound allows ``SLACK`` on top, to tell "bounded" from "hung" on
a busy two-core machine. "Applied or not" is told by such lower bounds, never by
comparing with an unfaulted run (that one can stall too).
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import psycopg
import pytest
from hypothesis import given
from psycopg_pool import PoolTimeout

from chaos import faults as catalogue
from chaos.faults import (
    CATALOGUE,
    Crash,
    Down,
    Effects,
    Fault,
    FaultConflict,
    FaultNotAllowed,
    HalfOpen,
    HealError,
    Latency,
    Nemesis,
    Outage,
    Outcome,
    RestartFast,
    UnknownFault,
    classify,
    explained,
    make,
    query_deadline,
)
from chaos.faults.strategies import faults as fault_strategy

# -- helpers -------------------------------------------------------------------------------

SLACK = 2.0  # seconds an upper bound allows past what the fault promises


def round_trips_ms(conn: psycopg.Connection[Any], n: int = 5) -> list[float]:
    """Milliseconds of each of ``n`` ``select 1`` on ``conn`` (one round trip each)."""
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        conn.execute("select 1").fetchone()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def assert_works(nemesis: Nemesis) -> None:
    """A new connection through the proxy answers a query."""
    with nemesis.connect() as conn:
        assert conn.execute("select 42").fetchone() == (42,)


def assert_broken(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.OperationalError):
        conn.execute("select 1").fetchone()


# -- the catalogue itself (no servers) ------------------------------------------------------


def test_every_fault_has_a_valid_python_repr_and_a_catalogue_name() -> None:
    for name, cls in CATALOGUE.items():
        fault = cls()
        assert fault.name == name
        assert eval(repr(fault), vars(catalogue)) == fault
        assert make(name) == fault
        assert isinstance(fault.effects, Effects)
        hash(fault)  # usable in sets and as Hypothesis model state
    assert repr(Latency(200, jitter=20)) == "Latency(ms=200, jitter=20)"
    assert make("stop") == Outage()  # alias


def test_unknown_fault_names_itself_and_the_catalogue() -> None:
    with pytest.raises(UnknownFault, match=r"unknown fault 'partition'.*latency"):
        make("partition")


@pytest.mark.parametrize(
    "build",
    [
        lambda: Latency(ms=1.5),
        lambda: Latency(ms=-1),
        lambda: Latency(stream="sideways"),
        lambda: make("slicer", average_size=4, size_variation=4),
        lambda: make("timed_close", timeout=0),
        lambda: make("outage", mode="smart"),
    ],
)
def test_bad_parameters_fail_at_construction(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


@given(fault_strategy(server=True, blocking=True))
def test_drawn_faults_round_trip_through_repr(fault: Fault) -> None:
    assert eval(repr(fault), vars(catalogue)) == fault


def test_outcomes_follow_the_effects() -> None:
    lost = psycopg.OperationalError("server closed the connection unexpectedly")
    canceled = psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
    assert classify(None, wrote=True) is Outcome.OK
    assert classify(lost, wrote=True) is Outcome.INFO
    assert classify(lost, wrote=False) is Outcome.FAIL
    assert classify(canceled, wrote=True) is Outcome.FAIL
    assert classify(PoolTimeout("no connection"), wrote=True) is Outcome.FAIL
    assert explained(lost, Down().effects)
    assert not explained(lost, Latency().effects)
    assert explained(PoolTimeout("slow"), Latency().effects)
    assert not explained(ValueError("bug"), Down().effects | HalfOpen().effects)


# -- network faults through the proxy --------------------------------------------------------


def test_latency_adds_to_each_round_trip_and_heal_removes_it(faults: Nemesis) -> None:
    """Each round trip takes at least the latency; healed, a typical one is far quicker.

    While either fault applies no round trip can take under 95 ms, so a median under
    50 ms after the heal proves it gone.
    """
    with faults.connect() as conn:
        with faults.latency(100, jitter=5):
            slowed = round_trips_ms(conn)
        with faults.latency(50, stream="both"):  # one per direction: 100 ms a round trip
            both = round_trips_ms(conn)
        healed = round_trips_ms(conn)
    assert min(slowed) >= 95 - 0.5, slowed
    assert statistics.median(slowed) < 105 + SLACK * 1000, slowed
    assert min(both) >= 100 - 0.5, both
    assert statistics.median(both) < 100 + SLACK * 1000, both
    assert statistics.median(healed) < 50, healed
    assert faults.active == []


def test_reset_peer_breaks_the_connection_and_heal_restores(faults: Nemesis) -> None:
    """The open connection is closed at its next query (EOF); a new one is reset (RST)."""
    with faults.connect() as conn, faults.reset_peer():
        assert_broken(conn)
        with pytest.raises(psycopg.OperationalError):
            faults.connect().close()
    assert_works(faults)


def test_down_refuses_new_connections_and_breaks_open_ones(faults: Nemesis) -> None:
    conn = faults.connect()
    with faults.down():
        assert_broken(conn)
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            faults.connect(connect_timeout=10).close()
        assert time.monotonic() - started < 5.0  # refused, not timed out (that takes > 9 s)
    conn.close()
    assert_works(faults)


def test_down_twice_stays_down_until_the_last_heal(faults: Nemesis) -> None:
    first, second = faults.down(), faults.down()
    first.heal()
    with pytest.raises(psycopg.OperationalError):
        faults.connect().close()
    second.heal()
    assert_works(faults)


def test_limit_data_cuts_the_connection_after_n_bytes(faults: Nemesis) -> None:
    with faults.connect() as conn, faults.limit_data(2000):
        assert conn.execute("select 1").fetchone() == (1,)  # well under the limit
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select repeat('x', 5000)").fetchone()  # crosses it
    with faults.limit_data(50), pytest.raises(psycopg.OperationalError):
        faults.connect().close()  # the start-up answer alone is larger than 50 bytes
    assert_works(faults)


def test_slicer_still_delivers_everything(faults: Nemesis) -> None:
    with (
        faults.slicer(average_size=8, size_variation=4, delay_us=20, stream="both"),
        faults.connect() as conn,
    ):
        row = conn.execute("select repeat('ab', 2000), 7").fetchone()
    assert row == ("ab" * 2000, 7)


def test_bandwidth_slows_a_bulk_query(faults: Nemesis) -> None:
    """200 kB at 500 kB/s cannot arrive in under 0.4 s: the rate is a ceiling.

    Unthrottled the query takes milliseconds (an unapplied toxic fails the bound unless
    the machine stalls 0.4 s); no comparison with an unthrottled run, which can stall too.
    """
    query = "select repeat('x', 200000)"
    with faults.connect() as conn, faults.bandwidth(500):
        started = time.monotonic()
        assert len(conn.execute(query).fetchone()[0]) == 200000
        slow = time.monotonic() - started
    assert 0.4 - 0.001 <= slow < 0.4 + SLACK, slow


def test_slow_close_lets_data_through(faults: Nemesis) -> None:
    with faults.slow_close(300), faults.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert_works(faults)


def test_timed_close_drops_data_then_closes(faults: Nemesis) -> None:
    with faults.connect() as conn, faults.timed_close(300):
        started = time.monotonic()
        assert_broken(conn)
        assert time.monotonic() - started < 0.3 + SLACK
    assert_works(faults)


@pytest.mark.slow
def test_half_open_new_connection_is_bounded_by_connect_timeout(faults: Nemesis) -> None:
    with faults.half_open():
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            faults.connect(connect_timeout=2).close()
        elapsed = time.monotonic() - started
    # libpq before 17 counts whole seconds: a 2 s connect_timeout may end after just over 1 s.
    assert 1.0 <= elapsed < 2.0 + SLACK, elapsed
    assert_works(faults)


@pytest.mark.slow
def test_half_open_query_hangs_past_tcp_timeouts_and_needs_a_client_deadline(
    faults: Nemesis,
) -> None:
    """Keepalives and tcp_user_timeout do not end a query stuck behind a proxy black hole.

    The client's TCP peer is the proxy, which keeps acknowledging, so neither
    fires; a connection without a client-side deadline waits until the toxic
    goes (Toxiproxy then closes it). With :func:`query_deadline` the wait is
    bounded. (Without any of this a query would wait forever: not tried here.)
    """
    tight = {"keepalives_idle": 1, "keepalives_interval": 1, "keepalives_count": 1}
    hung = faults.connect(tcp_user_timeout=500, **tight)
    guarded = faults.connect(tcp_user_timeout=500, **tight)
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            hung.execute("select 1").fetchone()
            outcome["error"] = None
        except BaseException as exc:
            outcome["error"] = exc

    fault = faults.half_open()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started = time.monotonic()
    with query_deadline(guarded, 1.0) as fired, pytest.raises(psycopg.OperationalError):
        guarded.execute("select 1").fetchone()
    assert fired.is_set()
    assert 1.0 - 0.01 <= time.monotonic() - started < 1.0 + SLACK
    thread.join(2.5 - (time.monotonic() - started))  # well past keepalive + tcp_user_timeout
    assert thread.is_alive(), "the unguarded query should still be waiting"
    fault.heal()  # removing the timeout toxic closes the connection it held
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(outcome["error"], psycopg.OperationalError)
    hung.close()
    guarded.close()
    assert_works(faults)


# -- the nemesis: heal, journal, permissions ---------------------------------------------------


def test_heal_is_idempotent_and_the_schedule_records_everything(faults: Nemesis) -> None:
    fault = Latency(ms=30, stream="both")
    handle = faults.apply(fault)
    assert len(faults.toxic_names()) == 2
    handle.heal()
    handle.heal()
    faults.heal(fault)  # not active any more: nothing to do
    faults.apply(Down())
    faults.heal(Down())  # by description: the latest active one equal to it
    assert faults.active == []
    assert faults.toxic_names() == []
    assert_works(faults)
    actions = [(e.action, e.fault) for e in faults.schedule.events]
    assert actions == [("apply", fault), ("heal", fault), ("apply", Down()), ("heal", Down())]
    text = faults.schedule.format()
    assert "Latency(ms=30, stream='both')" in text and "Down()" in text
    assert [i.end is not None for i in faults.schedule.intervals()] == [True, True]


class _BrokenHeal(Fault):
    """A fault whose heal fails while ``failing`` is set (not in the catalogue)."""

    name = "broken_heal_for_test"
    failing = threading.Event()

    def apply(self, target: Any, key: str) -> None:
        target.require_proxy()

    def heal(self, target: Any, key: str) -> None:
        if self.failing.is_set():
            raise RuntimeError("cannot heal")


def test_heal_all_heals_everything_then_raises_once(faults: Nemesis) -> None:
    faults.latency(20)
    broken = faults.apply(_BrokenHeal())
    faults.down()
    _BrokenHeal.failing.set()
    try:
        with pytest.raises(HealError, match="cannot heal") as info:
            faults.heal_all()
    finally:
        _BrokenHeal.failing.clear()
    assert [active for active, _ in info.value.errors] == [broken]
    assert faults.toxic_names() == []
    assert_works(faults)  # down and latency were healed around the failing heal
    assert faults.active == [broken]  # still active: a later heal_all retries it
    faults.heal_all()
    assert faults.active == []
    assert [e.action for e in faults.schedule.events].count("heal-failed") == 1


def test_server_faults_on_the_shared_server_need_a_marker(faults: Nemesis) -> None:
    with pytest.raises(FaultNotAllowed, match="private_faults"):
        faults.restart_fast()
    assert faults.schedule.events == []  # refused before touching anything


@pytest.mark.needs_server_control
def test_marked_tests_may_use_server_faults_on_the_shared_server(faults: Nemesis) -> None:
    assert faults.allows_server_faults


def test_chaos_db_settings_are_valid_plain_pool_settings(faults: Nemesis) -> None:
    settings_module = pytest.importorskip("plain_pool.settings")
    settings = faults.db_settings(POSTGRES_OPTIONS={"application_name": "faults-test"})
    parsed = settings_module.DatabaseSettings.from_dict(settings)
    assert parsed.port == faults.connect_kwargs()["port"]
    assert parsed.options["tcp_user_timeout"] > 0
    assert parsed.options["application_name"] == "faults-test"


# -- server faults (a server of the test's own) -------------------------------------------------


@pytest.mark.slow
def test_restarts_kill_sessions_and_the_server_accepts_again(private_faults: Nemesis) -> None:
    for mode in ("restart_fast", "restart_immediate"):
        conn = private_faults.connect()
        handle = getattr(private_faults, mode)()
        assert not handle.active  # instantaneous: nothing left to heal
        assert handle.detail["accepting_again_at"] <= time.monotonic()
        assert_broken(conn)
        conn.close()
        assert_works(private_faults)
    assert [e.action for e in private_faults.schedule.events] == ["apply", "apply"]


def test_crash_resets_every_session(private_faults: Nemesis) -> None:
    proxied = private_faults.connect()
    direct = private_faults.server.connect()
    private_faults.crash()
    assert_broken(proxied)
    assert_broken(direct)
    proxied.close()
    direct.close()
    assert_works(private_faults)


def test_terminate_backends_kills_sessions_but_not_the_server(private_faults: Nemesis) -> None:
    conns = [private_faults.connect() for _ in range(2)]
    handle = private_faults.terminate_backends()
    assert handle.detail["terminated"] >= 2
    for conn in conns:
        assert_broken(conn)
        conn.close()
    assert private_faults.server.is_running
    assert_works(private_faults)


def test_outage_holds_the_server_down_until_healed(private_faults: Nemesis) -> None:
    conn = private_faults.connect()
    outage = private_faults.outage()
    assert_broken(conn)
    conn.close()
    with pytest.raises(psycopg.OperationalError):
        private_faults.connect().close()
    with pytest.raises(FaultConflict):
        private_faults.apply(RestartFast())
    with pytest.raises(FaultConflict):
        private_faults.apply(Crash())
    outage.heal()
    outage.heal()
    assert_works(private_faults)
