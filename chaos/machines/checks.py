"""Judging what a checkout observed, raising the invariant's own exception.

Kept apart from the machine so that other machines (and other backends'
suites) reuse the judgement: which fingerprint difference is a leak, which is
a stale or a missing configuration.
"""

from __future__ import annotations

from typing import Any

from chaos.machines.dirt import DIRT_TIME_ZONE, INTRUDER_ROLE
from chaos.machines.errors import (
    SessionLeak,
    StaleRole,
    StaleTimezone,
    UnconfiguredConnection,
)

#: Fingerprint fields the backend's configuration sets (the role shows as a session GUC).
_CONFIG_FIELDS = ("timezone", "current_user", "session_gucs")


def _differences(expected: Any, observed: Any) -> list[str]:
    if hasattr(expected, "diff"):
        return list(expected.diff(observed))
    return [] if observed == expected else [f"expected {expected!r}, got {observed!r}"]


def _only_configuration(expected: Any, observed: Any, differences: list[str]) -> bool:
    """Every difference is the time zone or the role (not a GUC a user set)."""
    if not all(d.split(":", 1)[0] in _CONFIG_FIELDS for d in differences):
        return False
    gucs_expected = set(getattr(expected, "session_gucs", None) or ())
    gucs_observed = set(getattr(observed, "session_gucs", None) or ())
    return all(g.startswith("role=") for g in gucs_expected ^ gucs_observed)


def check_session(observed: Any, expected: Any, *, context: str) -> None:
    """Raise unless ``observed`` is exactly the fresh fingerprint ``expected``.

    - :class:`UnconfiguredConnection`: the role is missing altogether (nobody ran
      ``SET ROLE``), the rest is as configured;
    - :class:`StaleTimezone` / :class:`StaleRole`: only the zone / the role differ,
      and not to a value a user set (those are leaks);
    - :class:`SessionLeak`: anything else an earlier user left behind.
    """
    differences = _differences(expected, observed)
    if not differences:
        return
    message = f"{context}:\n  " + "\n  ".join(differences)
    tz_observed = getattr(observed, "timezone", None)
    role_observed = getattr(observed, "current_user", None)
    user_value = tz_observed == DIRT_TIME_ZONE or role_observed == INTRUDER_ROLE
    if not user_value and _only_configuration(expected, observed, differences):
        if tz_observed != getattr(expected, "timezone", None):
            raise StaleTimezone(message)
        if role_observed == getattr(observed, "session_user", None):
            raise UnconfiguredConnection(message)
        raise StaleRole(message)
    raise SessionLeak(message)
