"""chaos.targets.forking: a forked child reports, is bounded, and is always reaped."""

from __future__ import annotations

import os
import signal
import threading
import time

# chaos.targets alone is a circular import (targets.base -> machines -> targets.base):
# chaos.machines first, as every other importer does.
import chaos.machines  # noqa: F401
from chaos.targets import forking


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_child_reports_its_work():
    def work(report):
        report["backends"].append(7)
        report["shared"].append(7)

    child = forking.fork(work, bound=5)
    try:
        child.wait(10)
        report = child.report("request", "os_exit")
    finally:
        child.reap()
    assert report.exit_code == forking.EXIT_SHARED
    assert report.backends == report.shared == frozenset({7})
    assert not report.hung
    assert _gone(child.pid)


def test_a_failing_work_says_why():
    def work(report):
        raise RuntimeError("no luck\nsecond line")

    child = forking.fork(work, bound=5)
    try:
        child.wait(10)
        report = child.report("close_all", "gc")
    finally:
        child.reap()
    assert report.exit_code == forking.EXIT_FAILED
    assert report.error == "RuntimeError: no luck"


def test_a_hung_child_dies_of_its_own_alarm():
    child = forking.fork(lambda report: time.sleep(60), bound=1)
    try:
        child.wait(10)
        report = child.report("request", "os_exit")
    finally:
        child.reap()
    assert report.exit_code == -signal.SIGALRM
    assert report.hung and not report.killed


def test_the_parent_kills_a_child_past_its_deadline_and_reaps_it():
    child = forking.fork(lambda report: time.sleep(60), bound=30)
    try:
        child.wait(0.2)
        report = child.report("request", "os_exit")
    finally:
        child.reap()
    assert report.killed and report.hung
    assert report.exit_code == -signal.SIGKILL
    assert _gone(child.pid)


def test_reap_all_gets_a_child_whose_handle_was_lost():
    result = {}

    def spawn():
        result["pid"] = forking.fork(lambda report: time.sleep(60), bound=30).pid

    thread = threading.Thread(target=spawn)  # forks from another thread, like a target
    thread.start()
    thread.join()
    forking.reap_all()
    assert _gone(result["pid"])
