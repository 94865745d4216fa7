"""atomic() inside a transaction the caller opened with set_autocommit(False), on a real server.

Such a block joins the caller's transaction: it neither commits nor rolls back
at exit, the transaction stays the caller's. When an inner block without a
savepoint fails, nothing can undo its statements but a rollback of the whole
transaction: the flag ``needs_rollback`` must then survive the joining block's
exit, for the caller to roll back - as in Django, whose ``Atomic.__exit__``
leaves the flag set on that path (django/db/transaction.py).
"""

from __future__ import annotations

import uuid

import pytest

from plain_pool import DatabaseWrapper, close_all_pools


@pytest.fixture(autouse=True)
def _close_pools():
    yield
    close_all_pools()


@pytest.fixture
def table(postgres):
    name = f"tx_joined_{uuid.uuid4().hex[:8]}"
    with postgres.connect() as conn:
        conn.execute(f"CREATE TABLE {name} (x int)")
    yield name
    with postgres.connect() as conn:
        conn.execute("SET lock_timeout = '5s'")
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def committed(postgres, table: str) -> list[int]:
    """What another session sees: only committed rows."""
    with postgres.connect() as conn:
        return [r[0] for r in conn.execute(f"SELECT x FROM {table} ORDER BY x")]


@pytest.fixture(params=["pooled", "direct"])
def db(request, postgres, make_db_settings, table):
    """Set up after (so torn down before) the table: its open transaction would block DROP."""
    pool = {"min_size": 1, "max_size": 2, "timeout": 5} if request.param == "pooled" else False
    wrapper = DatabaseWrapper(make_db_settings(postgres, POSTGRES_POOL=pool), alias="tx-joined")
    yield wrapper
    wrapper.close()


def test_failed_block_without_savepoint_leaves_the_rollback_to_the_caller(db, postgres, table):
    db.set_autocommit(False)
    with db.atomic(savepoint=False):  # joins the caller's transaction
        db.cursor().execute(f"INSERT INTO {table} VALUES (1)")
        with pytest.raises(RuntimeError), db.atomic(savepoint=False):
            db.cursor().execute(f"INSERT INTO {table} VALUES (2)")
            raise RuntimeError("the inner block fails; no savepoint can undo INSERT 2")
        assert db.needs_rollback
    assert not db.in_atomic_block
    assert db.needs_rollback, "the spoiled transaction must be left for the caller to roll back"
    assert db.get_autocommit() is False  # still the caller's transaction
    assert committed(postgres, table) == []
    db.rollback()
    assert not db.needs_rollback
    db.set_autocommit(True)
    assert committed(postgres, table) == []
    # the wrapper is usable as usual afterwards
    with db.atomic():
        db.cursor().execute(f"INSERT INTO {table} VALUES (3)")
    assert committed(postgres, table) == [3]


def test_joining_block_with_savepoint_undoes_only_its_own_work(db, postgres, table):
    db.set_autocommit(False)
    db.cursor().execute(f"INSERT INTO {table} VALUES (1)")  # the caller's own work
    with db.atomic():  # joins, with a savepoint
        db.cursor().execute(f"INSERT INTO {table} VALUES (2)")
        with pytest.raises(RuntimeError), db.atomic(savepoint=False):
            db.cursor().execute(f"INSERT INTO {table} VALUES (3)")
            raise RuntimeError
        assert db.needs_rollback
    # rolled back to the joining block's savepoint: nothing left to roll back
    assert not db.needs_rollback
    assert not db.in_atomic_block
    assert committed(postgres, table) == []
    db.commit()
    assert committed(postgres, table) == [1]
    db.set_autocommit(True)
