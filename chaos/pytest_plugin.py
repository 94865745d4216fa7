"""The pytest plugin: registered through the ``pytest11`` entry point.

Each concern lives in its own module under :mod:`chaos.fixtures`; this module
gathers them so that ``-p chaos.pytest_plugin`` (or installing the package)
brings all of them, and does what belongs to no single one: it registers the
markers the fixtures read (so a project running ``--strict-markers`` needs no
copy of this repository's list) and puts the Hypothesis example database in
the project under test (``<rootdir>/.hypothesis/examples``).
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "chaos.fixtures.hypothesis",
    "chaos.fixtures.postgres",
    "chaos.fixtures.pgbouncer",
    "chaos.fixtures.leftovers",
    "chaos.fixtures.toxiproxy",
    "chaos.fixtures.faults",
    "chaos.fixtures.scenarios",
    "chaos.fixtures.machines",
    "chaos.fixtures.report",
    "chaos.fixtures.matrix",
]

#: Every marker the plugin's fixtures and hooks read (pyproject.toml repeats them).
MARKERS = {
    "slow": "takes more than a few seconds",
    "restarts_server": "stops, restarts or crashes Postgres (gets a server of its own)",
    "needs_server_control": (
        "needs to control the Postgres server process (skipped for an external server)"
    ),
    "canary": "runs a deliberately broken backend and asserts the suite catches it",
    "chaos": "part of the chaos run (tox -e chaos)",
    "planted": "plants a bug in the backend and runs the chaos machines on it (tox -e planted)",
    "matrix": "every target through the same properties (tox -e matrix)",
    "toxiproxy_conformance": (
        "Toxiproxy API conformance (runs against a real server too when configured)"
    ),
    "reference_target": (
        "about plain_pool itself (canaries, variants, its own options): runs on the "
        "reference target only, whatever --target selected"
    ),
}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Markers, and the profiles' example database in the rootdir.

    First, so that Hypothesis' own configure (``--hypothesis-profile``, a verbosity
    profile derived from the loaded one) starts from profiles that already point there.
    """
    from hypothesis import settings

    from chaos.hypothesis_profiles import register_profiles

    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    register_profiles(config.rootpath)
    settings.load_profile(settings.get_current_profile_name())


def child_pytest_args() -> list[str]:
    """The arguments that load this plugin in a child ``pytest`` run.

    Installed (``pip install``/tox), the ``pytest11`` entry point loads it
    already, and ``-p chaos.pytest_plugin`` on top would register it twice;
    from a bare checkout (``PYTHONPATH=src:.``) the entry point is missing
    and ``-p`` is needed.
    """
    from importlib.metadata import entry_points

    installed = any(ep.value == __name__ for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", __name__]
