"""Pool sizing: per-process pools multiply.

Why: the pool is per process, so the server sees ``workers x max_size``
connections (seed: 8 workers x 4 = 32 against a managed service's limit of
60). These helpers turn the server's limits into a per-process ``max_size``
and warn when a configuration cannot fit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

#: Default connections kept free for admin sessions, migrations, monitoring.
DEFAULT_RESERVE = 3


class PoolCapacityWarning(UserWarning):
    """workers x max_size exceeds what the server can give (max_connections - reserve)."""


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int
    superuser_reserved_connections: int
    #: PostgreSQL 16+ ``reserved_connections`` (0 before).
    reserved_connections: int = 0

    @property
    def available(self) -> int:
        """Connections ordinary roles can open."""
        return (
            self.max_connections - self.superuser_reserved_connections - (self.reserved_connections)
        )


def recommend_max_size(
    workers: int, max_connections: int, reserve: int = DEFAULT_RESERVE, *, other_clients: int = 0
) -> int:
    """The largest per-process ``max_size`` such that all workers fit.

    ``reserve``: connections to leave free (superuser reserved, admin);
    ``other_clients``: connections used by other services on the same server.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections}")
    if reserve < 0 or other_clients < 0:
        raise ValueError("reserve and other_clients cannot be negative")
    budget = max_connections - reserve - other_clients
    if budget < workers:
        raise ValueError(
            f"{workers} workers cannot have one connection each: max_connections "
            f"{max_connections} - reserve {reserve} - other clients {other_clients} = {budget}"
        )
    return budget // workers


def check_capacity(
    workers: int,
    max_size: int,
    max_connections: int,
    reserve: int = DEFAULT_RESERVE,
    *,
    other_clients: int = 0,
    stacklevel: int = 2,
) -> int:
    """Warn (PoolCapacityWarning) if ``workers x max_size`` does not fit; return the headroom.

    The headroom is ``max_connections - reserve - other_clients - workers x max_size``
    (negative when it does not fit).
    """
    needed = workers * max_size
    budget = max_connections - reserve - other_clients
    headroom = budget - needed
    if headroom < 0:
        warnings.warn(
            f"{workers} workers x max_size {max_size} = {needed} connections, but the server "
            f"allows {max_connections} - {reserve} reserved"
            + (f" - {other_clients} for other clients" if other_clients else "")
            + f" = {budget}; use max_size <= {max(budget // workers, 0)}",
            PoolCapacityWarning,
            stacklevel=stacklevel,
        )
    return headroom
