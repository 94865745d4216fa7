"""User SQL that dirties a session: one kind for every item of the session fingerprint.

Each kind is a frozen dataclass whose repr is valid Python (``SetGuc('work_mem',
'8MB')``), so a failing program Hypothesis prints pastes into a regression
test. :meth:`Dirt.apply` runs the SQL through a :class:`~chaos.targets.base.TargetRequest`.

None of these blocks another session: the advisory lock is a ``try`` lock,
names are fixed and created with ``IF NOT EXISTS``-style guards where
Postgres has them, so a repeated kind on the same session is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from psycopg import IsolationLevel

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
class ClientAttr(Dirt):
    """A client-side attribute of the psycopg connection (no SQL is sent)."""

    kind: ClassVar[str] = "client_attr"
    attr: str
    value: Any  # isolation levels by name ("SERIALIZABLE"), so the repr is valid Python

    def statements(self) -> list[str]:
        return []

    def apply(self, request: Any) -> None:
        value = self.value
        if self.attr == "isolation_level" and isinstance(value, str):
            value = IsolationLevel[value]
        request.set_client_attr(self.attr, value)


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
)
