"""Target adapters: the seam between the state machines and a pooled backend.

:class:`~chaos.targets.base.Target` and :class:`~chaos.targets.base.Session`
are what a backend implements to run the same properties;
:class:`~chaos.targets.plain_pool.PlainPoolTarget` is the reference one.
"""

from chaos.targets.base import (
    CheckoutResult,
    RequestThread,
    Session,
    StepTimeout,
    Target,
    TargetOptions,
    TargetRequest,
)

__all__ = [
    "CheckoutResult",
    "RequestThread",
    "Session",
    "StepTimeout",
    "Target",
    "TargetOptions",
    "TargetRequest",
]
