"""HTTP API conformance with Toxiproxy 2.12 (upstream api.go, proxy.go, toxic_collection.go).

Driven through toxiproxy-python where it can express the call, raw HTTP for
malformed input and exact status/message checks. Runs against a real server
too when ``TOXIPROXY_URL`` is set.
"""

from __future__ import annotations

import json
import socket

import pytest
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

pytestmark = pytest.mark.toxiproxy_conformance


TEXT = "text/plain; charset=utf-8"


def error_of(response, populate: bool = False) -> tuple[int, str]:
    """(status, message) of an error response, checking its shape.

    Errors go through Go's ``http.Error``: JSON plus a newline, served as
    plain text. /populate writes its own: JSON, no newline, ``proxies`` null.
    """
    body = json.loads(response.raw)
    assert body["status"] == response.status
    if populate:
        assert response.headers["content-type"] == "application/json"
        assert not response.raw.endswith(b"\n")
        assert list(body) == ["error", "status", "proxies"] and body["proxies"] is None
    else:
        assert response.headers["content-type"] == TEXT
        assert response.raw.endswith(b"\n")
        assert list(body) == ["error", "status"]
    return response.status, body["error"]


def create(api, name, upstream="127.0.0.1:9", **extra):
    return api.request("POST", "/proxies", {"name": name, "upstream": upstream, **extra})


# --- process-wide -------------------------------------------------------------------------
def test_version(api):
    """Exactly ``{"version": "X"}`` and a newline (a format string in api.go, not Marshal)."""
    response = api.request("GET", "/version")
    assert response.status == 200
    version = response.json()["version"]
    assert isinstance(version, str)
    assert response.raw == b'{"version": "' + version.encode() + b'"}\n'
    assert response.headers["content-type"] == "application/json;charset=utf-8"
    assert api.client().version()


def test_every_routed_response_has_a_request_id(api):
    for method, path in [("GET", "/version"), ("GET", "/proxies/absent"), ("GET", "/proxies")]:
        response = api.request(method, path)
        assert response.headers.get("x-toxiproxy-request-id")
    ids = {api.request("GET", "/version").headers["x-toxiproxy-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_routing_errors_have_a_request_id_too(api, embedded_only):
    """Deviation: gorilla/mux runs no middleware for 404/405, so the real server has none."""
    for method, path in [("GET", "/nope"), ("DELETE", "/version")]:
        assert api.request(method, path).headers.get("x-toxiproxy-request-id")


def test_browser_user_agent_is_refused(api):
    response = api.request("GET", "/proxies", headers={"User-Agent": "Mozilla/5.0 (X11)"})
    assert response.status == 403
    assert response.raw == b"User agent not allowed\n"  # http.Error: plain text
    assert response.headers["content-type"] == TEXT


@pytest.mark.parametrize("path", ["/nope", "/proxies/x/toxics/y/z", "/version/"])
def test_unknown_path_is_404(api, path):
    response = api.request("GET", path)
    assert response.status == 404
    assert response.raw == b"404 page not found\n"
    assert response.headers["content-type"] == TEXT


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/version"),
        ("DELETE", "/proxies"),
        ("GET", "/reset"),
        ("GET", "/populate"),
        ("PUT", "/proxies/x"),
        ("PUT", "/proxies/x/toxics"),
    ],
)
def test_wrong_method_is_405(api, method, path):
    response = api.request(method, path)
    assert response.status == 405
    assert response.raw == b""


# --- proxies ------------------------------------------------------------------------------
def test_create_show_list_delete(api, pname):
    name = pname()
    client = api.client()
    proxy = client.create(upstream="127.0.0.1:9", name=name, listen="127.0.0.1:0")
    assert proxy.enabled is True
    host, port = proxy.listen.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    shown = api.request("GET", f"/proxies/{name}")
    assert shown.status == 200
    assert list(shown.json()) == ["name", "listen", "upstream", "enabled", "toxics"]
    assert shown.json() == {
        "name": name,
        "listen": proxy.listen,
        "upstream": "127.0.0.1:9",
        "enabled": True,
        "toxics": [],
    }
    assert b" " not in shown.raw  # compact JSON
    assert name in client.proxies()
    assert api.proxies()[name]["listen"] == proxy.listen
    assert proxy.destroy()
    assert client.get_proxy(name) is None
    with pytest.raises(NotFound):
        proxy.destroy()


def test_create_returns_201_and_localhost_resolves(api, pname):
    response = create(api, pname(), listen="localhost:0")
    assert response.status == 201
    assert response.json()["listen"].startswith("127.0.0.1:")


def test_create_errors(api, pname):
    name = pname()
    assert create(api, name).status == 201
    assert error_of(create(api, name)) == (409, "proxy already exists")
    assert error_of(api.request("POST", "/proxies", {"upstream": "x:1"})) == (
        400,
        "missing required field: name",
    )
    assert error_of(api.request("POST", "/proxies", {"name": pname()})) == (
        400,
        "missing required field: upstream",
    )
    status, message = error_of(api.request("POST", "/proxies", raw="{not json"))
    assert status == 400 and message.startswith("bad request body: ")
    status, message = error_of(api.request("POST", "/proxies", raw=""))
    assert status == 400 and message.startswith("bad request body")
    with pytest.raises(ProxyExists):
        api.client().create(upstream="127.0.0.1:9", name=name)


def test_listen_address_taken_is_500_with_os_error(api, pname):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        name = pname()
        status, message = error_of(create(api, name, listen=f"127.0.0.1:{port}"))
        assert status == 500
        assert "address already in use" in message
        assert name not in api.proxies()


def test_disabled_proxy_keeps_listen_as_given(api, pname):
    name = pname()
    response = create(api, name, listen="localhost:0", enabled=False)
    assert response.status == 201
    assert response.json()["listen"] == "localhost:0"
    assert response.json()["enabled"] is False
    enabled = api.update_proxy(name, enabled=True)
    assert enabled["listen"].startswith("127.0.0.1:") and not enabled["listen"].endswith(":0")


def test_unknown_fields_are_ignored(api, pname):
    response = create(api, pname(), colour="blue", toxics=[{"type": "latency"}])
    assert response.status == 201
    assert response.json()["toxics"] == []


def test_field_names_match_case_insensitively(api, pname):
    """Go's encoding/json: an exact key wins, else any case matches."""
    name = pname()
    response = api.request("POST", "/proxies", {"NAME": name, "Upstream": "127.0.0.1:9"})
    assert response.status == 201
    assert response.json()["name"] == name and response.json()["upstream"] == "127.0.0.1:9"
    toxic = api.request(
        "POST", f"/proxies/{name}/toxics", {"Type": "latency", "Attributes": {"LATENCY": 7}}
    )
    assert toxic.json()["attributes"] == {"latency": 7, "jitter": 0}


def test_update_is_partial_and_post_or_patch(api, pname):
    name = pname()
    info = create(api, name).json()
    for method in ("POST", "PATCH"):
        response = api.request(method, f"/proxies/{name}", {"upstream": "127.0.0.1:10"})
        assert response.status == 200
        assert response.json()["listen"] == info["listen"]
        assert response.json()["upstream"] == "127.0.0.1:10"
    disabled = api.request("POST", f"/proxies/{name}", {"enabled": False}).json()
    assert disabled["enabled"] is False and disabled["upstream"] == "127.0.0.1:10"
    assert api.request("POST", "/proxies/absent", {"enabled": False}).status == 404
    status, message = error_of(api.request("POST", f"/proxies/{name}", raw="[1,"))
    assert status == 400 and message.startswith("bad request body")


def test_update_to_a_busy_port_leaves_the_proxy_disabled_there(api, pname):
    """The real server stores the new listen and stays disabled; /reset then fails."""
    name = pname()
    create(api, name)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        status, message = error_of(api.request("PATCH", f"/proxies/{name}", {"listen": busy}))
        assert status == 500 and "address already in use" in message
        info = api.get_proxy(name)
        assert (info["enabled"], info["listen"]) == (False, busy)
        status, message = error_of(api.request("POST", "/reset"))
        assert status == 500 and "address already in use" in message
    assert api.request("POST", "/reset").status == 204  # the port is free again
    info = api.get_proxy(name)
    assert (info["enabled"], info["listen"]) == (True, busy)


def test_reset_past_a_proxy_that_cannot_listen_resets_the_others(api, pname, embedded_only):
    """Deviation: the real server stops at the failing proxy (others, in map order, may not
    be reset); the embedded one resets every other proxy, then answers the 500."""
    stuck, other = pname(), pname()
    create(api, stuck)
    create(api, other, enabled=False)
    api.add_toxic(other, "latency", attributes={"latency": 5})
    api.add_toxic(stuck, "noop", name="kept")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        assert api.request("PATCH", f"/proxies/{stuck}", {"listen": busy}).status == 500
        assert api.request("POST", "/reset").status == 500
        proxies = api.proxies()
    assert proxies[other]["enabled"] and proxies[other]["toxics"] == []
    assert [t["name"] for t in proxies[stuck]["toxics"]] == ["kept"]  # as the real server


def test_proxy_not_found(api):
    for method in ("GET", "DELETE"):
        assert error_of(api.request(method, "/proxies/absent")) == (404, "proxy not found")
    assert error_of(api.request("GET", "/proxies/absent/toxics")) == (404, "proxy not found")
    assert error_of(api.request("POST", "/proxies/absent/toxics", {"type": "noop"})) == (
        404,
        "proxy not found",
    )
    assert error_of(api.request("GET", "/proxies/absent/toxics/t")) == (404, "proxy not found")


def test_delete_is_204(api, pname):
    name = pname()
    create(api, name)
    response = api.request("DELETE", f"/proxies/{name}")
    assert response.status == 204 and response.raw == b""


# --- toxics -------------------------------------------------------------------------------
def test_toxic_defaults_and_shape(api, pname):
    name = pname()
    proxy = api.client().create(upstream="127.0.0.1:9", name=name)
    assert api.request("GET", f"/proxies/{name}/toxics").json() == []
    response = api.request("POST", f"/proxies/{name}/toxics", {"type": "latency"})
    assert response.status == 200
    toxic = response.json()
    assert list(toxic) == ["name", "type", "stream", "toxicity", "attributes"]
    assert toxic == {
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
        "attributes": {"latency": 0, "jitter": 0},
    }
    assert set(proxy.toxics()) == {"latency_downstream"}


def test_stream_is_case_insensitive_and_stored_as_sent(api, pname):
    name = pname()
    create(api, name)
    toxic = api.request("POST", f"/proxies/{name}/toxics", {"type": "noop", "stream": "UpStream"})
    assert toxic.status == 200
    assert toxic.json()["stream"] == "UpStream"
    assert toxic.json()["name"] == "noop_UpStream"
    status, message = error_of(
        api.request("POST", f"/proxies/{name}/toxics", {"type": "noop", "stream": "sideways"})
    )
    assert (status, message) == (400, "stream was invalid, can be either upstream or downstream")


def test_toxic_errors(api, pname):
    name = pname()
    create(api, name)
    url = f"/proxies/{name}/toxics"
    assert error_of(api.request("POST", url, {"type": "volcano"})) == (400, "invalid toxic type")
    assert api.request("POST", url, {"type": "noop", "name": "n"}).status == 200
    assert error_of(
        api.request("POST", url, {"type": "latency", "name": "n", "stream": "upstream"})
    ) == (409, "toxic already exists")
    status, message = error_of(api.request("POST", url, raw="{"))
    assert status == 400 and message.startswith("bad request body")
    status, message = error_of(
        api.request("POST", url, {"type": "latency", "attributes": {"latency": 100.0}})
    )
    assert status == 400 and message.startswith("bad request body")
    assert error_of(api.request("GET", f"{url}/absent")) == (404, "toxic not found")
    assert error_of(api.request("DELETE", f"{url}/absent")) == (404, "toxic not found")
    assert error_of(api.request("POST", f"{url}/absent", {})) == (404, "toxic not found")
    with pytest.raises(InvalidToxic):
        api.client().get_proxy(name).add_toxic(type="volcano")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "EOF"),
        ('{"name": "a"', "unexpected EOF"),
        ("[1,", "unexpected EOF"),
        ("xyz", "invalid character 'x' looking for beginning of value"),
        ("{not json", "invalid character 'n' looking for beginning of object key string"),
        ('{"name" 1}', "invalid character '1' after object key"),
        (
            '{"name": 5, "upstream": "x:1"}',
            "json: cannot unmarshal number into Go struct field Proxy.name of type string",
        ),
        (
            '{"name": "n", "upstream": "x:1", "enabled": "yes"}',
            "json: cannot unmarshal string into Go struct field Proxy.enabled of type bool",
        ),
    ],
)
def test_proxy_body_errors_use_go_wording(api, raw, message):
    assert error_of(api.request("POST", "/proxies", raw=raw)) == (
        400,
        f"bad request body: {message}",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"type": "latency", "attributes": {"latency": "x"}},
            "json: cannot unmarshal string into Go struct field"
            " LatencyToxic.attributes.latency of type int64",
        ),
        (
            {"type": "latency", "attributes": {"latency": 100.0}},
            "json: cannot unmarshal number 100.0 into Go struct field"
            " LatencyToxic.attributes.latency of type int64",
        ),
        (
            {"type": "slicer", "attributes": {"average_size": "x"}},
            "json: cannot unmarshal string into Go struct field"
            " SlicerToxic.attributes.average_size of type int",
        ),
        (
            {"type": "noop", "toxicity": "high"},
            "json: cannot unmarshal string into Go struct field"
            " ToxicWrapper.toxicity of type float32",
        ),
    ],
)
def test_toxic_body_errors_use_go_wording(api, pname, body, message):
    name = pname()
    create(api, name)
    response = api.request("POST", f"/proxies/{name}/toxics", body)
    assert error_of(response) == (400, f"bad request body: {message}")


def test_unknown_attributes_ignored_missing_are_zero(api, pname):
    name = pname()
    create(api, name)
    toxic = api.request(
        "POST",
        f"/proxies/{name}/toxics",
        {"type": "slicer", "attributes": {"average_size": 10, "colour": 1.5}},
    )
    assert toxic.json()["attributes"] == {"average_size": 10, "size_variation": 0, "delay": 0}


def test_listing_order_upstream_first_then_creation_order(api, pname):
    name = pname()
    proxy = api.client().create(upstream="127.0.0.1:9", name=name)
    for toxic_name, stream in [
        ("d1", "downstream"),
        ("u1", "upstream"),
        ("d2", "downstream"),
        ("u2", "upstream"),
    ]:
        proxy.add_toxic(name=toxic_name, type="noop", stream=stream)
    names = [t["name"] for t in api.request("GET", f"/proxies/{name}/toxics").json()]
    assert names == ["u1", "u2", "d1", "d2"]
    assert [t["name"] for t in api.get_proxy(name)["toxics"]] == names


def test_toxic_update_merges_attributes_and_keeps_toxicity(api, pname):
    name = pname()
    create(api, name)
    api.add_toxic(
        name, "latency", name="lat", toxicity=0.5, attributes={"latency": 10, "jitter": 3}
    )
    for method in ("POST", "PATCH"):
        response = api.request(
            method,
            f"/proxies/{name}/toxics/lat",
            {
                "attributes": {"latency": 20},
                "name": "renamed",
                "type": "noop",
                "stream": "upstream",
            },
        )
        assert response.status == 200
        assert response.json() == {
            "name": "lat",
            "type": "latency",
            "stream": "downstream",
            "toxicity": 0.5,
            "attributes": {"latency": 20, "jitter": 3},
        }
    assert api.update_toxic(name, "lat", toxicity=1.0)["toxicity"] == 1
    status, message = error_of(
        api.request("POST", f"/proxies/{name}/toxics/lat", {"attributes": {"latency": "x"}})
    )
    assert status == 400 and message.startswith("bad request body")
    assert api.toxics(name)[0]["attributes"] == {"latency": 20, "jitter": 3}


def test_toxic_delete(api, pname):
    name = pname()
    proxy = api.client().create(upstream="127.0.0.1:9", name=name)
    proxy.add_toxic(type="timeout", attributes={"timeout": 5})
    assert proxy.destroy_toxic("timeout_downstream")
    assert proxy.toxics() == {}


def test_negative_bandwidth_is_400(api, pname, embedded_only):
    name = pname()
    create(api, name)
    status, message = error_of(
        api.request(
            "POST", f"/proxies/{name}/toxics", {"type": "bandwidth", "attributes": {"rate": -1}}
        )
    )
    assert status == 400 and message.startswith("bad request body")
    api.add_toxic(name, "bandwidth", name="bw", attributes={"rate": 10})
    response = api.request("POST", f"/proxies/{name}/toxics/bw", {"attributes": {"rate": -5}})
    assert response.status == 400
    assert api.toxics(name)[0]["attributes"] == {"rate": 10}


# --- /reset and /populate -------------------------------------------------------------------
def test_reset_enables_all_and_removes_toxics(api, pname):
    a, b = pname(), pname()
    create(api, a)
    create(api, b, enabled=False)
    api.add_toxic(a, "latency", attributes={"latency": 5})
    assert api.client().reset()
    response = api.request("POST", "/reset")
    assert response.status == 204
    proxies = api.proxies()
    assert proxies[a]["enabled"] and proxies[b]["enabled"]
    assert proxies[a]["toxics"] == [] and a in proxies and b in proxies


def test_populate_creates_keeps_and_replaces(api, pname, echo_server):
    keep, replace, new = pname(), pname(), pname()
    create(api, keep)
    listen_keep = api.get_proxy(keep)["listen"]
    create(api, replace)
    api.add_toxic(keep, "noop", name="stays")
    api.update_proxy(keep, enabled=False)
    listen_keep_disabled = api.get_proxy(keep)["listen"]
    assert listen_keep_disabled == listen_keep
    response = api.request(
        "POST",
        "/populate",
        [
            {"name": keep, "upstream": "127.0.0.1:9", "listen": listen_keep},
            {"name": replace, "upstream": f"127.0.0.1:{echo_server.port}"},
            {"name": new, "upstream": "127.0.0.1:9", "listen": "127.0.0.1:0"},
        ],
    )
    assert response.status == 201
    body = response.json()
    assert [p["name"] for p in body["proxies"]] == [keep, replace, new]
    kept = api.get_proxy(keep)
    assert kept["enabled"] is False and [t["name"] for t in kept["toxics"]] == ["stays"]
    assert api.get_proxy(replace)["upstream"] == f"127.0.0.1:{echo_server.port}"
    assert api.get_proxy(new)["enabled"] is True


def test_populate_validates_everything_first(api, pname):
    first = pname()
    status, message = error_of(
        api.request(
            "POST",
            "/populate",
            [{"name": first, "upstream": "127.0.0.1:9"}, {"upstream": "127.0.0.1:9"}],
        ),
        populate=True,
    )
    assert (status, message) == (400, "missing required field: name at proxy 2")
    status, message = error_of(
        api.request(
            "POST", "/populate", [{"name": first, "upstream": "127.0.0.1:9"}, {"name": pname()}]
        ),
        populate=True,
    )
    assert (status, message) == (400, "missing required field: upstream at proxy 2")
    assert first not in api.proxies()
    status, message = error_of(api.request("POST", "/populate", {"name": first}), populate=True)
    assert status == 400 and message.startswith("bad request body: json: cannot unmarshal object")


def test_populate_listen_failure_answers_proxies_null(api, pname):
    """The proxies created before the failure stay, but the answer lists none (api.go)."""
    ok = pname()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        response = api.request(
            "POST",
            "/populate",
            [
                {"name": ok, "upstream": "127.0.0.1:9"},
                {"name": pname(), "upstream": "127.0.0.1:9", "listen": f"127.0.0.1:{port}"},
            ],
        )
    status, message = error_of(response, populate=True)
    assert status == 500 and "address already in use" in message
    assert ok in api.proxies()


def test_populate_nothing_answers_proxies_null(api):
    """An empty list is created fine; Go marshals the empty result as null."""
    for body in ([], None):
        response = api.request("POST", "/populate", raw=json.dumps(body))
        assert response.status == 201
        assert response.raw == b'{"proxies":null}'


def test_client_populate(api, pname):
    name = pname()
    created = api.client().populate(
        [{"name": name, "upstream": "127.0.0.1:9", "listen": "127.0.0.1:0"}]
    )
    assert [p.name for p in created] == [name]
