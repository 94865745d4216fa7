"""Hypothesis profiles, registered in exactly one place.

- ``fast``: the default test run (``tox``); a short walk of every machine.
- ``chaos``: ``tox -e chaos``; longer programs, more examples, blobs printed.
- ``deep``: long soak runs by hand (``--hypothesis-profile=deep``).
- ``ci-chaos``: ``chaos`` sized for CI's budget (selected by ``.ci/run``);
  no shrink phase, so a failure costs seconds, not Hypothesis's five-minute
  shrink limit per test - the printed seed and blob replay it, and
  ``tox -e chaos -- <test id> --hypothesis-seed=N`` shrinks it locally.

Deadlines are off everywhere: steps talk to real servers through injected
latency, so a step's duration says nothing about correctness. The example
database lives in the project under test: ``<pytest rootdir>/.hypothesis/examples``
(the plugin registers the profiles again at configure time with the rootdir;
before that, the current directory), so that a rerun replays the last failure
first, and never beside the installed ``chaos`` package (site-packages).
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase


def example_database_dir(root: Path | None = None) -> Path:
    """``<root>/.hypothesis/examples`` (root: the project's pytest rootdir, else the cwd)."""
    return (root or Path.cwd()).resolve() / ".hypothesis" / "examples"


PROFILES: dict[str, dict] = {
    "fast": {"max_examples": 8, "stateful_step_count": 15},
    # 20 programs per machine keeps tox -e chaos under 10 minutes on 2 cores (measured at
    # 40: 800 s, the two server-fault machines 290 s each; at 25: 615 s); the summary
    # prints the count.
    "chaos": {"max_examples": 20, "stateful_step_count": 30},
    "ci-chaos": {
        "max_examples": 20,
        "stateful_step_count": 30,
        "phases": (Phase.explicit, Phase.reuse, Phase.generate, Phase.target),
    },
    "deep": {"max_examples": 400, "stateful_step_count": 80},
}
DEFAULT_PROFILE = "fast"


def register_profiles(root: Path | None = None) -> None:
    """Register every profile, the example database in ``root``; safe to call more than once."""
    common = {
        "deadline": None,
        "print_blob": True,
        "database": DirectoryBasedExampleDatabase(str(example_database_dir(root))),
        "suppress_health_check": [
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.filter_too_much,
        ],
    }
    for name, budget in PROFILES.items():
        settings.register_profile(name, **common, **budget)


def budget(name: str | None = None) -> dict:
    """The example and step budget of a profile (the loaded one by default)."""
    name = name or settings.get_current_profile_name()
    return PROFILES.get(name, PROFILES[DEFAULT_PROFILE])
