"""A FATAL the real server sends, judged as a lost connection, wrapped or not.

``idle_in_transaction_session_timeout`` ends the session with FATAL 25P03: a
SQLSTATE outside the "connection lost" classes (08, 57P), so only its
severity says that the session is gone (chaos.faults.outcomes).
"""

from __future__ import annotations

import time
import types

import psycopg
import pytest
from psycopg import errors

from chaos.faults.network import Down
from chaos.faults.outcomes import Outcome, classify, is_connection_lost, root_cause
from chaos.machines.errors import UnexplainedError
from chaos.machines.judge import Facts, judge


def idle_in_transaction_timeout(postgres) -> psycopg.Error:
    with postgres.connect() as conn:
        conn.execute("SET idle_in_transaction_session_timeout = '100ms'")
        conn.autocommit = False
        conn.execute("SELECT 1")
        time.sleep(0.5)
        try:
            conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return exc
    raise AssertionError("the session outlived idle_in_transaction_session_timeout")


def test_a_fatal_from_the_server_is_a_lost_connection(postgres):
    error = idle_in_transaction_timeout(postgres)
    assert isinstance(error, errors.IdleInTransactionSessionTimeout)
    assert error.sqlstate == "25P03" and error.diag.severity_nonlocalized == "FATAL"
    assert is_connection_lost(error)
    assert classify(error, wrote=True) is Outcome.INFO
    exposed = Facts(step="dirty", request="Request(1)", tracked=True, holding=True, exposed=True)
    assert judge(error, exposed).allowed
    under_down = Facts(step="dirty", effects=Down().effects, active_faults=(Down(),))
    assert judge(error, under_down).allowed
    untouched = Facts(step="dirty", request="Request(1)", tracked=True, holding=True)
    assert judge(error, untouched).violation is UnexplainedError


def test_the_same_fatal_through_django(postgres):
    utils = pytest.importorskip("django.db.utils")
    error = idle_in_transaction_timeout(postgres)
    try:
        with utils.DatabaseErrorWrapper(types.SimpleNamespace(Database=psycopg)):
            raise error
    except utils.Error as exc:
        wrapped = exc
    # Django picks its class by psycopg's (25P03 is an InternalError): the class says
    # nothing about the session, the cause does.
    assert type(wrapped) is utils.InternalError
    assert root_cause(wrapped) is error
    assert is_connection_lost(wrapped) and classify(wrapped, wrote=True) is Outcome.INFO
