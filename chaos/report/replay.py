"""The one command that replays a failed test."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

_SEED = re.compile(r"--hypothesis-seed[= ](-?\d+)")
_BLOB = re.compile(r"@reproduce_failure\([^)]*\)")


def replay_command(
    nodeid: str,
    *,
    chaos: bool,
    longrepr: str = "",
    hypothesis_seed: int | str | None = None,
    env: dict[str, str] | None = None,
    targets: Sequence[str] = (),
    under_tox: bool = True,
) -> str:
    """``tox -e chaos -- "<nodeid>" --hypothesis-seed=N`` (``tox -e py`` outside the chaos run).

    Outside tox (``under_tox=False``: a user's project running the plugin),
    ``python -m pytest "<nodeid>"``. ``targets``: the ``--target`` values the
    node id needs (a test parametrized by target exists only when it is
    selected). The Hypothesis seed comes from the run's ``--hypothesis-seed``
    or from what Hypothesis printed in the failure; a ``@reproduce_failure``
    blob, when printed, is appended as a comment to paste on the test. ``env``
    (e.g. a scenario seed) is put in front.
    """
    parts = [f"{k}={shlex.quote(str(v))}" for k, v in (env or {}).items()]
    if under_tox:
        parts += ["tox", "-e", "chaos" if chaos else "py", "--", _dquote(nodeid)]
    else:
        parts += ["python", "-m", "pytest", _dquote(nodeid)]
    for target in dict.fromkeys(targets):
        parts += ["--target", shlex.quote(target)]
    seed = hypothesis_seed
    if seed is None:
        found = _SEED.search(longrepr or "")
        seed = found.group(1) if found else None
    if seed is not None:
        parts.append(f"--hypothesis-seed={seed}")
    command = " ".join(parts)
    blob = _BLOB.search(longrepr or "")
    if blob:
        command += f"   # or add {blob.group(0)}"
    return command


def _dquote(text: str) -> str:
    """Double quotes, as people type them (node ids hold ``[`` and ``::``)."""
    for char in ("\\", '"', "$", "`"):
        text = text.replace(char, "\\" + char)
    return f'"{text}"'
