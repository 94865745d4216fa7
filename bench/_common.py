"""What the benchmarks share: argument types, the pool they measure, the leftover checks.

Each bench is run as a script (``python bench/<name>.py``), so this module is
imported by its plain name, from the scripts' own directory.
"""

from __future__ import annotations

import argparse
import math
import re
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

#: Pool options for every pooled row: a pool of 4, always full (one thread uses one
#: connection at a time; eight threads queue for four).
POOL = {"min_size": 4, "max_size": 4, "timeout": 30}

_POOL_THREAD = re.compile(r"-(scheduler|worker-\d+)$")

Number = TypeVar("Number", int, float)


def bounded(
    convert: Callable[[str], Number],
    unit: str,
    *,
    low: Number,
    high: Number | None = None,
    low_open: bool = False,
) -> Callable[[str], Number]:
    """An argparse type: ``convert`` the text and refuse, by name, what is out of range.

    ``low_open``: ``low`` itself is refused (seconds must be > 0). NaN and
    infinity are always refused: a benchmark of NaN seconds never ends.
    """
    kind = "a whole number" if convert is int else "a number"
    of_unit = f" of {unit}" if unit else ""
    close = "inf)" if high is None else f"{high:g}]"
    interval = f"{'(' if low_open else '['}{low:g}, {close}"

    def parse(text: str) -> Number:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}{of_unit}") from None
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            shown = f"{text} {unit}" if unit else text
            raise argparse.ArgumentTypeError(f"{shown} is not in {interval}")
        return value

    return parse


def pool_threads() -> list[str]:
    """psycopg_pool's scheduler and worker threads still alive: a pool left open."""
    return [t.name for t in threading.enumerate() if t.is_alive() and _POOL_THREAD.search(t.name)]


def sessions_left(
    connect: Callable[[], psycopg.Connection], application_name: str, within: float = 5.0
) -> int:
    """The bench's sessions (by ``application_name``) still on the server after up to
    ``within`` seconds: a backend exits a moment after its client closes."""
    deadline = time.monotonic() + within
    with connect() as conn:
        while True:
            (n,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                [application_name],
            ).fetchone() or (0,)
            if n == 0 or time.monotonic() >= deadline:
                return int(n)
            time.sleep(0.05)
