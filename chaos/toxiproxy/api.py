"""The Toxiproxy HTTP API on aiohttp.

Handlers take one lock, so API calls apply one at a time and the data plane
never sees a half-applied change. Success bodies are compact JSON; errors are
``{"error": ..., "status": ...}`` plus a newline; every response carries an
``X-Toxiproxy-Request-Id``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from chaos.toxiproxy import VERSION
from chaos.toxiproxy.errors import USER_AGENT_NOT_ALLOWED, ApiError, bad_body
from chaos.toxiproxy.model import Collection

log = logging.getLogger("chaos.toxiproxy.api")

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"
COLLECTION: web.AppKey[Collection] = web.AppKey("collection", Collection)
LOCK: web.AppKey[asyncio.Lock] = web.AppKey("lock", asyncio.Lock)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _request_id() -> str:
    """20 lowercase base32 characters, like the xid the real server uses."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(value).encode(), status=status, content_type="application/json")


def error_response(error: ApiError) -> web.Response:
    body = {"error": error.message, "status": error.status, **error.extra}
    return web.Response(
        body=(_dumps(body) + "\n").encode(), status=error.status, content_type="application/json"
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


async def read_json(request: web.Request) -> Any:
    """The request's JSON body, or a 400 ``bad request body: ...``."""
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_body("invalid UTF-8 in request body") from None
    text = text.strip(" \t\r\n")
    if not text:
        raise bad_body("EOF")
    try:
        value, _end = json.JSONDecoder(parse_constant=_reject_constant).raw_decode(text)
    except (ValueError, RecursionError) as exc:
        raise bad_body(
            str(exc).split(":")[0] if isinstance(exc, ValueError) else "too deep"
        ) from None
    return value


@web.middleware
async def toxiproxy_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.headers.get("User-Agent", "").startswith("Mozilla/"):
        response: web.StreamResponse = error_response(USER_AGENT_NOT_ALLOWED)
    else:
        try:
            response = await handler(request)
        except ApiError as exc:
            response = error_response(exc)
        except web.HTTPMethodNotAllowed:
            response = error_response(ApiError("405 method not allowed", 405))
        except web.HTTPNotFound:
            response = error_response(ApiError("404 page not found", 404))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(ApiError(exc.reason, exc.status))
        except Exception:  # never a crash; a bug shows as 500 and in the log
            log.exception("unexpected error handling %s %s", request.method, request.path)
            response = error_response(ApiError("internal error", 500))
    response.headers["X-Toxiproxy-Request-Id"] = _request_id()
    return response


def _locked(fn: Callable[[web.Request, Collection], Awaitable[web.StreamResponse]]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        async with request.app[LOCK]:
            return await fn(request, request.app[COLLECTION])

    return handler


async def version(request: web.Request, c: Collection) -> web.StreamResponse:
    return json_response({"version": VERSION})


async def proxy_index(request: web.Request, c: Collection) -> web.StreamResponse:
    return json_response({name: c.proxies[name].to_json() for name in sorted(c.proxies)})


async def proxy_create(request: web.Request, c: Collection) -> web.StreamResponse:
    body = await read_json(request)
    return json_response((await c.create(body)).to_json(), 201)


async def populate(request: web.Request, c: Collection) -> web.StreamResponse:
    try:
        body = await read_json(request)
        proxies = await c.populate(body)
    except ApiError as exc:
        extra = {"proxies": [], **exc.extra}
        raise ApiError(exc.message, exc.status, **extra) from None
    return json_response({"proxies": [p.to_json() for p in proxies]}, 201)


async def proxy_show(request: web.Request, c: Collection) -> web.StreamResponse:
    return json_response(c.get(request.match_info["proxy"]).to_json())


async def proxy_update(request: web.Request, c: Collection) -> web.StreamResponse:
    proxy = c.get(request.match_info["proxy"])
    body = await read_json(request)
    return json_response((await c.update(proxy.name, body)).to_json())


async def proxy_delete(request: web.Request, c: Collection) -> web.StreamResponse:
    c.delete(request.match_info["proxy"])
    return web.Response(status=204)


async def toxic_index(request: web.Request, c: Collection) -> web.StreamResponse:
    proxy = c.get(request.match_info["proxy"])
    return json_response([t.to_json() for t in proxy.ordered_toxics()])


async def toxic_create(request: web.Request, c: Collection) -> web.StreamResponse:
    proxy = c.get(request.match_info["proxy"])
    body = await read_json(request)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise bad_body(f"json: cannot unmarshal {type(body).__name__} into toxic")
    return json_response(proxy.add_toxic(body).to_json())


async def toxic_show(request: web.Request, c: Collection) -> web.StreamResponse:
    proxy = c.get(request.match_info["proxy"])
    toxic = proxy.find_toxic(request.match_info["toxic"])
    if toxic is None:
        raise ApiError("toxic not found", 404)
    return json_response(toxic.to_json())


async def toxic_update(request: web.Request, c: Collection) -> web.StreamResponse:
    proxy = c.get(request.match_info["proxy"])
    name = request.match_info["toxic"]
    if proxy.find_toxic(name) is None:
        raise ApiError("toxic not found", 404)
    body = await read_json(request)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise bad_body(f"json: cannot unmarshal {type(body).__name__} into toxic")
    return json_response(proxy.update_toxic(name, body).to_json())


async def toxic_delete(request: web.Request, c: Collection) -> web.StreamResponse:
    c.get(request.match_info["proxy"]).remove_toxic(request.match_info["toxic"])
    return web.Response(status=204)


async def reset(request: web.Request, c: Collection) -> web.StreamResponse:
    await c.reset()
    return web.Response(status=204)


async def debug_state(request: web.Request, c: Collection) -> web.StreamResponse:
    """Opt-in (``--debug-endpoints``): what the leak tests count."""
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = -1
    return json_response(
        {
            "tasks": len(asyncio.all_tasks()),
            "connections": sum(len(p.connections) for p in c.proxies.values()),
            "fds": fds,
        }
    )


def make_app(collection: Collection, *, debug_endpoints: bool = False) -> web.Application:
    app = web.Application(middlewares=[toxiproxy_middleware], client_max_size=1024**2)
    app[COLLECTION] = collection
    app[LOCK] = asyncio.Lock()
    routes = [
        ("GET", "/version", version),
        ("POST", "/reset", reset),
        ("GET", "/proxies", proxy_index),
        ("POST", "/proxies", proxy_create),
        ("POST", "/populate", populate),
        ("GET", "/proxies/{proxy}", proxy_show),
        ("POST", "/proxies/{proxy}", proxy_update),
        ("PATCH", "/proxies/{proxy}", proxy_update),
        ("DELETE", "/proxies/{proxy}", proxy_delete),
        ("GET", "/proxies/{proxy}/toxics", toxic_index),
        ("POST", "/proxies/{proxy}/toxics", toxic_create),
        ("GET", "/proxies/{proxy}/toxics/{toxic}", toxic_show),
        ("POST", "/proxies/{proxy}/toxics/{toxic}", toxic_update),
        ("PATCH", "/proxies/{proxy}/toxics/{toxic}", toxic_update),
        ("DELETE", "/proxies/{proxy}/toxics/{toxic}", toxic_delete),
    ]
    if debug_endpoints:
        routes.append(("GET", "/debug/state", debug_state))
    for method, path, fn in routes:
        app.router.add_route(method, path, _locked(fn))
    return app
