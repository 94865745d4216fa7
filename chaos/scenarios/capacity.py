"""Too many connections: processes x max_size > max_connections, with real subprocesses.

Per-process pools multiply. Three processes with ``max_size=5`` against a
server with ``max_connections=10`` cannot all be served: the contract is
clear errors (``PoolTimeout`` / "too many clients"), no crash (every child
exits 0 and reports), and full recovery once the connections are released.
The sizing helper is checked against the same server: ``check_capacity``
warns for 3 x 5, and the ``recommend_max_size`` it advises runs clean.

plain_pool only (``reference_only``): the children are plain_pool processes
(:mod:`chaos.scenarios._capacity_child`) configured like the target, and the
sizing helper checked is plain_pool's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

from chaos.machines.model import SettingsValue
from chaos.scenarios import REGISTRY, Evidence, Expectations, Finding, Op, ScenarioContext

PROCESSES = 3
OVERSIZED = 5
MAX_CONNECTIONS = 10
#: slots the parent keeps (admin connection, the runner's own pool of 1)
PARENT_SLOTS = 2
CLEAR = ("PoolTimeout", "too many clients", "remaining connection slots")


def child_settings(ctx: ScenarioContext, max_size: int) -> dict:
    """plain_pool settings for a child: the target's, with a pool of ``max_size``; its
    sessions carry the target's application_name (the sessions-left check counts them)."""
    from chaos.targets.plain_pool import settings_dict

    options = replace(ctx.options, min_size=0, max_size=max_size, timeout=1.0)
    return settings_dict(
        ctx.host,
        ctx.port,
        ctx.server,
        options,
        SettingsValue(),
        application_name=ctx.application_name,
    )


def run_children(ctx: ScenarioContext, max_size: int, label: str) -> list[int]:
    settings = child_settings(ctx, max_size)
    spec = {
        "settings": settings,
        "hold_s": 2.5,
        "alias": f"{ctx.alias}-{label}",
        "start_at": time.time() + 2.0,
    }
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, _paths()))}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "chaos.scenarios._capacity_child", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(PROCESSES)
    ]
    codes = []
    for n, child in enumerate(children):
        try:
            out, err = child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
        codes.append(child.returncode)
        if child.returncode != 0 or not out.strip():
            ctx.note(f"{label} child {n} exited {child.returncode}: {err.strip()[-300:]}")
            continue
        for entry in json.loads(out.strip().splitlines()[-1]):
            ctx.add_op(
                Op(
                    worker=100 * (n + 1) + entry["worker"],
                    kind=label,
                    started=entry["started"],
                    ended=entry["ended"],
                    ok=entry["ok"],
                    checked_out=entry.get("checked_out"),
                    error_type=entry.get("error_type"),
                    error=entry.get("error"),
                )
            )
    return codes


def _paths() -> list[Path]:
    root = Path(__file__).resolve().parents[2]
    return [root / "src", root, *map(Path, sys.path[1:])]


def capacity_workload(ctx: ScenarioContext) -> None:
    from plain_pool import sizing

    with ctx.admin() as admin:
        ctx.metrics["max_connections"] = int(admin.execute("SHOW max_connections").fetchone()[0])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        headroom = sizing.check_capacity(PROCESSES, OVERSIZED, MAX_CONNECTIONS, PARENT_SLOTS)
    ctx.metrics["check_capacity_headroom"] = headroom
    ctx.metrics["check_capacity_warned"] = any(
        isinstance(w.message, sizing.PoolCapacityWarning) for w in caught
    )
    ctx.metrics["exit_codes_oversized"] = run_children(ctx, OVERSIZED, "oversized")
    recommended = sizing.recommend_max_size(PROCESSES, MAX_CONNECTIONS, PARENT_SLOTS)
    ctx.metrics["recommended_max_size"] = recommended
    time.sleep(0.2)
    ctx.metrics["exit_codes_recommended"] = run_children(ctx, recommended, "recommended")
    ctx.stop.wait()


def capacity_contract(result: Evidence) -> Finding:
    m = dict(result.metrics)
    over = [o for o in result.ops if o.kind == "oversized"]
    rec = [o for o in result.ops if o.kind == "recommended"]
    problems = []
    if m.get("exit_codes_oversized") != [0] * PROCESSES:
        problems.append(f"oversized children crashed: exit codes {m.get('exit_codes_oversized')}")
    if m.get("exit_codes_recommended") != [0] * PROCESSES:
        problems.append(f"children crashed: exit codes {m.get('exit_codes_recommended')}")
    failed = [o for o in over if not o.ok]
    counts = {"oversized_ok": len(over) - len(failed), "oversized_failed": len(failed)}
    if not failed:
        problems.append(f"{PROCESSES} x {OVERSIZED} > {MAX_CONNECTIONS} but no checkout failed")
    unclear = [o for o in failed if not any(c in f"{o.error_type} {o.error}" for c in CLEAR)]
    if unclear:
        problems.append(f"unclear error: {unclear[0].error_type}: {unclear[0].error}")
    if len(over) - len(failed) > MAX_CONNECTIONS:
        problems.append("more sessions served than max_connections allows")
    if not m.get("check_capacity_warned"):
        problems.append("check_capacity did not warn for an oversized configuration")
    bad = [o for o in rec if not o.ok]
    if len(rec) != PROCESSES * m.get("recommended_max_size", 0) or bad:
        problems.append(
            f"with the recommended max_size {m.get('recommended_max_size')}: "
            f"{len(bad)} failed of {len(rec)}"
            + (f" ({bad[0].error_type}: {bad[0].error})" if bad else "")
        )
    return Finding.of(*problems, **counts)


REGISTRY.register(
    "too-many-connections",
    faults=[],
    workload=capacity_workload,
    expect=Expectations(min_ok=1, extra=(capacity_contract,)),
    pool={"min_size": 1, "max_size": 1},
    server_settings={"max_connections": str(MAX_CONNECTIONS)},
    threads=1,
    reference_only="its children are plain_pool processes and it checks plain_pool's sizing helper",
    description="3 processes x max_size 5 > max_connections 10: clear errors, no crash, recovery",
    duration=11.0,  # two rounds of children: start-up 2 s + hold 2.5 s + exit, each
    marks=("chaos", "restarts_server"),
    origin=__name__,
)
