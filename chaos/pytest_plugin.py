"""The pytest plugin: registered through the ``pytest11`` entry point.

Each concern lives in its own module under :mod:`chaos.fixtures`; this module
only gathers them so that ``-p chaos.pytest_plugin`` (or installing the
package) brings all of them.
"""

pytest_plugins = [
    "chaos.fixtures.hypothesis",
    "chaos.fixtures.postgres",
    "chaos.fixtures.leftovers",
    "chaos.fixtures.toxiproxy",
    "chaos.fixtures.faults",
    "chaos.fixtures.scenarios",
    "chaos.fixtures.report",
]


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
