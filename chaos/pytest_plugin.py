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
