"""One small surface over the two proxy objects the suite hands out.

Network faults need four things from a proxy: add a named toxic, remove it
(telling whether it was there), list toxic names, and disable / enable the
proxy. The harness's :class:`chaos.toxiproxy.harness.ProxyHandle` and
toxiproxy-python's ``Proxy`` both can, with different signatures;
:func:`proxy_control` wraps either so that faults do not care which.
"""

from __future__ import annotations

from typing import Any, Protocol

try:
    from toxiproxy.exceptions import NotFound as _ClientNotFound
except ImportError:  # pragma: no cover - toxiproxy-python is a chaos dependency
    _ClientNotFound = LookupError


class ProxyControl(Protocol):
    """What network faults use."""

    target: Any

    def add_toxic(self, *, name: str, type: str, stream: str, attributes: dict[str, int]) -> None:
        """Add a toxic with toxicity 1.0."""

    def remove_toxic(self, name: str) -> bool:
        """Remove a toxic; False when there was none by that name."""

    def toxic_names(self) -> list[str]:
        """The names of the proxy's toxics ([] when the proxy itself is gone)."""

    def enable(self) -> None: ...

    def disable(self) -> None: ...


def _is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, _ClientNotFound) or getattr(exc, "status", None) == 404


class _HandleControl:
    """Over :class:`chaos.toxiproxy.harness.ProxyHandle` (attributes as keywords)."""

    def __init__(self, handle: Any):
        self.target = handle

    def add_toxic(self, *, name: str, type: str, stream: str, attributes: dict[str, int]) -> None:
        self.target.add_toxic(type, stream=stream, name=name, toxicity=1.0, **attributes)

    def remove_toxic(self, name: str) -> bool:
        try:
            self.target.remove_toxic(name)
        except Exception as exc:
            if _is_not_found(exc):
                return False
            raise
        return True

    def toxic_names(self) -> list[str]:
        try:
            return [t["name"] for t in self.target.toxics()]
        except Exception as exc:
            if _is_not_found(exc):
                return []
            raise

    def enable(self) -> None:
        self.target.enable()

    def disable(self) -> None:
        self.target.disable()


class _ClientControl(_HandleControl):
    """Over toxiproxy-python's ``Proxy`` (``attributes=`` dict, ``destroy_toxic``)."""

    def add_toxic(self, *, name: str, type: str, stream: str, attributes: dict[str, int]) -> None:
        self.target.add_toxic(
            type=type, attributes=attributes, stream=stream, name=name, toxicity=1.0
        )

    def remove_toxic(self, name: str) -> bool:
        try:
            self.target.destroy_toxic(name)
        except Exception as exc:
            if _is_not_found(exc):
                return False
            raise
        return True

    def toxic_names(self) -> list[str]:
        try:
            return list(self.target.toxics())
        except Exception as exc:
            if _is_not_found(exc):
                return []
            raise


def proxy_control(proxy: Any) -> ProxyControl:
    """Wrap a harness ``ProxyHandle`` or a toxiproxy-python ``Proxy``."""
    if hasattr(proxy, "remove_toxic") and hasattr(proxy, "toxics"):
        return _HandleControl(proxy)
    if hasattr(proxy, "destroy_toxic") and hasattr(proxy, "toxics"):
        return _ClientControl(proxy)
    raise TypeError(f"{proxy!r} is neither a harness ProxyHandle nor a toxiproxy-python Proxy")
