"""The matrix can fail: a broken backend's cell is FAIL, with its program, every time.

Runs in the default ``tox`` (not ``-m matrix``): the GUC row's own check (the
narrow machine, its fixed seed and budget, exactly as the matrix runs it) on
plain_pool's ``NoResetOnReturn`` variant must give ``fail`` with a SessionLeak
and the minimal program Hypothesis printed; on the reference, ``pass``. If the
row's machine stops reaching the leak (a rule renamed, a budget cut), this
fails. Also: the expected-verdicts file is well formed and every third-party
FAIL in it says why; the page and the README table render a FAIL cell.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from chaos.matrix.columns import Address, machine_env
from chaos.matrix.expected import ExpectedVerdicts
from chaos.matrix.html import render_index
from chaos.matrix.machine_cell import run_machine_cell
from chaos.matrix.properties import PROPERTIES, ROW_CANARIES
from chaos.matrix.readme import markdown
from chaos.matrix.render import render_matrix

EXPECTED_FILE = Path(__file__).with_name("expected_verdicts.toml")


def _cell(postgres, prop: str, variant: str | None):
    check = PROPERTIES[prop].check
    check = replace(check, options=replace(check.options, variant=variant))
    env = machine_env("plain_pool", Address(postgres))
    return run_machine_cell(env, check, f"MatrixCanary_{prop}_{variant}")


def _guc_cell(postgres, variant: str | None):
    return _cell(postgres, "guc", variant)


@pytest.mark.parametrize("attempt", [1, 2])
def test_guc_cell_fails_on_a_pool_without_reset(postgres, attempt):
    outcome = _guc_cell(postgres, "NoResetOnReturn")
    print(outcome.detail, outcome.program, sep="\n")
    assert outcome.verdict == "fail", outcome.detail
    assert outcome.detail.startswith("SessionLeak:"), outcome.detail
    assert outcome.program is not None
    assert "dirty_session(dirt=SetGuc(name='work_mem', value='8MB')" in outcome.program
    assert "then_give_back=True" in outcome.program


@pytest.mark.parametrize("prop", [p for p in ROW_CANARIES if p != "guc"])
def test_every_machine_row_catches_its_variant(postgres, prop):
    """Each machine row fails on its broken variant, with its own invariant, found within
    half its budget (the 2x margin the budgets promise)."""
    check = PROPERTIES[prop].check
    outcome = _cell(postgres, prop, ROW_CANARIES[prop])
    assert outcome.verdict == "fail", outcome.detail
    assert "not this row's invariant" not in outcome.detail, outcome.detail
    assert outcome.program, outcome.detail
    assert outcome.metrics["found_in_example"] * 2 <= check.max_examples, outcome.detail


def test_guc_cell_passes_on_the_reference(postgres):
    outcome = _guc_cell(postgres, None)
    assert outcome.verdict == "pass", outcome.detail


def test_expected_file_is_reviewed():
    expected = ExpectedVerdicts.load(EXPECTED_FILE)
    assert expected.unjustified_fails() == []
    assert expected.get("plain_pool", "guc").verdict == "pass"
    unknown = [
        f"[{t}] {p}"
        for t, entries in expected.entries().items()
        for p in entries
        if p != "*" and p not in PROPERTIES
    ]
    assert unknown == [], "properties the matrix does not have"


SAMPLE = {
    "generated": "2026-12-06T10:00:00Z",
    "versions": {"postgres": "15", "psycopg": "3.3.9"},
    "targets": ["plain_pool", "broken", "pgbouncer-session"],
    "properties": [{"name": "guc", "title": "GUC <SET>", "group": "session state"}],
    "cells": [
        {"target": "plain_pool", "property": "guc", "verdict": "pass", "detail": "held"},
        {
            "target": "broken",
            "property": "guc",
            "verdict": "fail",
            "detail": "SessionLeak: work_mem",
            "program": "state.dirty_session(...)",
            "replay": 'python -m pytest "x[broken-guc]"',
        },
        {
            "target": "pgbouncer-session",
            "property": "guc",
            "verdict": "not_run",
            "detail": "PgBouncer targets come with issue 11",
        },
    ],
}


def test_reports_render_a_fail():
    table = render_matrix(SAMPLE)
    assert "FAIL" in table and "not run: pgbouncer-session" in table
    page = render_index(SAMPLE, Path("/nonexistent"))
    assert "state.dirty_session(...)" in page and "GUC &lt;SET&gt;" in page
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    text = markdown(json.loads(json.dumps(SAMPLE)))
    assert "| GUC <SET> | pass | **FAIL** |" in text and "2026-12-06" in text


def test_mismatch_says_what_changed():
    from chaos.matrix.cell import Cell
    from chaos.matrix.expected import Expected, mismatch

    cell = Cell("django", "guc", "pass", "held", replay='python -m pytest "x[django-guc]"')
    text = mismatch(cell, Expected("fail", reason="no reset"), "GUC")
    assert text.startswith("django no longer fails guc (GUC)")
    assert "no reset" in text and 'python -m pytest "x[django-guc]"' in text
    cell = Cell("plain_pool", "guc", "fail", "SessionLeak", program="state.x()", replay="r")
    text = mismatch(cell, Expected("pass"), "GUC")
    assert text.startswith("plain_pool now fails guc (GUC)") and "state.x()" in text
