"""The catalogue: fault name -> fault class, like Toxiproxy's table of toxics.

Fault families register their classes with :func:`register`; users add their
own the same way. :func:`fault_class` and :func:`make` fail with an error that
names the unknown fault and lists the known ones.
"""

from __future__ import annotations

from typing import Any, TypeVar

from chaos.faults.base import Fault, UnknownFault

F = TypeVar("F", bound=type[Fault])

CATALOGUE: dict[str, type[Fault]] = {}
ALIASES: dict[str, str] = {}


def register(cls: F | None = None, *, aliases: tuple[str, ...] = ()) -> Any:
    """Add a fault class under ``cls.name`` and aliases.

    Use as ``@register`` or ``@register(aliases=("stop",))``.
    """
    if cls is None:
        return lambda c: register(c, aliases=aliases)
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no catalogue name")
    for key in (cls.name, *aliases):
        existing = CATALOGUE.get(key) or CATALOGUE.get(ALIASES.get(key, ""))
        if existing is not None and existing is not cls:
            raise ValueError(f"fault name {key!r} already registered by {existing.__name__}")
    CATALOGUE[cls.name] = cls
    for alias in aliases:
        ALIASES[alias] = cls.name
    return cls


def fault_class(name: str) -> type[Fault]:
    """The class registered under ``name`` (or an alias); UnknownFault otherwise."""
    key = ALIASES.get(name, name)
    try:
        return CATALOGUE[key]
    except KeyError:
        known = ", ".join(sorted(CATALOGUE))
        aliases = ", ".join(f"{a} -> {n}" for a, n in sorted(ALIASES.items()))
        known += f" (aliases: {aliases})" if aliases else ""
        raise UnknownFault(f"unknown fault {name!r}; the catalogue has: {known}") from None


def make(name: str, **params: Any) -> Fault:
    """Build a fault by catalogue name: ``make("latency", ms=200, jitter=20)``."""
    return fault_class(name)(**params)


def describe() -> str:
    """The catalogue as text: name, target, effects and the first docstring line."""
    lines = []
    for name in sorted(CATALOGUE):
        cls = CATALOGUE[name]
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        aliases = sorted(a for a, n in ALIASES.items() if n == name)
        alias_text = f" (alias {', '.join(aliases)})" if aliases else ""
        effects = cls.default_effects
        flags = [
            f
            for f in (
                "slows",
                "blocks",
                "may_fail_in_flight",
                "may_fail_new_connections",
                "breaks_open_connections",
                "breaks_on_heal",
                "instantaneous",
            )
            if getattr(effects, f)
        ]
        lines.append(
            f"{name}{alias_text} [{cls.target_kind}] {cls.__name__}: {summary}"
            f"\n    effects: {', '.join(flags) or 'none'}"
        )
    return "\n".join(lines)
