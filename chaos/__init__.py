"""The plain-pool resilience harness.

A Postgres server the harness owns (:mod:`chaos.postgres`), an embedded
Toxiproxy-compatible fault proxy (:mod:`chaos.toxiproxy`), the fault
catalogue (:mod:`chaos.faults`), the session fingerprint
(:mod:`chaos.fingerprint`), the write ledger (:mod:`chaos.ledger`) and the
scenario registry (:mod:`chaos.scenarios`). Everything is importable and is
exposed to pytest through :mod:`chaos.pytest_plugin`, so other projects can
run their own backends through the same properties.
"""
