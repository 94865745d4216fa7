"""The API's request bodies, typed the way Toxiproxy's Go structs type them.

Each function takes a decoded JSON body (:func:`chaos.toxiproxy.gojson.decode`)
and returns the fields it knows, or raises 400 ``bad request body: <Go's
UnmarshalTypeError>`` for the first mistyped one in document order. Like Go's
``encoding/json``: unknown keys are ignored, ``null`` leaves a field unset,
and a key matches its field exactly or, failing that, case-insensitively.
The struct names in the messages are Toxiproxy's (``Proxy``,
``ToxicWrapper``, ``LatencyToxic``...; anonymous structs print as ``""``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from chaos.toxiproxy import toxics
from chaos.toxiproxy.errors import ApiError, bad_body
from chaos.toxiproxy.gojson import Number, number_text, type_error, type_name, value_error

INT_RANGE = (-(2**63), 2**63 - 1)
FLOAT32_MAX = 3.4028234663852886e38

PROXY_FIELDS = {"name": "string", "listen": "string", "upstream": "string", "enabled": "bool"}
PROXY_TYPE = "toxiproxy.Proxy"
POPULATE_TYPE = '[]struct { toxiproxy.Proxy; Enabled *bool "json:\\"enabled\\"" }'
TOXIC_FIELDS = {
    "name": "string",
    "type": "string",
    "stream": "string",
    "toxicity": "float32",
    "attributes": "toxics.NoopToxic",  # the placeholder Toxiproxy decodes the first pass into
}
TOXIC_TYPE = "toxics.ToxicWrapper"
TOXIC_UPDATE_TYPE = (
    'struct { Attributes interface {} "json:\\"attributes\\""; '
    'Toxicity float32 "json:\\"toxicity\\"" }'
)


def _problem(value: Any, go_type: str) -> str | None:
    """What Go calls ``value`` when it does not fit ``go_type`` (None: it fits)."""
    if go_type == "string":
        return None if isinstance(value, str) else type_name(value)
    if go_type == "bool":
        return None if isinstance(value, bool) else type_name(value)
    if go_type.startswith("toxics."):  # a struct
        return None if isinstance(value, dict) else type_name(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return type_name(value)
    if go_type == "float32":
        fits = math.isfinite(value) and abs(value) <= FLOAT32_MAX
    else:  # int, int64 (64-bit)
        fits = not isinstance(value, Number) and INT_RANGE[0] <= value <= INT_RANGE[1]
    return None if fits else number_text(value)


def fields(
    body: Mapping[str, Any], schema: Mapping[str, str], struct: str, prefix: str = ""
) -> dict[str, Any]:
    """The ``schema`` fields (name -> Go type) of a JSON object, checked as Go decodes them."""
    out: dict[str, Any] = {}
    error: str | None = None
    for key, value in body.items():
        name = key if key in schema else next((f for f in schema if f == key.lower()), None)
        if name is None or value is None:
            continue
        problem = _problem(value, schema[name])
        if problem is None:
            out[name] = value
        elif error is None:  # Go keeps decoding and reports the first one
            error = type_error(problem, struct, prefix + name, schema[name])
    if error is not None:
        raise bad_body(error)
    return out


def _object(body: Any, go_type: str) -> Mapping[str, Any]:
    """The body as an object (``null`` is an empty one, as for Go)."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise bad_body(value_error(type_name(body), go_type))
    return body


def proxy(body: Any) -> dict[str, Any]:
    """POST /proxies and POST/PATCH /proxies/{p}: name, listen, upstream, enabled."""
    return fields(_object(body, PROXY_TYPE), PROXY_FIELDS, "Proxy")


def populate(body: Any) -> list[dict[str, Any]]:
    """POST /populate: a list of proxies (each entry an anonymous struct embedding Proxy)."""
    if body is None:  # Go decodes null into an empty list
        return []
    if not isinstance(body, list):
        raise bad_body(value_error(type_name(body), POPULATE_TYPE))
    return [fields(_object(item, POPULATE_TYPE[2:]), PROXY_FIELDS, "") for item in body]


def toxic(body: Any) -> dict[str, Any]:
    """POST /proxies/{p}/toxics, first pass: everything but the attributes' values."""
    return fields(_object(body, TOXIC_TYPE), TOXIC_FIELDS, "ToxicWrapper")


def toxic_update(body: Any, cls: type[toxics.Toxic]) -> dict[str, Any]:
    """POST/PATCH /proxies/{p}/toxics/{t}: toxicity and attributes (the rest is ignored)."""
    schema = {"toxicity": "float32", "attributes": f"toxics.{cls.go_name}"}
    return fields(_object(body, TOXIC_UPDATE_TYPE), schema, "")


def attributes(
    cls: type[toxics.Toxic], raw: Mapping[str, Any] | None, current: Mapping[str, int]
) -> dict[str, int]:
    """``raw`` attribute values merged into ``current``, then the toxic's own validation."""
    merged = dict(current)
    if raw:
        schema = dict.fromkeys(cls.attributes, cls.go_int)
        merged.update(fields(raw, schema, cls.go_name, prefix="attributes."))
    problem = cls.validate(merged)
    if problem:
        raise ApiError(problem, 400)
    return merged
