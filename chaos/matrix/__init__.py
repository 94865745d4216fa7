"""The matrix: every target through the same properties, one verdict per cell.

Rows are properties (:mod:`chaos.matrix.properties`): each kind of session
state a request can leave behind, the configuration every checkout must carry,
and how the system behaves under faults. Columns are targets
(:mod:`chaos.matrix.columns`: the registry's, plus the PgBouncer columns of
issue 11). ``tox -e matrix`` runs ``tests/matrix/test_matrix.py``, which
computes each cell and asserts it against ``tests/matrix/expected_verdicts.toml``.

``reports/chaos/matrix.json`` (written with ``--matrix-report=DIR``)::

    {
      "generated": "2026-12-06T10:40:00Z",      # UTC, when the run ended
      "versions": {"python": ..., "postgres": ..., "psycopg": ..., "psycopg_pool": ...,
                   "django": ..., "sqlalchemy": ..., "hypothesis": ...},
      "targets": ["plain_pool", ...],           # column order
      "properties": [{"name": "guc", "title": "SET work_mem (a GUC)",
                      "group": "session state"}, ...],  # row order
      "cells": [
        {
          "target": "django",                   # a column
          "property": "guc",                    # a row
          "verdict": "fail",                    # pass | fail | na | not_run
          "detail": "SessionLeak: ...",         # one line: why, or what was measured
          "replay": "python -m pytest \"tests/matrix/test_matrix.py::test_property[django-guc]\"",
          "program": "state = ...",             # fails only: the minimal failing program
                                                #   Hypothesis printed (machine rows), or the
                                                #   probe's steps (fault rows)
          "expected": "fail",                   # what tests/matrix/expected_verdicts.toml says
          "reason": "...",                      # the expected file's reason / evidence / ticket
          "duration_s": 3.2
        }, ...
      ]
    }

``pass``: the property held within the cell's budget; ``fail``: it was
violated (``detail`` names the invariant and what was seen); ``na``: the
target cannot be asked (an option it does not have: ``UnsupportedOption``);
``not_run``: the target cannot run here (``TargetUnavailable``: a missing
package, or no adapter yet), with the reason.
"""

from chaos.matrix.cell import VERDICTS, Cell

__all__ = ["VERDICTS", "Cell"]
