"""The ledger checker's pure logic: each invariant caught, each allowed history accepted."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import PoolTimeout

from chaos.faults.outcomes import Outcome, classify, is_connection_lost
from chaos.ledger import Ledger, LedgerEntry, check, check_sessions, recorded_write
from plain_pool import TransactionManagementError


def entries(**outcomes: str) -> list[LedgerEntry]:
    return [LedgerEntry(i, Outcome(o)) for i, o in outcomes.items()]


def test_clean_history_passes():
    verdict = check(entries(a="ok", b="fail", c="info", d="info"), {"a": 1, "c": 1})
    assert verdict.ok, verdict.problems()
    assert (verdict.oks, verdict.fails, verdict.infos) == (1, 1, 2)
    assert verdict.infos_committed == 1
    assert "all invariants hold" in verdict.summary()


def test_lost_acknowledged_write():
    verdict = check(entries(a="ok", b="ok"), {"a": 1})
    assert not verdict.ok
    assert verdict.lost == ("b",)
    assert "missing: b" in verdict.problems()[0]


def test_duplicated_write_of_any_outcome():
    verdict = check(entries(a="ok", c="info"), {"a": 2, "c": 3})
    assert verdict.duplicated == (("a", 2), ("c", 3))
    assert not verdict.ok


def test_phantom_commit_is_named():
    verdict = check(entries(a="ok", b="fail"), ["a", "b"])
    assert verdict.phantoms == ("b",)
    assert "phantom commit" in verdict.summary()
    assert "another caller's transaction" in verdict.problems()[0]


def test_rows_nobody_wrote():
    verdict = check(entries(a="ok"), {"a": 1, "zz": 1})
    assert verdict.unknown == ("zz",)
    assert not verdict.ok


def test_problem_lists_are_truncated():
    many = {f"w{i}": "ok" for i in range(9)}
    verdict = check(entries(**many), {})
    assert "(+4 more)" in verdict.problems()[0]


def test_two_entries_for_one_id_is_a_workload_bug():
    with pytest.raises(ValueError, match="two entries"):
        check([LedgerEntry("a", Outcome.OK), LedgerEntry("a", Outcome.FAIL)], {})


def test_ledger_ids_unique_and_pending_counts_as_uncertain():
    ledger = Ledger(run_id="r1")
    ids: list[str] = []

    def work():
        for _ in range(200):
            ids.append(ledger.new_id())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 800 and all(i.startswith("r1-") for i in ids)
    ledger.record(ids[0], Outcome.OK)
    with pytest.raises(ValueError, match="recorded twice"):
        ledger.record(ids[0], Outcome.FAIL)
    counts = ledger.counts()
    assert counts == {"ok": 1, "info": 799}


def test_recorded_write_outcomes():
    ledger = Ledger(run_id="r")
    with recorded_write(ledger) as mark:
        mark("commit")
    with pytest.raises(RuntimeError), recorded_write(ledger):
        raise RuntimeError("before commit")
    with pytest.raises(psycopg.OperationalError), recorded_write(ledger) as mark:
        mark("commit")
        raise psycopg.OperationalError("server closed the connection unexpectedly")
    with pytest.raises(errors.SerializationFailure), recorded_write(ledger) as mark:
        mark("commit")
        raise errors.SerializationFailure("could not serialize")
    got = [(e.write_id, e.outcome) for e in ledger.entries()]
    assert got == [
        ("r-0", Outcome.OK),
        ("r-1", Outcome.FAIL),
        ("r-2", Outcome.INFO),
        ("r-3", Outcome.FAIL),
    ]


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (psycopg.OperationalError("lost"), Outcome.INFO),
        (errors.AdminShutdown("terminating connection"), Outcome.INFO),
        (errors.ConnectionFailure("x"), Outcome.INFO),
        (TimeoutError(), Outcome.INFO),
        (errors.DatabaseDropped("x"), Outcome.INFO),  # 57P04: the session is gone
        (psycopg.InterfaceError("the connection is closed"), Outcome.INFO),
        (errors.SerializationFailure("x"), Outcome.FAIL),
        (errors.UniqueViolation("x"), Outcome.FAIL),
        (errors.QueryCanceled("statement timeout"), Outcome.FAIL),  # 57014: session lives on
        (errors.InternalError_("x"), Outcome.FAIL),  # an ERROR at COMMIT: rolled back
        (PoolTimeout("no connection"), Outcome.FAIL),  # nothing was sent
        (TransactionManagementError("closed inside atomic()"), Outcome.FAIL),
    ],
)
def test_commit_error_classification(exc, outcome):
    """The ledger and the state machines judge with the same rule (chaos.faults.outcomes)."""
    assert classify(exc, wrote=True) is outcome
    assert classify(exc, wrote=False) is Outcome.FAIL
    if isinstance(exc, psycopg.Error):
        assert (outcome is Outcome.INFO) == is_connection_lost(exc)


def test_session_check():
    assert check_sessions("app", 3, 4).ok
    leak = check_sessions("app", 5, 4)
    assert not leak.ok and "LEAK" in leak.summary()
