"""The toxic registry: every module in this package defines one toxic type.

Adding a toxic means adding one file here with a :class:`Toxic` subclass
decorated with :func:`register`; :func:`load` imports every module of the
package once. :mod:`.base` (the Toxic class) and :mod:`.stub` (what a toxic
runs against) are the contract every toxic codes against.
"""

from __future__ import annotations

import importlib
import pkgutil

from chaos.toxiproxy.toxics.base import Toxic

_REGISTRY: dict[str, type[Toxic]] = {}
_LOADED = False
_CONTRACT = ("base", "stub")


def register(cls: type[Toxic]) -> type[Toxic]:
    """Class decorator: make ``cls`` available under ``cls.type_name``."""
    if not cls.type_name:
        raise ValueError(f"{cls!r} has no type_name")
    _REGISTRY[cls.type_name] = cls
    return cls


def load() -> dict[str, type[Toxic]]:
    """Import every toxic module (once) and return ``{type name: class}``."""
    global _LOADED
    if not _LOADED:
        for info in pkgutil.iter_modules(__path__):
            if info.name not in _CONTRACT:
                importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True
    return _REGISTRY


def get(type_name: str) -> type[Toxic] | None:
    """The toxic class for ``type_name``, or None for an unknown type."""
    return load().get(type_name)


__all__ = ["Toxic", "get", "load", "register"]
