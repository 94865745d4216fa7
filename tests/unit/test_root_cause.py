"""root_cause and the outcome rules on wrapped errors, built the way the wrappers build them.

Django re-raises psycopg's errors through ``django.db.utils.DatabaseErrorWrapper``
(``raise dj_exc from exc``); SQLAlchemy through ``DBAPIError.instance`` (the
original as ``.orig``, raised ``from`` it). The framework tests import the real
wrappers (``pytest.importorskip``: they run in ``.tox/matrix``); the rest run
everywhere. PgBouncer's errors are built as psycopg builds them from its
ErrorResponse: FATAL in ``S`` and no non-localized severity ``V``.
"""

from __future__ import annotations

import socket
import struct
import threading
import types

import psycopg
import pytest
from psycopg import errors
from psycopg.pq import DiagnosticField
from psycopg_pool import PoolClosed, PoolTimeout

from chaos.faults.base import NO_EFFECTS
from chaos.faults.network import Down, Latency
from chaos.faults.outcomes import (
    MAX_WRAPPING,
    Outcome,
    classify,
    explained,
    is_connection_lost,
    is_pool_timeout,
    is_statement_timeout,
    root_cause,
)
from plain_pool.session_reset import ResetFailed


def server_error(sqlstate: str, message: str, severity: str, *, nonlocalized: bool = True):
    """A psycopg error carrying the fields of an ErrorResponse (what psycopg builds from one).

    ``nonlocalized=False``: no ``V`` field, as PgBouncer sends its own errors.
    """
    info = {
        DiagnosticField.SEVERITY: severity.encode(),
        DiagnosticField.SQLSTATE: sqlstate.encode(),
        DiagnosticField.MESSAGE_PRIMARY: message.encode(),
    }
    if nonlocalized:
        info[DiagnosticField.SEVERITY_NONLOCALIZED] = severity.encode()
    return errors.lookup(sqlstate)(f"{severity}:  {message}", info=info)


def wrapped_by_cause(error: BaseException) -> BaseException:
    """A wrapper raised ``from`` the error (Django's shape), without Django."""

    class WrappingError(Exception):
        pass

    try:
        raise WrappingError(*error.args) from error
    except WrappingError as exc:
        return exc


def wrapped_by_orig(error: BaseException) -> BaseException:
    """A wrapper holding the error as ``.orig`` and nothing else (SQLAlchemy's shape)."""
    wrapper = Exception(f"(wrapped) {error}")
    wrapper.orig = error  # type: ignore[attr-defined]
    return wrapper


# -- root_cause, everywhere ------------------------------------------------------------
def test_unwrapped_errors_are_their_own_root_cause():
    lost = errors.AdminShutdown("terminating connection")
    assert root_cause(lost) is lost
    bug = ValueError("not a database error")
    assert root_cause(bug) is bug


@pytest.mark.parametrize("wrap", [wrapped_by_cause, wrapped_by_orig])
def test_one_wrapper(wrap):
    lost = errors.AdminShutdown("terminating connection")
    assert root_cause(wrap(lost)) is lost


def test_nested_wrappers_down_to_the_psycopg_error():
    timeout = PoolTimeout("couldn't get a connection after 1.00 sec")
    error = wrapped_by_orig(wrapped_by_cause(wrapped_by_orig(timeout)))
    assert root_cause(error) is timeout


def test_stops_at_the_first_psycopg_error():
    """plain_pool's ResetFailed (a psycopg error) is raised from the error it ended on:
    that cause is its own business, the judge sees ResetFailed."""
    inner = psycopg.OperationalError("server closed the connection unexpectedly")
    try:
        raise ResetFailed(str(inner)) from inner
    except ResetFailed as exc:
        reset_failed = exc
    assert root_cause(reset_failed) is reset_failed
    assert root_cause(wrapped_by_cause(reset_failed)) is reset_failed


def test_orig_wins_over_cause_and_a_non_exception_orig_is_ignored():
    lost = errors.AdminShutdown("terminating connection")
    other = errors.DivisionByZero("division by zero")
    wrapper = wrapped_by_cause(other)
    wrapper.orig = lost  # type: ignore[attr-defined]
    assert root_cause(wrapper) is lost
    wrapper.orig = "not an exception"  # type: ignore[attr-defined]
    assert root_cause(wrapper) is other


def test_no_psycopg_error_underneath_means_the_error_itself():
    error = wrapped_by_cause(TypeError("bad parameter"))
    assert root_cause(error) is error


def test_cycles_end():
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert root_cause(a) is a
    selfish = Exception("orig is me")
    selfish.orig = selfish  # type: ignore[attr-defined]
    assert root_cause(selfish) is selfish


def test_depth_is_bounded():
    lost = errors.AdminShutdown("terminating connection")
    error: BaseException = lost
    for _ in range(MAX_WRAPPING):
        error = wrapped_by_cause(error)
    assert root_cause(error) is lost
    too_deep = wrapped_by_cause(error)
    assert root_cause(too_deep) is too_deep


# -- the outcome rules judge the root cause -----------------------------------------------
@pytest.mark.parametrize("wrap", [wrapped_by_cause, wrapped_by_orig])
def test_rules_on_wrapped_errors(wrap):
    lost = wrap(errors.AdminShutdown("terminating connection"))
    assert is_connection_lost(lost)
    assert classify(lost, wrote=True) is Outcome.INFO
    assert explained(lost, Down().effects)
    assert not explained(lost, Latency().effects)
    timeout = wrap(PoolTimeout("couldn't get a connection"))
    assert is_pool_timeout(timeout) and not is_connection_lost(timeout)
    assert classify(timeout, wrote=True) is Outcome.FAIL  # nothing was sent
    assert explained(timeout, Latency().effects)
    refused = wrap(errors.UniqueViolation("duplicate key"))
    assert classify(refused, wrote=True) is Outcome.FAIL  # the server refused it: rolled back
    assert not explained(refused, Down().effects)
    canceled = wrap(errors.QueryCanceled("canceling statement due to statement timeout"))
    assert is_statement_timeout(canceled) and explained(canceled, Latency().effects)


# -- FATAL and PgBouncer's answers -------------------------------------------------------
def test_fatal_is_lost_with_or_without_the_nonlocalized_severity():
    """A FATAL of a SQLSTATE outside 08 / 57P ends the session too; PgBouncer sends no
    ``V`` field, so the severity is read from ``S`` as well."""
    for nonlocalized in (True, False):
        fatal = server_error(
            "53300", "sorry, too many clients already", "FATAL", nonlocalized=nonlocalized
        )
        assert is_connection_lost(fatal), nonlocalized
        assert classify(fatal, wrote=True) is Outcome.INFO
    error = server_error("53300", "too many connections", "ERROR")
    assert not is_connection_lost(error)


@pytest.mark.parametrize(
    ("sqlstate", "message", "pool_timeout", "statement_timeout"),
    [
        ("08P01", "query_wait_timeout", True, False),
        ("08P01", "query_timeout", False, True),
        ("08P01", "server conn crashed?", False, False),
        ("08P01", "pgbouncer cannot connect to server", False, False),
        (
            "08P01",
            "server login has been failing, try again later (server_login_retry)",
            False,
            False,
        ),
        ("08P01", "client_login_timeout (server down)", False, False),
        ("08P01", "idle transaction timeout", False, False),
        ("57P03", "the database system is starting up", False, False),
        ("08P01", "no more connections allowed (max_client_conn)", False, False),
    ],
)
def test_pgbouncer_errors(sqlstate, message, pool_timeout, statement_timeout):
    """The table in chaos.faults.outcomes' docstring: every one ends the session."""
    error = server_error(sqlstate, message, "FATAL", nonlocalized=False)
    assert is_connection_lost(error)
    assert is_connection_lost(wrapped_by_cause(error))
    assert is_pool_timeout(error) is pool_timeout
    assert is_statement_timeout(error) is statement_timeout
    wrote = classify(error, wrote=True)
    assert wrote is (Outcome.FAIL if pool_timeout else Outcome.INFO)
    assert explained(error, Down().effects)
    assert explained(error, Latency().effects) is (pool_timeout or statement_timeout)
    assert not explained(error, NO_EFFECTS)


def test_a_user_message_is_not_pgbouncer():
    """Only PgBouncer's own SQLSTATE (08P01) makes a message its timeout."""
    raised = server_error("P0001", "query_wait_timeout", "ERROR")  # RAISE EXCEPTION
    assert not is_pool_timeout(raised) and not is_connection_lost(raised)


# -- Django ------------------------------------------------------------------------------
def django_wrapped(error: BaseException) -> BaseException:
    """``error`` as Django's postgresql backend lets it out (its Database is psycopg)."""
    utils = pytest.importorskip("django.db.utils")
    wrapper = types.SimpleNamespace(Database=psycopg, errors_occurred=False)
    try:
        with utils.DatabaseErrorWrapper(wrapper):
            raise error
    except utils.Error as exc:
        return exc
    raise AssertionError("DatabaseErrorWrapper did not wrap it")


@pytest.mark.parametrize(
    ("error", "django_class"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), "OperationalError"),
        (errors.AdminShutdown("terminating connection"), "OperationalError"),
        (psycopg.InterfaceError("the connection is closed"), "InterfaceError"),
        (errors.DivisionByZero("division by zero"), "DataError"),
        (errors.UniqueViolation("duplicate key"), "IntegrityError"),
        (PoolTimeout("couldn't get a connection after 1.00 sec"), "OperationalError"),
        (PoolClosed("the pool 'pool-1' is already closed"), "OperationalError"),
    ],
)
def test_django_wrapped(error, django_class):
    wrapped = django_wrapped(error)
    assert type(wrapped).__module__ == "django.db.utils"
    assert type(wrapped).__name__ == django_class
    assert not isinstance(wrapped, psycopg.Error)
    assert root_cause(wrapped) is error
    assert is_connection_lost(wrapped) == is_connection_lost(error)
    assert is_pool_timeout(wrapped) == is_pool_timeout(error)
    for wrote in (True, False):
        assert classify(wrapped, wrote=wrote) is classify(error, wrote=wrote)
    for effects in (NO_EFFECTS, Latency().effects, Down().effects):
        assert explained(wrapped, effects) == explained(error, effects)


# -- SQLAlchemy ----------------------------------------------------------------------------
def sqlalchemy_wrapped(error: BaseException) -> BaseException:
    """``error`` as SQLAlchemy's Connection lets it out (``raise ... from e``)."""
    exc = pytest.importorskip("sqlalchemy.exc")
    wrapped = exc.DBAPIError.instance("SELECT 1", {}, error, psycopg.Error)
    try:
        raise wrapped from error
    except exc.SQLAlchemyError as raised:
        return raised
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("server closed the connection unexpectedly"),
        errors.AdminShutdown("terminating connection"),
        errors.DivisionByZero("division by zero"),
        PoolTimeout("couldn't get a connection"),
    ],
)
def test_sqlalchemy_wrapped(error):
    exc = pytest.importorskip("sqlalchemy.exc")
    wrapped = sqlalchemy_wrapped(error)
    assert isinstance(wrapped, exc.DBAPIError) and wrapped.orig is error
    assert root_cause(wrapped) is error
    not_raised = exc.DBAPIError.instance("SELECT 1", {}, error, psycopg.Error)
    assert not_raised.__cause__ is None and root_cause(not_raised) is error
    assert is_connection_lost(wrapped) == is_connection_lost(error)
    assert classify(wrapped, wrote=True) is classify(error, wrote=True)


def test_sqlalchemy_statement_error_around_a_non_database_error():
    """StatementError wraps a TypeError (a parameter it could not process): no psycopg
    error underneath, so the wrapper is its own root cause."""
    exc = pytest.importorskip("sqlalchemy.exc")
    wrapped = exc.DBAPIError.instance("SELECT %s", [object()], TypeError("bad"), psycopg.Error)
    assert type(wrapped) is exc.StatementError
    assert root_cause(wrapped) is wrapped
    assert classify(wrapped, wrote=True) is Outcome.INFO  # says nothing about the server


def test_sqlalchemy_queue_pool_timeout():
    """QueuePool's own checkout timeout is a pool timeout, like psycopg_pool's."""
    exc = pytest.importorskip("sqlalchemy.exc")
    timeout = exc.TimeoutError("QueuePool limit of size 1 overflow 0 reached, connection timed out")
    assert is_pool_timeout(timeout) and not is_connection_lost(timeout)
    assert classify(timeout, wrote=True) is Outcome.FAIL
    assert explained(timeout, Latency().effects) and not explained(timeout, NO_EFFECTS)


# -- PgBouncer's bytes, parsed by psycopg ---------------------------------------------------
class PoolerAnswering:
    """A listener that answers the way PgBouncer does when it gives up on a client.

    PgBouncer writes its own errors with three fields, severity ``S``, SQLSTATE
    ``C`` and message ``M`` (``send_pooler_error`` in its src/proto.c): no
    ``V``. This listener logs the client in (or not: ``at_login``), reads the
    first query and answers it with that ErrorResponse, then closes, so that
    psycopg builds the error from real protocol bytes. Not a PgBouncer: only
    the message it sends (PgBouncer itself comes with the PgBouncer targets).
    """

    PARAMETERS = (("client_encoding", "UTF8"), ("server_version", "16.0"))

    def __init__(self, severity: str, sqlstate: str, message: str, *, at_login: bool = False):
        fields = (("S", severity), ("C", sqlstate), ("M", message))
        body = b"".join(k.encode() + v.encode() + b"\0" for k, v in fields) + b"\0"
        self.error = self._message(b"E", body)
        self.at_login = at_login
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _message(kind: bytes, body: bytes = b"") -> bytes:
        return kind + struct.pack("!i", len(body) + 4) + body

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            (length,) = struct.unpack("!i", conn.recv(4, socket.MSG_WAITALL))
            conn.recv(length - 4, socket.MSG_WAITALL)  # the startup packet
            if not self.at_login:
                welcome = self._message(b"R", struct.pack("!i", 0))  # AuthenticationOk
                for name, value in self.PARAMETERS:
                    welcome += self._message(b"S", f"{name}\0{value}\0".encode())
                welcome += self._message(b"K", struct.pack("!ii", 1, 1))
                welcome += self._message(b"Z", b"I")
                conn.sendall(welcome)
                conn.recv(65536)  # the query
            conn.sendall(self.error)

    def error_of_a_query(self) -> psycopg.Error:
        """What psycopg raises to the client (connecting, then running SELECT 1)."""
        try:
            with psycopg.connect(
                host="127.0.0.1",
                port=self.listener.getsockname()[1],
                user="app",
                dbname="app",
                sslmode="disable",
                gssencmode="disable",
                connect_timeout=5,
            ) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return exc
        finally:
            self.thread.join(5)
            self.listener.close()
        raise AssertionError("the query did not fail")


def test_pgbouncer_fatal_on_the_wire():
    """A FATAL without ``V``: psycopg's diag has no non-localized severity. A rule that
    read only ``severity_nonlocalized`` would call 53300 a refused statement."""
    full = PoolerAnswering("FATAL", "53300", "no more connections allowed (max_client_conn)")
    error = full.error_of_a_query()
    assert isinstance(error, errors.TooManyConnections)
    assert error.diag.severity == "FATAL" and error.diag.severity_nonlocalized is None
    assert is_connection_lost(error) and classify(error, wrote=True) is Outcome.INFO
    waited = PoolerAnswering("FATAL", "08P01", "query_wait_timeout").error_of_a_query()
    assert isinstance(waited, errors.ProtocolViolation)
    assert waited.diag.message_primary == "query_wait_timeout"
    assert is_pool_timeout(waited) and classify(waited, wrote=True) is Outcome.FAIL


def test_pgbouncer_refusal_at_login_on_the_wire():
    """Refused at login, psycopg says "connection failed" with no SQLSTATE: lost."""
    full = PoolerAnswering(
        "FATAL", "08P01", "no more connections allowed (max_client_conn)", at_login=True
    )
    error = full.error_of_a_query()
    assert type(error) is psycopg.OperationalError and error.sqlstate is None
    assert "no more connections allowed" in str(error)
    assert is_connection_lost(error)
