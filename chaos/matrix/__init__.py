"""The matrix: every target through the same properties, one verdict per cell.

Rows are properties (:mod:`chaos.matrix.properties`): each kind of session
state a request can leave behind, the configuration every checkout must carry,
and how the system behaves under faults. Columns are targets
(:mod:`chaos.matrix.columns`: the registry's, plus the PgBouncer columns of
issue 11). ``tox -e matrix`` runs ``tests/matrix/test_matrix.py``, which
computes each cell and asserts it against ``tests/matrix/expected_verdicts.toml``.

``reports/chaos/matrix.json`` (written with ``--matrix-report=DIR``)::

    {
      "generated": "2026-12-06T10:12:43Z",      # UTC, when the run ended
      "duration_s": 107.2,
      "versions": {"python": ..., "postgres": "15.18", "psycopg": "3.3.9",
                   "psycopg_pool": "3.3.3", "django": "5.2.19", "sqlalchemy": "2.1.9",
                   "hypothesis": ...},
      "targets": ["plain_pool", "psycopg_pool", ...],   # column order
      "properties": [                                    # row order
        {"name": "guc", "title": "GUC (SET work_mem)", "group": "session state",
         "contract": "what pass promises, one sentence"}, ...],
      "cells": [
        {
          "target": "psycopg_pool",             # a column
          "property": "restart",                # a row
          "verdict": "fail",                    # pass | fail | na | not_run
          "detail": "0 caller error(s), first success 1084 ms after up (contract: ...)",
          "replay": "python -m pytest \"tests/matrix/test_matrix.py::test_property[...]\"",
          "program": "1. ...",                  # fails only: the minimal failing program
                                                #   Hypothesis printed (machine rows) or the
                                                #   probe's steps (fault rows)
          "metrics": {"caller_errors": 0, "first_success_ms": 1084, ...},  # what was measured
          "expected": "fail",                   # tests/matrix/expected_verdicts.toml
          "reason": "...; evidence/...",        # its reason, evidence, ticket
          "duration_s": 1.21
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
