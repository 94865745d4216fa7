"""The passwords a chaos run knows of, so that no report line can show them.

Scenario results already mask their own settings' password
(:meth:`chaos.scenarios._runner.ScenarioResult.as_dict`); the report plugin
masks, on top, every password the environment holds - ``PLAIN_POOL_PG_DSN``'s,
``PGPASSWORD``, a proxy URL's - and any URL or ``password=`` pattern
(:mod:`plain_pool._redact` decides what a secret looks like).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from plain_pool._redact import is_secret_key, secrets_in


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of password-like variables, and the passwords of DSNs / URLs in any variable."""
    environ = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in environ.items():
        if is_secret_key(name) and value:
            found.add(value)
        found.update(secrets_in(value))
    return sorted(found)
