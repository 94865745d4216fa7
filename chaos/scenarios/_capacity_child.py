"""A child process for the too-many-connections scenario: a pool, N concurrent checkouts.

``python -m chaos.scenarios._capacity_child '<json>'`` with ``settings``,
``hold_s`` and ``alias``; prints one JSON line: every checkout's outcome.
A crash (non-zero exit, no JSON) is what the scenario must never see.
plain_pool only: ``settings`` are the plain_pool settings the parent's target
was made with (``chaos.targets.plain_pool.settings_dict``), so the scenario is
``reference_only``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time


def main(argv: list[str]) -> int:
    from plain_pool import DatabaseWrapper

    spec = json.loads(argv[1])
    settings, hold_s = spec["settings"], spec["hold_s"]
    n = settings["POSTGRES_POOL"]["max_size"]
    results: list[dict] = []
    lock = threading.Lock()

    def checkout(worker: int) -> None:
        db = DatabaseWrapper(settings, alias=spec["alias"])
        started = time.monotonic()
        entry = {"worker": worker, "started": started}
        try:
            db.ensure_connection()
            entry["checked_out"] = time.monotonic()
            with db.cursor() as cur:
                cur.execute("SELECT pg_sleep(%s)", (hold_s,))
            entry["ok"] = True
        except Exception as exc:
            entry.update(ok=False, error_type=type(exc).__name__, error=str(exc)[:200])
        finally:
            with contextlib.suppress(Exception):  # the outcome above is what we report
                db.close()
        entry["ended"] = time.monotonic()
        with lock:
            results.append(entry)

    time.sleep(max(0.0, spec["start_at"] - time.time()))  # all children at once
    threads = [threading.Thread(target=checkout, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    DatabaseWrapper(settings, alias=spec["alias"]).close_pool()
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
