"""The matrix: every target x every property, each verdict asserted against the reviewed file.

``tox -e matrix`` (``-m matrix``) runs it; ``--matrix-report=DIR`` writes
``DIR/matrix.json`` and ``DIR/index.html``; the table is printed at the end.
Each test computes its cell (:func:`chaos.matrix.run.check_cell`), hands it to
the report, then asserts it equals ``expected_verdicts.toml``: a mismatch says
what changed ("django no longer leaks ...", "plain_pool now fails ...") with
the detail, the program and the replay command (this test's node id: the
machines' seeds are fixed, so nothing else is needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chaos.faults import Nemesis
from chaos.matrix.cell import Cell
from chaos.matrix.columns import Address, column_names
from chaos.matrix.expected import ExpectedVerdicts, mismatch
from chaos.matrix.properties import PROPERTIES, MachineCheck
from chaos.matrix.run import availability, check_cell

pytestmark = pytest.mark.matrix

EXPECTED_FILE = Path(__file__).with_name("expected_verdicts.toml")
EXPECTED = ExpectedVerdicts.load(EXPECTED_FILE)
CELLS = [(target, prop) for prop in PROPERTIES for target in column_names()]


def replay(nodeid: str) -> str:
    return f'python -m pytest "{nodeid}"'


def _address_and_nemesis(request: pytest.FixtureRequest, check: Any) -> tuple[Address, Any]:
    if isinstance(check, MachineCheck):
        return Address(request.getfixturevalue("postgres")), None
    if check.private:
        server = request.getfixturevalue("private_postgres")
        schedule = request.getfixturevalue("fault_schedule")
        return Address(server), Nemesis(None, server, schedule=schedule)
    if check.proxy:
        nemesis = request.getfixturevalue("faults")
        return Address(request.getfixturevalue("postgres"), nemesis.proxy), nemesis
    return Address(request.getfixturevalue("postgres")), None


@pytest.mark.parametrize(("target", "prop"), CELLS, ids=[f"{t}-{p}" for t, p in CELLS])
def test_property(target: str, prop: str, request: pytest.FixtureRequest, matrix_record) -> None:
    expected = EXPECTED.get(target, prop)
    prop_ = PROPERTIES[prop]
    cell = Cell(target, prop, "not_run", "", replay=replay(request.node.nodeid))
    if expected is not None:
        cell.expected, cell.reason = expected.verdict, expected.cite() or None
    record: dict[str, Any] = {}
    why_not = availability(target)
    try:
        if why_not is not None:
            cell.detail = why_not
        else:
            address, nemesis = _address_and_nemesis(request, prop_.check)
            record["postgres_version"] = str(getattr(address.server, "version", "") or "")
            proxy_to = None
            if getattr(prop_.check, "client_hop", False):
                proxy_to = request.getfixturevalue("tcp_proxy_factory")
            outcome, took = check_cell(target, prop_, address, nemesis, proxy_to)
            cell.verdict, cell.detail = outcome.verdict, outcome.detail
            cell.program, cell.metrics = outcome.program, dict(outcome.metrics)
            cell.duration_s = round(took, 2)
    except BaseException as exc:
        cell.verdict = "not_run"
        cell.detail = f"the cell could not be computed: {type(exc).__name__}: {exc}"[:400]
        matrix_record({**cell.as_dict(), **record})
        raise
    matrix_record({**cell.as_dict(), **record})
    want = expected.verdict if expected else None
    assert cell.verdict == want, mismatch(cell, expected, prop_.title)
