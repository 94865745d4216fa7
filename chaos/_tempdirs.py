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

from chaos.reaper import processes_in

__all__ = ["make_temp_dir", "processes_in", "run_id", "run_temp_dirs", "temp_prefix"]

RUN_ID_ENV = "PLAIN_POOL_RUN_ID"
BASE_PREFIX = "plain-pool-"


def run_id() -> str | None:
    return os.environ.get(RUN_ID_ENV) or None


def temp_prefix(component: str, run: str | None = None) -> str:
    run = run if run is not None else run_id()
    return f"{BASE_PREFIX}{component}-" + (f"{run}-" if run else "")


def make_temp_dir(component: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=temp_prefix(component)))


def run_temp_dirs(run: str, root: str | None = None) -> list[Path]:
    """Directories of run ``run`` (any component) still present in the temp dir."""
    root_path = Path(root or tempfile.gettempdir())
    return sorted(root_path.glob(f"{BASE_PREFIX}*-{run}-*"))
