"""Named fault scenarios: one module per family, discovered with :mod:`pkgutil`.

Add a scenario by dropping a module into this package (or into a
``chaos/scenarios/`` directory of your own on ``sys.path``: every such
directory is added to the package path), or from your own project with the
pytest hook ``pytest_plain_pool_scenarios(registry)`` in a conftest or plugin.
Modules whose name starts with ``_`` are infrastructure and are not discovered.

    from chaos import workloads
    from chaos.scenarios import Expectations, FaultStep, scenario

    @scenario(
        "my-restart",
        faults=[FaultStep(at=1.0, fault="restart_fast")],
        expect=Expectations(max_recovery_s=0.1, caller_errors="in_flight"),
        pool={"min_size": 2, "max_size": 2},       # TargetOptions pool fields
        options={"health_checks": True},           # any other TargetOptions field
        marks=("chaos", "restarts_server"),
    )
    def my_restart(ctx):
        ctx.run_threads(workloads.select_one)

A scenario runs on whichever target ``--target`` selects: a workload only uses
``db = ctx.db()`` (the target's per-thread :class:`chaos.targets.base.Client`),
``ctx.op(...)`` to record, ``ctx.ledger`` for writes. A check in
``Expectations.extra`` is a pure function of the :class:`Evidence` (ops, windows,
metrics) returning a list of violations or a :class:`Finding` (with metrics and
notes for the report).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from collections.abc import Iterable

from chaos.scenarios._checkers import Evidence, Finding
from chaos.scenarios._context import ScenarioContext
from chaos.scenarios._history import Op
from chaos.scenarios._registry import (
    RESOURCES,
    Expectations,
    FaultStep,
    RegistrationError,
    Scenario,
    ScenarioRegistry,
    Workload,
    validate,
)
from chaos.scenarios._result import ScenarioResult


def _extend_path(path: list[str]) -> list[str]:
    """Add every ``chaos/scenarios/`` directory on ``sys.path`` (like pkgutil.extend_path,
    which for a sub-package only searches the parent package's path)."""
    for entry in sys.path:
        candidate = os.path.join(entry or os.getcwd(), "chaos", "scenarios")
        if os.path.isdir(candidate) and not any(
            os.path.samefile(candidate, p) for p in path if os.path.isdir(p)
        ):
            path.append(candidate)
    return path


__path__ = _extend_path(list(__path__))

__all__ = [
    "REGISTRY",
    "RESOURCES",
    "Evidence",
    "Expectations",
    "FaultStep",
    "Finding",
    "Op",
    "RegistrationError",
    "Scenario",
    "ScenarioContext",
    "ScenarioRegistry",
    "ScenarioResult",
    "Workload",
    "discover",
    "register",
    "scenario",
    "validate",
]

#: Every scenario registered at import time by the modules of this package.
REGISTRY = ScenarioRegistry()

#: ``@scenario(name, faults=..., expect=..., **options)`` on a workload function.
scenario = REGISTRY.scenario
#: ``register(name, faults=..., workload=..., expect=..., **options)``.
register = REGISTRY.register


def discover(packages: Iterable[str] = ()) -> ScenarioRegistry:
    """Import every public module of ``chaos.scenarios`` (and of ``packages``).

    Returns the default registry. Importing is idempotent (Python caches
    modules), so calling this twice registers nothing twice.
    """
    for package_name in ("chaos.scenarios", *packages):
        package = importlib.import_module(package_name)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if info.name.startswith("_"):
                continue
            module_name = f"{package_name}.{info.name}"
            try:
                importlib.import_module(module_name)
            except RegistrationError:
                raise
            except Exception as exc:
                raise RegistrationError(
                    f"scenario module {module_name} failed to import: {type(exc).__name__}: {exc}"
                ) from exc
    return REGISTRY
