"""The matrix's columns: the registry's targets.

A column's target is built the way every suite builds one
(:func:`chaos.targets.registry.factory`); one that cannot run here is a
``not_run`` column with the registry's reason, one that cannot honour a cell's
options an ``na`` cell.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chaos.faults.connect import proxy_address
from chaos.machines.pool_machine import MachineEnv
from chaos.targets.base import Target, TargetOptions
from chaos.targets.registry import TARGETS, factory, resolve


def column_names() -> list[str]:
    """Every column, in the page's order: the registry's (a PgBouncer column on a machine
    without pgbouncer is ``not_run`` with the registry's reason, "pgbouncer not found")."""
    return list(TARGETS)


@dataclass(frozen=True)
class Address:
    """Where a target's connections go: the server's own address, or a proxy in front."""

    server: Any
    proxy: Any | None = None

    def host_port(self) -> tuple[str, int]:
        if self.proxy is not None:
            return proxy_address(self.proxy)
        return self.server.host, int(self.server.port)


def maker(name: str, address: Address) -> Callable[[TargetOptions], Target]:
    """``make(options)`` for the named target at ``address``; raises TargetUnavailable."""
    make = factory(resolve(name))
    host, port = address.host_port()

    def make_target(options: TargetOptions) -> Target:
        return make(server=address.server, host=host, port=port, options=options)

    return make_target


def machine_env(name: str, address: Address, *, server_faults: bool = False) -> MachineEnv:
    """A MachineEnv for the named target (as tests/properties/conftest.py builds one)."""
    return MachineEnv(
        server=address.server,
        proxy=address.proxy,
        make_target=maker(name, address),
        server_faults=server_faults,
        toxiproxy_kind="embedded" if address.proxy is not None else "none",
    )
