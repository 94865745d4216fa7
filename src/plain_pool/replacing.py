"""``PoolReplacement``: how an alias's pool is retired (zone change, ``close_pool()``).

Forget first (new callers get a new pool), then close without waiting long:
psycopg_pool's ``close()`` joins its worker threads for up to 5 s each, and
a worker stuck in a connection attempt (server down, half-open link) would
block ``ensure_timezone()`` / ``close_pool()`` for seconds (found by the
state machines under a half-open fault). The workers are daemon threads and
a closed pool closes whatever they still bring back, so a short join is
enough. Connections still out go back to their own, closed, pool, which
closes them.
"""

from __future__ import annotations

from plain_pool import pools
from plain_pool.pools import PoolEntry

#: Seconds ``close()`` waits for each of a retired pool's worker threads.
POOL_CLOSE_TIMEOUT = 0.2


class PoolReplacement:
    """Retire a pool: forget it, then close it."""

    def retire(self, entry: PoolEntry) -> None:
        try:
            self.forget(entry)
        finally:
            entry.pool.close(timeout=POOL_CLOSE_TIMEOUT)

    def forget(self, entry: PoolEntry) -> None:
        pools.forget(entry)

    def on_timezone_change(self, entry: PoolEntry) -> None:
        """The pool's sessions have the old zone in their startup options: retire it."""
        self.retire(entry)
