"""Targets by name: the systems the machines, the scenarios and the matrix can drive.

A target is a :class:`~chaos.targets.base.Target` subclass constructed as
``cls(server=..., host=..., port=..., options=TargetOptions(...))``: ``server``
is the harness's Postgres (its controls and admin connection), ``host``/``port``
the address the target's connections must use (the fault proxy, when there is
one). A target that cannot honour an option raises :class:`UnsupportedOption`;
a target whose packages are missing says why from ``unavailable()``.

``--target NAME`` takes a name of :data:`TARGETS` or a dotted path
``package.module:Class`` to a user's own target.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chaos.targets.base import Target, TargetOptions

#: The reference target every run uses unless told otherwise.
DEFAULT_TARGET = "plain_pool"

#: Measured in a scratch venv (Django 5.2.19, psycopg 3.3.9, gevent 26.9.0, MAX_CONNS=1):
#: without gevent the backend does not import; with gevent but no monkeypatching, a
#: thread that finds the pool full gets gevent's LoopExit in 1 ms; patch_all() works but
#: turns the whole harness process into greenlets - a different harness.
GEVENTPOOL_NOT_RUN = (
    "gevent-only: unpatched, its gevent.queue pool cannot make one thread wait for another "
    "(thread-per-request checkout from a full pool: gevent LoopExit in 1 ms); "
    "monkey.patch_all() would patch the whole harness process"
)


class UnknownTarget(ValueError):
    """A --target value that names no target."""


class UnsupportedOption(Exception):
    """A target cannot honour a TargetOptions field (the test asking for it is skipped)."""

    def __init__(self, target: str, option: str, why: str) -> None:
        super().__init__(f"target {target!r} does not support {option}: {why}")
        self.target, self.option, self.why = target, option, why


class TargetUnavailable(Exception):
    """A target's packages or binaries are missing on this machine."""


@dataclass(frozen=True)
class TargetSpec:
    """One system under test: its name, where its class lives, what it is."""

    name: str
    path: str  # "package.module:Class"
    title: str
    #: Why it is never run (a written reason), or None.
    not_run: str | None = None

    def load(self) -> type[Target]:
        """Import the target class; TargetUnavailable (with the reason) if it cannot run here."""
        if self.not_run is not None:
            raise TargetUnavailable(f"{self.name}: {self.not_run}")
        module_name, _, attr = self.path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise TargetUnavailable(
                f"{self.name}: cannot import {module_name} ({exc}); "
                "install the extra: pip install 'plain-pool[matrix]'"
            ) from exc
        try:
            cls = getattr(module, attr)
        except AttributeError:
            raise UnknownTarget(f"{self.path}: {module_name} has no attribute {attr!r}") from None
        if not (isinstance(cls, type) and issubclass(cls, Target)):
            raise UnknownTarget(f"{self.path} is not a chaos.targets.base.Target subclass")
        reason = getattr(cls, "unavailable", lambda: None)()
        if reason:
            raise TargetUnavailable(f"{self.name}: {reason}")
        return cls


TARGETS: dict[str, TargetSpec] = {
    spec.name: spec
    for spec in (
        TargetSpec(
            "plain_pool",
            "chaos.targets.plain_pool:PlainPoolTarget",
            "plain_pool (this project's backend: reset on return, configure on every checkout)",
        ),
        TargetSpec(
            "psycopg_pool",
            "chaos.targets.psycopg_pool:PsycopgPoolTarget",
            "bare psycopg_pool ConnectionPool (getconn/putconn, configure sets the zone, check)",
        ),
        TargetSpec(
            "psycopg_pool-nocheck",
            "chaos.targets.psycopg_pool:PsycopgPoolNoCheckTarget",
            "bare psycopg_pool ConnectionPool without a check",
        ),
        TargetSpec(
            "django",
            "chaos.targets.django_pool:DjangoPoolTarget",
            "Django's postgresql backend with OPTIONS['pool'] (native psycopg_pool)",
        ),
        TargetSpec(
            "django-persistent",
            "chaos.targets.django_pool:DjangoPersistentTarget",
            "Django's postgresql backend without a pool: CONN_MAX_AGE > 0, CONN_HEALTH_CHECKS",
        ),
        TargetSpec(
            "sqlalchemy",
            "chaos.targets.sqlalchemy_pool:SQLAlchemyTarget",
            "SQLAlchemy 2 QueuePool on psycopg 3 (pool_pre_ping, reset on return)",
        ),
        TargetSpec(
            "pgbouncer-session",
            "chaos.targets.pgbouncer:PgBouncerSessionTarget",
            "PgBouncer pool_mode=session, a psycopg connection per request (no app pool)",
        ),
        TargetSpec(
            "pgbouncer-transaction",
            "chaos.targets.pgbouncer:PgBouncerTransactionTarget",
            "PgBouncer pool_mode=transaction, a psycopg connection per request (no app pool)",
        ),
        TargetSpec(
            "pgbouncer-statement",
            "chaos.targets.pgbouncer:PgBouncerStatementTarget",
            "PgBouncer pool_mode=statement, a psycopg connection per request (no app pool)",
        ),
        TargetSpec(
            "django-db-geventpool",
            "chaos.targets.django_geventpool:DjangoGeventpoolTarget",
            "django-db-geventpool 4.0.8 (psycopg 3 backend, a gevent.queue pool for greenlets)",
            not_run=GEVENTPOOL_NOT_RUN,
        ),
        TargetSpec(
            "hybrid-psycopg_pool",
            "chaos.targets.pgbouncer:HybridPsycopgPoolTarget",
            "psycopg_pool in front of PgBouncer pool_mode=transaction (prepared statements off)",
        ),
        TargetSpec(
            "hybrid-plain_pool",
            "chaos.targets.pgbouncer:HybridPlainPoolTarget",
            "plain_pool in front of PgBouncer pool_mode=transaction (prepared statements off)",
        ),
    )
}


def resolve(name_or_path: str) -> TargetSpec:
    """A registered name, or ``package.module:Class`` for a target outside this package."""
    if name_or_path in TARGETS:
        return TARGETS[name_or_path]
    if ":" in name_or_path:
        module_name, _, attr = name_or_path.partition(":")
        if module_name and attr.isidentifier():
            return TargetSpec(name_or_path, name_or_path, f"user target {name_or_path}")
    known = ", ".join(TARGETS)
    raise UnknownTarget(
        f"--target {name_or_path!r}: not a known target ({known}) "
        "and not a dotted path 'package.module:Class'"
    )


def factory(spec: TargetSpec) -> Callable[..., Target]:
    """``make(server=, host=, port=, options=)`` for the spec's class (imports it now)."""
    cls = spec.load()

    def make(*, server: Any, host: str, port: int, options: TargetOptions) -> Target:
        return cls(server=server, host=host, port=port, options=options)

    make.__qualname__ = f"make_{spec.name}"
    return make
