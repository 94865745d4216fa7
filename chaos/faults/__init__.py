"""The fault catalogue (the nemesis): named faults with apply and heal.

- :mod:`~chaos.faults.base`: the :class:`Fault` base, :class:`Effects` and errors.
- :mod:`~chaos.faults.catalogue`: name -> class registry (``make("latency", ms=200)``).
- :mod:`~chaos.faults.network`: Toxiproxy toxics and ``down``.
- :mod:`~chaos.faults.server`: restarts, crash, terminate, outage.
- :mod:`~chaos.faults.nemesis`: :class:`Nemesis` applies and heals, journals in
  a :class:`FaultSchedule` (:mod:`~chaos.faults.schedule`).
- :mod:`~chaos.faults.outcomes`: ok / fail / info from the active faults.
- :mod:`~chaos.faults.connect`: chaos-safe connect options and a client-side deadline.
- :mod:`~chaos.faults.strategies`: Hypothesis strategies (imported on demand).

Usage::

    from chaos.faults import Latency, Nemesis
    nemesis = Nemesis(proxy, server)
    with nemesis.latency(200, jitter=20):
        ...
    nemesis.apply(Latency(ms=50, stream="both"))
    nemesis.heal_all()
"""

from chaos.faults.base import (
    STREAMS,
    Effects,
    Fault,
    FaultConflict,
    FaultError,
    FaultNotAllowed,
    FaultTarget,
    HealError,
    Stream,
    UnknownFault,
)
from chaos.faults.catalogue import ALIASES, CATALOGUE, describe, fault_class, make, register
from chaos.faults.connect import (
    CHAOS_TIMEOUTS,
    ChaosTimeouts,
    chaos_connect_kwargs,
    chaos_conninfo,
    chaos_db_settings,
    proxy_address,
    query_deadline,
    shutdown_socket,
)
from chaos.faults.nemesis import SERVER_FAULTS_NEED_PERMISSION, ActiveFault, Nemesis
from chaos.faults.network import (
    NETWORK_FAULTS,
    Bandwidth,
    Down,
    HalfOpen,
    Latency,
    LimitData,
    ResetPeer,
    Slicer,
    SlowClose,
    TimedClose,
    ToxicFault,
)
from chaos.faults.outcomes import Outcome, classify, combined_effects, explained, is_connection_lost
from chaos.faults.schedule import FaultEvent, FaultInterval, FaultSchedule
from chaos.faults.server import (
    SERVER_FAULTS,
    Crash,
    Outage,
    RestartFast,
    RestartImmediate,
    ServerFault,
    TerminateBackends,
)

__all__ = [
    "ALIASES",
    "CATALOGUE",
    "CHAOS_TIMEOUTS",
    "NETWORK_FAULTS",
    "SERVER_FAULTS",
    "SERVER_FAULTS_NEED_PERMISSION",
    "STREAMS",
    "ActiveFault",
    "Bandwidth",
    "ChaosTimeouts",
    "Crash",
    "Down",
    "Effects",
    "Fault",
    "FaultConflict",
    "FaultError",
    "FaultEvent",
    "FaultInterval",
    "FaultNotAllowed",
    "FaultSchedule",
    "FaultTarget",
    "HalfOpen",
    "HealError",
    "Latency",
    "LimitData",
    "Nemesis",
    "Outage",
    "Outcome",
    "ResetPeer",
    "RestartFast",
    "RestartImmediate",
    "ServerFault",
    "Slicer",
    "SlowClose",
    "Stream",
    "TerminateBackends",
    "TimedClose",
    "ToxicFault",
    "UnknownFault",
    "chaos_connect_kwargs",
    "chaos_conninfo",
    "chaos_db_settings",
    "classify",
    "combined_effects",
    "describe",
    "explained",
    "fault_class",
    "is_connection_lost",
    "make",
    "proxy_address",
    "query_deadline",
    "register",
    "shutdown_socket",
]
