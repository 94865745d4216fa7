"""An embedded, Toxiproxy-compatible fault proxy.

Speaks the Toxiproxy 2.12 HTTP API and runs its toxics the same way (the
reference is upstream's source, github.com/Shopify/toxiproxy: api.go,
link.go, toxics/), so that the harness, toxiproxy-python and every other
Toxiproxy client work unchanged whether a real ``toxiproxy-server`` is
available or not. Deliberate deviations are documented where they live and
pinned by tests marked ``embedded_only``.

- :mod:`chaos.toxiproxy.server`: the process (``python -m chaos.toxiproxy``).
- :mod:`chaos.toxiproxy.api`: the HTTP API (aiohttp).
- :mod:`chaos.toxiproxy.model`: proxies and toxic definitions, input validation.
- :mod:`chaos.toxiproxy.dataplane`: accepted connections and their two directions.
- :mod:`chaos.toxiproxy.chain`: the per-direction toxic chain.
- :mod:`chaos.toxiproxy.toxics`: one small module per toxic type, the registry,
  and the contract toxics code against (``toxics.base``, ``toxics.stub``).
- :mod:`chaos.toxiproxy.stream`: the chunks that flow through a chain.

Dependencies run one way: dataplane -> chain -> toxics -> stream.
- :mod:`chaos.toxiproxy.harness`: start or attach to a server from tests.
"""

VERSION = "2.12.0+plain-pool-embedded"
"""Reported by ``GET /version``; the build metadata tells it from a real server."""

EMBEDDED_MARKER = "plain-pool-embedded"
