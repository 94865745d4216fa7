"""Proxies, toxic definitions and the validation of everything the API accepts.

Every mutation validates its whole input first and only then changes state,
so a bad request never leaves a half-applied change behind. All methods run
on the event loop under the API lock (see :mod:`chaos.toxiproxy.api`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

from chaos.toxiproxy import addresses, toxics
from chaos.toxiproxy.chain import Chain
from chaos.toxiproxy.dataplane import Connection
from chaos.toxiproxy.errors import (
    INVALID_STREAM,
    INVALID_TOXIC_TYPE,
    MISSING_FIELD,
    PROXY_EXISTS,
    PROXY_NOT_FOUND,
    TOXIC_EXISTS,
    TOXIC_NOT_FOUND,
    ApiError,
    bad_body,
)

DEFAULT_LISTEN = "127.0.0.1:0"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT32_MAX = 3.4028234663852886e38
DIRECTIONS = ("upstream", "downstream")


def _json_number(value: float) -> float | int:
    """Go prints float32 1.0 as ``1``; do the same for integral values."""
    return int(value) if value.is_integer() else value


def _expect(body: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise bad_body(f"json: cannot unmarshal bool into field {key} of type {what}")
    if not isinstance(value, kind):
        raise bad_body(
            f"json: cannot unmarshal {type(value).__name__} into field {key} of type {what}"
        )
    return value


def _toxicity(body: dict[str, Any]) -> float | None:
    value = body.get("toxicity")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_body("json: cannot unmarshal non-number into field toxicity of type float32")
    value = float(value)
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise bad_body(f"json: number {value} overflows field toxicity of type float32")
    return value


def parse_attributes(cls: type[toxics.Toxic], raw: Any, current: dict[str, int]) -> dict[str, int]:
    """Merge ``raw`` attributes into ``current``: integers only, unknown keys ignored."""
    if raw is None:
        return dict(current)
    if not isinstance(raw, dict):
        raise bad_body(f"json: cannot unmarshal {type(raw).__name__} into field attributes")
    merged = dict(current)
    for name in cls.attributes:
        value = raw.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_body(f"json: cannot unmarshal {value!r} into attribute {name} of type int64")
        if not INT64_MIN <= value <= INT64_MAX:
            raise bad_body(f"json: number {value} overflows attribute {name} of type int64")
        merged[name] = value
    problem = cls.validate(merged)
    if problem:
        raise ApiError(problem, 400)
    return merged


@dataclass(eq=False)
class ToxicSpec:
    """A toxic as the API sees it; each connection runs its own instance of it."""

    name: str
    type: str
    stream: str
    direction: str
    toxicity: float
    attributes: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": _json_number(self.toxicity),
            "attributes": dict(self.attributes),
        }


@dataclass(eq=False)
class Proxy:
    name: str
    listen: str
    upstream: str
    enabled: bool = False
    toxics: list[ToxicSpec] = field(default_factory=list)
    connections: set[Connection] = field(default_factory=set)
    server: asyncio.AbstractServer | None = None

    # --- shape ----------------------------------------------------------------------------
    def ordered_toxics(self) -> list[ToxicSpec]:
        return self.toxics_for("upstream") + self.toxics_for("downstream")

    def toxics_for(self, direction: str) -> list[ToxicSpec]:
        return [t for t in self.toxics if t.direction == direction]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.ordered_toxics()],
        }

    def upstream_addr(self) -> tuple[str, int]:
        try:
            host, port = addresses.split_host_port(self.upstream, "upstream")
        except ApiError as exc:
            raise ValueError(exc.message) from None
        return ("127.0.0.1" if host in ("", "localhost") else host), port

    def resolved_listen(self) -> tuple[str, int]:
        return addresses.resolve_listen(self.listen)

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the (resolved) listen address and accept; ApiError 500 when it is taken."""
        if self.enabled:
            return
        host, port = self.resolved_listen()
        sock = addresses.bind(host, port)
        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(lambda: Connection(self).client, sock=sock)
        except BaseException:
            sock.close()
            raise
        bound = sock.getsockname()
        self.listen = addresses.join_host_port(host, bound[1])
        self.enabled = True

    def stop(self) -> None:
        """Close the listener and every open connection at once."""
        if self.server is not None:
            self.server.close()
            self.server = None
        self.enabled = False
        for conn in list(self.connections):
            conn.abort()
        self.connections.clear()

    # --- toxics ----------------------------------------------------------------------------
    def find_toxic(self, name: str) -> ToxicSpec | None:
        for toxic in self.toxics:
            if toxic.name == name:
                return toxic
        return None

    def _chains(self, direction: str) -> list[Chain]:
        """The toxic chains of ``direction`` of every open connection."""
        attr = "up" if direction == "upstream" else "down"
        return [getattr(conn, attr).chain for conn in list(self.connections) if not conn.closed]

    def add_toxic(self, body: dict[str, Any]) -> ToxicSpec:
        name = _expect(body, "name", str, "string")
        type_name = _expect(body, "type", str, "string")
        stream = _expect(body, "stream", str, "string")
        toxicity = _toxicity(body)
        attributes = body.get("attributes")
        stream = "downstream" if stream is None else stream
        direction = stream.lower()
        if direction not in DIRECTIONS:
            raise INVALID_STREAM
        type_name = type_name or ""
        if not name:
            name = f"{type_name}_{stream}"
        cls = toxics.get(type_name)
        if cls is None:
            raise INVALID_TOXIC_TYPE
        if self.find_toxic(name) is not None:
            raise TOXIC_EXISTS
        attrs = parse_attributes(cls, attributes, dict.fromkeys(cls.attributes, 0))
        spec = ToxicSpec(
            name, type_name, stream, direction, 1.0 if toxicity is None else toxicity, attrs
        )
        self.toxics.append(spec)
        for chain in self._chains(direction):
            chain.add(spec)
        return spec

    def update_toxic(self, name: str, body: dict[str, Any]) -> ToxicSpec:
        spec = self.find_toxic(name)
        if spec is None:
            raise TOXIC_NOT_FOUND
        cls = toxics.get(spec.type)
        assert cls is not None
        toxicity = _toxicity(body)
        attrs = parse_attributes(cls, body.get("attributes"), spec.attributes)
        spec.attributes = attrs
        if toxicity is not None:
            spec.toxicity = toxicity
        for chain in self._chains(spec.direction):
            chain.update(spec)
        return spec

    def remove_toxic(self, name: str) -> None:
        spec = self.find_toxic(name)
        if spec is None:
            raise TOXIC_NOT_FOUND
        self.toxics.remove(spec)
        for chain in self._chains(spec.direction):
            chain.remove(spec)

    def remove_all_toxics(self) -> None:
        for spec in list(self.toxics):
            self.remove_toxic(spec.name)


def _proxy_fields(body: Any, *, where: str = "") -> tuple[str, str, str, bool | None]:
    """(name, listen, upstream, enabled) of a create/populate entry, type-checked."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise bad_body(f"json: cannot unmarshal {type(body).__name__} into proxy{where}")
    name = _expect(body, "name", str, "string") or ""
    listen = _expect(body, "listen", str, "string") or ""
    upstream = _expect(body, "upstream", str, "string") or ""
    enabled = _expect(body, "enabled", bool, "bool")
    if listen:
        addresses.split_host_port(listen)
    return name, listen or DEFAULT_LISTEN, upstream, enabled


class Collection:
    """Every proxy of the server, by name."""

    def __init__(self) -> None:
        self.proxies: dict[str, Proxy] = {}

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise PROXY_NOT_FOUND
        return proxy

    async def create(self, body: Any) -> Proxy:
        name, listen, upstream, enabled = _proxy_fields(body)
        if not name:
            raise MISSING_FIELD.joined("name")
        if not upstream:
            raise MISSING_FIELD.joined("upstream")
        if name in self.proxies:
            raise PROXY_EXISTS
        proxy = Proxy(name, listen, upstream)
        if enabled is None or enabled:
            proxy.resolved_listen()  # a 400 for a bad host before binding
            await proxy.start()
        self.proxies[name] = proxy
        return proxy

    async def update(self, name: str, body: Any) -> Proxy:
        proxy = self.get(name)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise bad_body(f"json: cannot unmarshal {type(body).__name__} into proxy")
        listen = _expect(body, "listen", str, "string")
        upstream = _expect(body, "upstream", str, "string")
        enabled = _expect(body, "enabled", bool, "bool")
        if listen is not None:
            listen = listen or DEFAULT_LISTEN
            new_addr = addresses.resolve_listen(listen)
        if upstream is not None and not upstream:
            raise MISSING_FIELD.joined("upstream")
        want_enabled = proxy.enabled if enabled is None else enabled
        listen_changed = listen is not None and (
            new_addr[1] == 0 or new_addr != proxy.resolved_listen()
        )
        upstream_changed = upstream is not None and upstream != proxy.upstream
        if listen_changed or upstream_changed:
            old = (proxy.listen, proxy.upstream, proxy.enabled)
            proxy.stop()
            if listen_changed:
                proxy.listen = listen
            if upstream_changed:
                proxy.upstream = upstream
            if want_enabled:
                try:
                    await proxy.start()
                except ApiError:
                    proxy.listen, proxy.upstream = old[0], old[1]
                    if old[2]:
                        with contextlib.suppress(ApiError):
                            await proxy.start()
                    raise
        elif want_enabled and not proxy.enabled:
            await proxy.start()
        elif not want_enabled and proxy.enabled:
            proxy.stop()
        return proxy

    def delete(self, name: str) -> None:
        proxy = self.get(name)
        proxy.stop()
        del self.proxies[name]

    async def reset(self) -> None:
        """Every proxy enabled again and every toxic removed; nothing deleted."""
        failure: ApiError | None = None
        for proxy in list(self.proxies.values()):
            proxy.remove_all_toxics()
            try:
                await proxy.start()
            except ApiError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    async def populate(self, body: Any) -> list[Proxy]:
        """Create or replace proxies from a list; same listen+upstream keeps the existing one."""
        if not isinstance(body, list):
            raise bad_body(f"json: cannot unmarshal {type(body).__name__} into []proxy")
        entries = []
        for i, item in enumerate(body, start=1):
            name, listen, upstream, enabled = _proxy_fields(item, where=f" at proxy {i}")
            if not name:
                raise MISSING_FIELD.joined(f"name at proxy {i}")
            if not upstream:
                raise MISSING_FIELD.joined(f"upstream at proxy {i}")
            entries.append((name, listen, upstream, True if enabled is None else enabled))
        for _name, listen, _upstream, _enabled in entries:
            addresses.resolve_listen(listen)  # every 400 before anything changes
        done: list[Proxy] = []
        for name, listen, upstream, enabled in entries:
            existing = self.proxies.get(name)
            if existing is not None:
                same_listen = addresses.resolve_listen(listen) == existing.resolved_listen()
                if same_listen and existing.upstream == upstream:
                    done.append(existing)
                    continue
                existing.stop()
                del self.proxies[name]
            proxy = Proxy(name, listen, upstream)
            try:
                if enabled:
                    await proxy.start()
            except ApiError as exc:
                exc.extra["proxies"] = [p.to_json() for p in done]
                raise
            self.proxies[name] = proxy
            done.append(proxy)
        return done

    def stop_all(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()


__all__ = ["Collection", "Proxy", "ToxicSpec"]
