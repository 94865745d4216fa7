"""Proxies, toxic definitions and the validation of everything the API accepts.

Every mutation validates its whole input first and only then changes state,
so a bad request never leaves a half-applied change behind. All methods run
on the event loop under the API lock (see :mod:`chaos.toxiproxy.api`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from chaos.toxiproxy import addresses, bodies, toxics
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
)

DEFAULT_LISTEN = "127.0.0.1:0"
DIRECTIONS = ("upstream", "downstream")


def _json_number(value: float) -> float | int:
    """Go prints float32 1.0 as ``1``; do the same for integral values."""
    return int(value) if value.is_integer() else value


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

    def add_toxic(self, body: Any) -> ToxicSpec:
        given = bodies.toxic(body)
        stream = given.get("stream", "downstream")
        direction = stream.lower()
        if direction not in DIRECTIONS:
            raise INVALID_STREAM
        type_name = given.get("type", "")
        name = given.get("name") or f"{type_name}_{stream}"
        cls = toxics.get(type_name)
        if cls is None:
            raise INVALID_TOXIC_TYPE
        if self.find_toxic(name) is not None:
            raise TOXIC_EXISTS
        attrs = bodies.attributes(cls, given.get("attributes"), dict.fromkeys(cls.attributes, 0))
        toxicity = float(given.get("toxicity", 1.0))
        spec = ToxicSpec(name, type_name, stream, direction, toxicity, attrs)
        self.toxics.append(spec)
        for chain in self._chains(direction):
            chain.add(spec)
        return spec

    def update_toxic(self, name: str, body: Any) -> ToxicSpec:
        spec = self.find_toxic(name)
        if spec is None:
            raise TOXIC_NOT_FOUND
        cls = toxics.get(spec.type)
        assert cls is not None
        given = bodies.toxic_update(body, cls)
        spec.attributes = bodies.attributes(cls, given.get("attributes"), spec.attributes)
        if "toxicity" in given:
            spec.toxicity = float(given["toxicity"])
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


def _proxy_entry(given: dict[str, Any]) -> tuple[str, str, str, bool | None]:
    """(name, listen, upstream, enabled) of a create/populate body; a bad listen is a 400."""
    listen = given.get("listen") or ""
    if listen:
        addresses.split_host_port(listen)
    return (
        given.get("name", ""),
        listen or DEFAULT_LISTEN,
        given.get("upstream", ""),
        given.get("enabled"),
    )


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
        name, listen, upstream, enabled = _proxy_entry(bodies.proxy(body))
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
        given = bodies.proxy(body)
        listen = given.get("listen")
        upstream = given.get("upstream")
        enabled = given.get("enabled")
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
            # Like the real server: a listen failure (500) leaves the proxy disabled with the
            # new address stored, so enabling it or POST /reset fails until the port is free.
            proxy.stop()
            if listen_changed:
                proxy.listen = listen
            if upstream_changed:
                proxy.upstream = upstream
            if want_enabled:
                await proxy.start()
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
        """Every proxy enabled again and every toxic removed; nothing deleted.

        A proxy that cannot listen keeps its toxics and makes the answer a
        500, as on the real server; but where the real server stops there
        (the other proxies, in random order, may be left alone), this one
        still resets every other proxy.
        """
        failure: ApiError | None = None
        for proxy in list(self.proxies.values()):
            try:
                await proxy.start()
            except ApiError as exc:
                failure = failure or exc
                continue
            proxy.remove_all_toxics()
        if failure is not None:
            raise failure

    async def populate(self, body: Any) -> list[Proxy]:
        """Create or replace proxies from a list; same listen+upstream keeps the existing one."""
        entries = []
        for i, item in enumerate(bodies.populate(body), start=1):
            name, listen, upstream, enabled = _proxy_entry(item)
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
            if enabled:
                await proxy.start()  # a failure keeps what was done so far, like the real server
            self.proxies[name] = proxy
            done.append(proxy)
        return done

    def stop_all(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()


__all__ = ["Collection", "Proxy", "ToxicSpec"]
