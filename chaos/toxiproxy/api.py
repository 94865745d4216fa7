"""The Toxiproxy HTTP API on aiohttp.

Handlers take one lock, so API calls apply one at a time and the data plane
never sees a half-applied change. The responses follow Toxiproxy's api.go
byte for byte where clients could notice: success bodies are compact JSON
from Go's ``json.Marshal``; errors go through Go's ``http.Error``, so their
JSON body ``{"error": ..., "status": ...}`` ends with a newline and is served
as ``text/plain; charset=utf-8``; routing errors are gorilla/mux's (404
``404 page not found``, 405 with an empty body). Every response carries an
``X-Toxiproxy-Request-Id`` (the real server's router skips it on 404/405).
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
from chaos.toxiproxy.errors import ApiError, bad_body
from chaos.toxiproxy.gojson import GoJSONError, decode
from chaos.toxiproxy.model import Collection

log = logging.getLogger("chaos.toxiproxy.api")

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"
COLLECTION: web.AppKey[Collection] = web.AppKey("collection", Collection)
LOCK: web.AppKey[asyncio.Lock] = web.AppKey("lock", asyncio.Lock)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _request_id() -> str:
    """20 lowercase base32 characters, like the xid the real server uses."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)
TEXT = "text/plain; charset=utf-8"


def _dumps(value: Any) -> str:
    """Compact JSON as Go's json.Marshal writes it (HTML characters escaped)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.translate(_GO_ESCAPES)


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(value).encode(), status=status, content_type="application/json")


def text_response(text: str, status: int) -> web.Response:
    """What Go's ``http.Error`` sends: the text plus a newline, as plain text."""
    return web.Response(
        body=(text + "\n").encode(),
        status=status,
        headers={"Content-Type": TEXT, "X-Content-Type-Options": "nosniff"},
    )


def error_response(error: ApiError) -> web.Response:
    """Toxiproxy's apiError: the JSON error through ``http.Error``."""
    return text_response(_dumps({"error": error.message, "status": error.status}), error.status)


async def read_json(request: web.Request) -> Any:
    """The request's JSON body, or a 400 ``bad request body: <Go's decoding error>``."""
    try:
        return decode(await request.read())
    except GoJSONError as exc:
        raise bad_body(str(exc)) from None


@web.middleware
async def toxiproxy_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.headers.get("User-Agent", "").startswith("Mozilla/"):
        response: web.StreamResponse = text_response("User agent not allowed", 403)
    else:
        try:
            response = await handler(request)
        except ApiError as exc:
            response = error_response(exc)
        except web.HTTPMethodNotAllowed:
            response = web.Response(status=405)
        except web.HTTPNotFound:
            response = text_response("404 page not found", 404)
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
    """Not json.Marshal in api.go: a format string, with a space and a newline."""
    body = f'{{"version": "{VERSION}"}}\n'
    return web.Response(
        body=body.encode(), headers={"Content-Type": "application/json;charset=utf-8"}
    )


async def proxy_index(request: web.Request, c: Collection) -> web.StreamResponse:
    return json_response({name: c.proxies[name].to_json() for name in sorted(c.proxies)})


async def proxy_create(request: web.Request, c: Collection) -> web.StreamResponse:
    body = await read_json(request)
    return json_response((await c.create(body)).to_json(), 201)


async def populate(request: web.Request, c: Collection) -> web.StreamResponse:
    """Errors too carry ``proxies`` (always null then: api.go's nil slice) and no newline."""
    try:
        proxies = await c.populate(await read_json(request))
    except ApiError as exc:
        body = {"error": exc.message, "status": exc.status, "proxies": None}
        return json_response(body, exc.status)
    return json_response({"proxies": [p.to_json() for p in proxies] or None}, 201)


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
    return json_response(proxy.add_toxic(await read_json(request)).to_json())


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
    return json_response(proxy.update_toxic(name, await read_json(request)).to_json())


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
