"""What a request leaves on a session: one kind for every item of the session fingerprint.

Each kind is a frozen dataclass whose repr is valid Python (``SetGuc('work_mem',
'8MB')``), so a failing program Hypothesis prints pastes into a regression
test. :meth:`Dirt.apply` runs the SQL through the request's
:class:`~chaos.targets.base.Session`; :class:`ClientAttr` changes the client
side of its psycopg connection instead (``Session.set_client_attr``).

None of these blocks another session: the advisory lock is a ``try`` lock,
names are fixed and created with ``IF NOT EXISTS``-style guards where
Postgres has them, so a repeated kind on the same session is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg
from psycopg import IsolationLevel, rows
from psycopg.types.string import TextLoader

#: A zone never used as a TIME_ZONE setting, so a leak of it is told apart
#: from a stale configured zone.
DIRT_TIME_ZONE = "Pacific/Chatham"
#: A role never used as ``assume_role``.
INTRUDER_ROLE = "chaos_intruder"


@dataclass(frozen=True)
class Dirt:
    kind: ClassVar[str] = ""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis' printer lists dataclass ClassVars as arguments; the repr is valid Python.
        printer.text(repr(self))

    def statements(self) -> list[str]:
        raise NotImplementedError

    def apply(self, request: Any) -> None:
        for sql in self.statements():
            request.execute(sql, prepare=False)


@dataclass(frozen=True)
class SetGuc(Dirt):
    kind: ClassVar[str] = "guc"
    name: str
    value: str

    def statements(self) -> list[str]:
        return [f"SET {self.name} TO '{self.value}'"]


@dataclass(frozen=True)
class SetTimeZone(Dirt):
    kind: ClassVar[str] = "timezone"
    zone: str = DIRT_TIME_ZONE

    def statements(self) -> list[str]:
        return [f"SET TIME ZONE '{self.zone}'"]


@dataclass(frozen=True)
class SetRole(Dirt):
    kind: ClassVar[str] = "role"
    role: str = INTRUDER_ROLE

    def statements(self) -> list[str]:
        return [f"SET ROLE {self.role}"]


@dataclass(frozen=True)
class TempTable(Dirt):
    kind: ClassVar[str] = "temp_table"
    name: str = "chaos_tmp"

    def statements(self) -> list[str]:
        return [f"CREATE TEMP TABLE IF NOT EXISTS {self.name} (x int)"]


@dataclass(frozen=True)
class AdvisoryLock(Dirt):
    kind: ClassVar[str] = "advisory_lock"
    key: int = 4242

    def statements(self) -> list[str]:
        return [f"SELECT pg_try_advisory_lock({self.key})"]


@dataclass(frozen=True)
class Listen(Dirt):
    kind: ClassVar[str] = "listen"
    channel: str = "chaos_channel"

    def statements(self) -> list[str]:
        return [f"LISTEN {self.channel}"]


@dataclass(frozen=True)
class Prepare(Dirt):
    kind: ClassVar[str] = "prepared_statement"
    name: str = "chaos_stmt"

    def statements(self) -> list[str]:
        return [f"PREPARE {self.name} AS SELECT 1"]

    def apply(self, request: Any) -> None:
        # Look first: an error would abort a transaction the request may have open.
        found = request.execute(
            f"SELECT 1 FROM pg_prepared_statements WHERE name = '{self.name}'", prepare=False
        )
        if not found:
            super().apply(request)


@dataclass(frozen=True)
class HoldCursor(Dirt):
    kind: ClassVar[str] = "cursor"
    name: str = "chaos_cursor"

    def statements(self) -> list[str]:
        return [f"DECLARE {self.name} CURSOR WITH HOLD FOR SELECT 1"]

    def apply(self, request: Any) -> None:
        found = request.execute(
            f"SELECT 1 FROM pg_cursors WHERE name = '{self.name}'", prepare=False
        )
        if not found:
            super().apply(request)


@dataclass(frozen=True)
class PendingNotification(Dirt):
    """A notification received and never consumed: psycopg keeps it for ``conn.notifies()``."""

    kind: ClassVar[str] = "pending_notification"
    channel: str = "chaos_notify"

    def statements(self) -> list[str]:
        # Delivered to the session itself at commit (at once in autocommit).
        return [f"LISTEN {self.channel}", f"NOTIFY {self.channel}, 'left behind'"]


def ignore_notice(diagnostic: psycopg.errors.Diagnostic) -> None:
    """A notice handler a request adds and never removes."""


def ignore_notify(notify: psycopg.Notify) -> None:
    """A notify handler a request adds and never removes."""


class ChaosCursor(psycopg.ClientCursor):  # type: ignore[type-arg]
    """A request's own cursor class (client-side binding, so every query still runs)."""


class ChaosServerCursor(psycopg.ServerCursor):  # type: ignore[type-arg]
    """A request's own server-side cursor class."""


#: Client-side values by the name a ClientAttr prints (so its repr is valid Python).
CLIENT_VALUES: dict[str, dict[str, Any]] = {
    "row_factory": {"dict_row": rows.dict_row},
    "cursor_factory": {"ChaosCursor": ChaosCursor},
    "server_cursor_factory": {"ChaosServerCursor": ChaosServerCursor},
    "notice_handler": {"ignore_notice": ignore_notice},
    "notify_handler": {"ignore_notify": ignore_notify},
    # int4 values come back as str: the next user's SELECT 1 would return '1'.
    "loader": {"int4_as_text": ("int4", TextLoader)},
}


@dataclass(frozen=True)
class ClientAttr(Dirt):
    """Client-side state of the psycopg connection (no SQL is sent).

    ``attr`` is a connection attribute to set (``autocommit``,
    ``isolation_level``, ``read_only``, ``deferrable``, ``prepare_threshold``,
    ``prepared_max``, ``row_factory``, ``cursor_factory``,
    ``server_cursor_factory``), or ``notice_handler`` / ``notify_handler``
    (a handler is added) or ``loader`` (a loader is registered on
    ``conn.adapters``): see the targets' ``set_client_attr``. Values that are
    not literals are given by name (``IsolationLevel`` members, and
    :data:`CLIENT_VALUES`).
    """

    kind: ClassVar[str] = "client_attr"
    attr: str
    value: Any

    def statements(self) -> list[str]:
        return []

    def resolved(self) -> Any:
        value = self.value
        if self.attr == "isolation_level" and isinstance(value, str):
            return IsolationLevel[value]
        if self.attr in CLIENT_VALUES:
            return CLIENT_VALUES[self.attr][value]
        return value

    def apply(self, request: Any) -> None:
        request.set_client_attr(self.attr, self.resolved())


DIRT: tuple[Dirt, ...] = (
    SetGuc("work_mem", "8MB"),
    SetGuc("application_name", "chaos-dirt"),
    SetGuc("DateStyle", "SQL, DMY"),
    SetTimeZone(),
    SetRole(),
    TempTable(),
    AdvisoryLock(),
    Listen(),
    Prepare(),
    HoldCursor(),
    ClientAttr("isolation_level", "SERIALIZABLE"),
    ClientAttr("read_only", True),
    ClientAttr("deferrable", True),
    ClientAttr("autocommit", False),
    ClientAttr("prepare_threshold", 0),
    ClientAttr("prepared_max", 1),
    ClientAttr("row_factory", "dict_row"),
    ClientAttr("cursor_factory", "ChaosCursor"),
    ClientAttr("server_cursor_factory", "ChaosServerCursor"),
    ClientAttr("notice_handler", "ignore_notice"),
    ClientAttr("notify_handler", "ignore_notify"),
    ClientAttr("loader", "int4_as_text"),
    PendingNotification(),
)
