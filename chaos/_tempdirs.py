"""Temp directories the harness creates, and finding what a run left behind.

Every component names its temp dirs ``plain-pool-<component>-[<run id>-]<random>``.
The run id comes from ``PLAIN_POOL_RUN_ID``, set by the pytest plugin in the
controller process and inherited by xdist workers and child processes, so the
end-of-session check (:mod:`chaos.fixtures.leftovers`) only looks at what this
run created, never at a concurrent run's directories.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["BASE_PREFIX", "RUN_ID_ENV", "make_temp_dir", "run_temp_dirs"]

RUN_ID_ENV = "PLAIN_POOL_RUN_ID"
BASE_PREFIX = "plain-pool-"


def _prefix(component: str) -> str:
    """``plain-pool-<component>-<run id>-``, or without the run id outside a pytest run."""
    run = os.environ.get(RUN_ID_ENV)
    return f"{BASE_PREFIX}{component}-" + (f"{run}-" if run else "")


def make_temp_dir(component: str) -> Path:
    """A new temp dir named so that the end-of-run check can tell it is this run's."""
    return Path(tempfile.mkdtemp(prefix=_prefix(component)))


def run_temp_dirs(run: str) -> list[Path]:
    """Directories of run ``run`` (any component) still present in the temp dir."""
    return sorted(Path(tempfile.gettempdir()).glob(f"{BASE_PREFIX}*-{run}-*"))
