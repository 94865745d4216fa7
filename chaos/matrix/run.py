"""Computing one cell: availability first, then the row's machine or probe.

The target is loaded before any server is started for the cell (a column that
cannot run costs nothing), then built once with the row's options
(``UnsupportedOption`` makes the cell ``na``), then checked.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from chaos.matrix.cell import Outcome
from chaos.matrix.columns import Address, machine_env, maker
from chaos.matrix.machine_cell import run_machine_cell
from chaos.matrix.probes import PROBES, ProbeContext
from chaos.matrix.properties import MachineCheck, ProbeCheck, Property
from chaos.targets.registry import TargetUnavailable, UnsupportedOption, resolve


def availability(target: str) -> str | None:
    """Why the target cannot run here (a ``not_run`` cell), or None."""
    try:
        resolve(target).load()
    except TargetUnavailable as exc:
        return str(exc)
    return None


def _supported(make: Callable[..., Any], options: Any) -> str | None:
    try:
        target = make(options)
    except UnsupportedOption as exc:
        return str(exc)
    with contextlib.suppress(Exception):
        target.close()
    return None


def check_cell(
    target: str,
    prop: Property,
    address: Address,
    nemesis: Any = None,
    proxy_to: Callable[[str, int], Any] | None = None,
) -> tuple[Outcome, float]:
    """The row's check on the target at ``address``; (outcome, seconds it took)."""
    started = time.monotonic()
    check = prop.check
    try:
        if isinstance(check, MachineCheck):
            env = machine_env(target, address)
            unsupported = _supported(env.make_target, check.options)
            if unsupported:
                return Outcome("na", unsupported), time.monotonic() - started
            name = f"Matrix_{target}_{prop.name}".replace("-", "_")
            outcome = run_machine_cell(env, check, name)
        else:
            assert isinstance(check, ProbeCheck)
            ctx = ProbeContext(
                make=maker(target, address),
                server=address.server,
                nemesis=nemesis,
                proxy_to=proxy_to,
            )
            outcome = PROBES[check.probe](ctx)
    except TargetUnavailable as exc:
        outcome = Outcome("not_run", str(exc))
    except UnsupportedOption as exc:
        outcome = Outcome("na", str(exc))
    return outcome, time.monotonic() - started
