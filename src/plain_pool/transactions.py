"""``Atomic``: Django's ``atomic()`` semantics for one ``DatabaseWrapper``.

Why its own module: the outermost block is a transaction, nested blocks are
savepoints, an exception rolls back to the right level and marks
``needs_rollback`` when it cannot (a block without savepoint). A close inside
a block must not let the rest of the block run on a fresh connection outside
any transaction (the statements before the close rolled back, the ones after
it autocommitted): the wrapper refuses to reconnect, and a block that exits
normally after such a close raises instead of pretending it committed
(stricter than Django, which only refuses the reconnect).
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import TYPE_CHECKING

import psycopg

from plain_pool.exceptions import TransactionManagementError

if TYPE_CHECKING:
    from plain_pool.wrapper import DatabaseWrapper


class Atomic(contextlib.ContextDecorator):
    """``with db.atomic(): ...`` (also usable as a decorator)."""

    def __init__(self, db: DatabaseWrapper, savepoint: bool = True) -> None:
        self.db = db
        self.savepoint = savepoint

    def __enter__(self) -> Atomic:
        db = self.db
        if not db.in_atomic_block:
            db.commit_on_exit = True
            db.needs_rollback = False
            db.closed_in_transaction = False
            if not db.get_autocommit():
                # A transaction started by set_autocommit(False): join it.
                db.in_atomic_block = True
                db.commit_on_exit = False
        if db.in_atomic_block:
            if self.savepoint and not db.needs_rollback:
                sid: str | None = db.savepoint()
            else:
                sid = None
            db.savepoint_ids.append(sid)
        else:
            db.set_autocommit(False, _force=True)
            db.in_atomic_block = True
        db.atomic_blocks.append(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        db = self.db
        if db.atomic_blocks:
            db.atomic_blocks.pop()
        if db.savepoint_ids:
            sid = db.savepoint_ids.pop()
        else:
            db.in_atomic_block = False  # outermost block
        closed = db.closed_in_transaction
        try:
            if closed:
                pass  # the pool rolled the transaction back when the connection went back
            elif exc_type is None and not db.needs_rollback:
                if db.in_atomic_block:
                    if sid is not None:
                        try:
                            db.savepoint_commit(sid)
                        except psycopg.DatabaseError:
                            with contextlib.suppress(psycopg.Error):
                                db.savepoint_rollback(sid)
                            raise
                else:
                    try:
                        db.commit(_force=True)
                    except psycopg.DatabaseError:
                        try:
                            db.rollback(_force=True)
                        except psycopg.Error:
                            db.close()
                        raise
            else:
                db.needs_rollback = False
                if db.in_atomic_block:
                    if sid is None:
                        db.needs_rollback = True
                    else:
                        try:
                            db.savepoint_rollback(sid)
                        except psycopg.Error:
                            db.needs_rollback = True
                else:
                    try:
                        db.rollback(_force=True)
                    except psycopg.Error:
                        db.close()
        finally:
            if not db.in_atomic_block:
                if db.closed_in_transaction:
                    db.closed_in_transaction = False
                    db.needs_rollback = False
                elif db.connection is not None:
                    db.set_autocommit(True, _force=True)
            elif not db.savepoint_ids and not db.commit_on_exit:
                if db.closed_in_transaction:
                    db.closed_in_transaction = False
                db.in_atomic_block = False
        if closed and exc_type is None and not db.in_atomic_block:
            raise TransactionManagementError(
                "the connection was closed inside atomic(): the transaction was rolled back"
            )
        # A block that joined a transaction opened with set_autocommit(False) and
        # could not roll back its own work (no savepoint) leaves needs_rollback set:
        # the transaction is the caller's to roll back, as in Django's Atomic.__exit__.
