"""plain_pool._compat: the one module that touches psycopg's and psycopg_pool's privates.

Three claims, each with a canary:

- the shape check passes on the installed versions, and catches a change:
  run (as a pure function) on a stand-in of psycopg and psycopg_pool that
  mirrors their shape, it finds nothing; with any one private name the
  package uses renamed in the stand-in, it names that name and the feature
  falls back;
- no other module of the package reaches into psycopg's or psycopg_pool's
  privates (an AST scan; shown to flag the accesses this change moved);
- the fallbacks do what their docstrings say (no server needed).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import pkgutil
import re
import subprocess
import sys
import textwrap
import types
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
import pytest
from psycopg_pool import ConnectionPool

from plain_pool import _compat, session_reset
from plain_pool.recovering_pool import RecoveringConnectionPool

PACKAGE = Path(_compat.__file__).resolve().parent


# -- the shape check on the installed versions ------------------------------------------
def test_shape_check_passes_on_the_installed_versions():
    assert _compat.check_shape(psycopg, ConnectionPool) == []
    assert _compat.SHAPE_OK and _compat.MISSING == []
    features = {f for names in _compat.PRIVATE_NAMES.values() for f in names}
    assert features == set(_compat.PSYCOPG_FEATURES) | set(_compat.POOL_FEATURES)
    assert all(_compat.available(f) for f in features)
    assert _compat.BACKOFF_OK and _compat.RESET_IN_FLIGHT_OK
    assert RecoveringConnectionPool.accepts_reset_in_flight is True
    assert _compat.AttemptWithBackoff is not None
    assert _compat.AttemptWithBackoff.__module__ == "psycopg_pool.base"


def test_import_warns_nothing_on_the_installed_versions():
    """Fresh interpreter, RuntimeWarning as an error: the one import-time warning is silent."""
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", "import plain_pool._compat"],
        env={"PYTHONPATH": str(PACKAGE.parent)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_without_psycopg_pool_only_psycopg_is_checked():
    assert _compat.check_shape(psycopg, None) == []


# -- a stand-in with psycopg's and psycopg_pool's shape, to rename things in -------------
#: What the check reads of psycopg 3.3 / psycopg_pool 3.3, reduced to the shape.
STAND_IN = """
from collections import OrderedDict, deque


class AdaptersMap:
    pass


class PrepareManager:
    def __init__(self):
        self._counts = OrderedDict()
        self._names = OrderedDict()
        self._to_flush = deque()


class Connection:
    def __init__(self):
        self._adapters = None
        self._notice_handlers = []
        self._notify_handlers = []
        self._prepared = PrepareManager()
        self._notifies_backlog = deque()

    def add_notice_handler(self, callback):
        self._notice_handlers.append(callback)

    def add_notify_handler(self, callback):
        self._notify_handlers.append(callback)

    @property
    def adapters(self):
        if not self._adapters:
            self._adapters = AdaptersMap()
        return self._adapters

    @property
    def prepare_threshold(self):
        return self._prepared.prepare_threshold

    def notifies(self):
        self._notifies_backlog, backlog = None, self._notifies_backlog
        yield from backlog

    def close(self):
        return getattr(self, "_pool", None)


class AttemptWithBackoff:
    INITIAL_DELAY = 1.0
    DELAY_BACKOFF = 2.0

    def __init__(self, *, timeout):
        self.timeout = timeout
        self.delay = 0.0

    def update_delay(self, now):
        self.delay *= self.DELAY_BACKOFF

    def time_to_give_up(self, now):
        return False


class ConnectionPool:
    def __init__(self):
        self._pool = deque()
        self._closed = True

    @property
    def closed(self):
        return self._closed

    def __del__(self):
        if getattr(self, "_closed", True):
            return

    def drain(self):
        conns = list(self._pool)
        self._pool.clear()
        return conns

    def _connect(self, timeout=None):
        conn = Connection()
        conn._pool = self
        return conn

    def _add_connection(self, attempt, growing=False):
        if not attempt:
            attempt = AttemptWithBackoff(timeout=1.0)
        self._connect()

    def _return_connection(self, conn, from_getconn):
        self._reset_connection(conn)

    def _reset_connection(self, conn):
        pass
"""


def stand_in(renamed: str | None = None, edit: tuple[str, str] | None = None) -> tuple[Any, Any]:
    """(psycopg module, pool class) built from :data:`STAND_IN`, with ``renamed`` renamed
    everywhere (what a release renaming a private attribute looks like) or one ``edit``."""
    source = STAND_IN
    if renamed is not None:
        source = re.sub(rf"\b{re.escape(renamed)}\b", f"{renamed}_renamed", source)
    if edit is not None:
        assert source.count(edit[0]) == 1, edit
        source = source.replace(*edit)
    namespace: dict[str, Any] = {"__name__": "stand_in"}
    exec(compile(source, "<stand-in>", "exec"), namespace)
    preparing = types.SimpleNamespace(PrepareManager=namespace["PrepareManager"])
    module_attrs = {"Connection": namespace["Connection"], "_preparing": preparing}
    if renamed == "_preparing":
        module_attrs = {"Connection": namespace["Connection"], "_preparing_renamed": preparing}
    return types.SimpleNamespace(**module_attrs), namespace["ConnectionPool"]


def test_the_stand_in_has_the_shape_the_check_wants():
    """Without this, a renamed stand-in failing the check would prove nothing."""
    assert _compat.check_shape(*stand_in()) == []


@pytest.mark.parametrize("name", sorted(_compat.PRIVATE_NAMES))
def test_the_check_names_each_private_name_the_package_uses_when_it_changes(name):
    """Canary per name: renamed, the check reports it and its features fall back."""
    psycopg_module, pool_class = stand_in(renamed=name)
    missing = _compat.check_shape(psycopg_module, pool_class)
    assert any(name in problem for problem in missing), missing
    by_feature = _compat._check_features(psycopg_module, pool_class)
    for feature in _compat.PRIVATE_NAMES[name]:
        assert by_feature[feature], f"{feature} still passes with {name} renamed"
    warning = _compat.shape_warning(by_feature, "psycopg 9 / psycopg_pool 9")
    assert warning is not None and name in warning
    for feature in _compat.PRIVATE_NAMES[name]:
        assert _compat.FALLBACKS[feature] in warning


@pytest.mark.parametrize(
    ("edit", "feature", "expected"),
    [
        (
            ("def _add_connection(self, attempt, growing=False):", "def _add_connection(self, a):"),
            "backoff",
            "_add_connection's parameters",
        ),
        (
            ("def _reset_connection(self, conn):", "def _reset_connection(self, conn, how):"),
            "reset_connection",
            "_reset_connection's parameters",
        ),
        (
            ("        self._reset_connection(conn)\n", "        pass\n"),
            "reset_connection",
            "_return_connection no longer uses _reset_connection",
        ),
        (
            ("    def _connect(self, timeout=None):", "    def _connect(self):"),
            "connect_error",
            "_connect's parameters",
        ),
        (
            ("        self._connect()\n", "        pass\n"),
            "connect_error",
            "_add_connection no longer uses _connect",
        ),
        (
            ("    def update_delay(self, now):", "    def update_delay(self):"),
            "backoff",
            "update_delay",
        ),
        (
            ("    DELAY_BACKOFF = 2.0\n", ""),
            "backoff",
            "DELAY_BACKOFF",
        ),
        (
            ("        self._to_flush = deque()\n", "        self._to_flush = None\n"),
            "prepared",
            "_to_flush",
        ),
        (
            ("        self._names = OrderedDict()\n", "        self._names = []\n"),
            "prepared",
            "_names is no longer a mapping",
        ),
        (
            ("    def __del__(self):\n", "    def __del__(self):\n        return\n"),
            "idle_pool",
            "__del__ no longer uses _closed",
        ),
        (
            ("            self._adapters = AdaptersMap()\n", "            pass\n"),
            "adapters",
            "adapters no longer uses AdaptersMap",
        ),
    ],
)
def test_the_check_reports_a_changed_shape(edit, feature, expected):
    """Not only renames: a changed signature, a changed type, a link that is gone."""
    psycopg_module, pool_class = stand_in(edit=edit)
    by_feature = _compat._check_features(psycopg_module, pool_class)
    assert any(expected in problem for problem in by_feature[feature]), by_feature
    others = {f: p for f, p in by_feature.items() if p and f != feature}
    assert not others, others


def test_the_check_on_something_else_entirely_reports_and_does_not_crash():
    missing = _compat.check_shape(types.SimpleNamespace(), types.SimpleNamespace())
    assert "psycopg Connection is missing" in missing
    assert any("AttemptWithBackoff is missing" in problem for problem in missing)
    assert _compat.check_shape(types.SimpleNamespace(Connection=int), int)


# -- fallbacks -----------------------------------------------------------------------------
def _stand_in_connection(**attrs: Any) -> Any:
    psycopg_module, _ = stand_in()
    conn = psycopg_module.Connection()
    for name, value in attrs.items():
        setattr(conn, name, value)
    return conn


def test_client_state_of_an_unexpected_type_fails_the_reset_not_silently():
    """Shape right at import, wrong on an instance: raise (the connection is then closed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(_compat.PrivateApiChanged, match="_notice_handlers"):
            _compat.clear_notice_handlers(_stand_in_connection(_notice_handlers=()))
        with pytest.raises(_compat.PrivateApiChanged, match="_notify_handlers"):
            _compat.clear_notify_handlers(_stand_in_connection(_notify_handlers=None))
        with pytest.raises(_compat.PrivateApiChanged, match="_prepared"):
            _compat.forget_prepared(_stand_in_connection())  # not psycopg's PrepareManager
        with pytest.raises(_compat.PrivateApiChanged, match="_prepared"):
            session_reset.user_prepared_statements_sql(_stand_in_connection())
        # at checkout the reset must fail the way a failed DISCARD ALL does
        with pytest.raises(session_reset.ResetFailed, match="_notifies_backlog"):
            session_reset.forget_pending_notifications(_stand_in_connection(_notifies_backlog=[]))
        conn = types.SimpleNamespace()
        with pytest.raises(_compat.PrivateApiChanged, match="_adapters"):
            _compat.reset_adapters(conn)
        assert not hasattr(conn, "_adapters")


def test_client_state_of_the_expected_type_is_cleared():
    conn = _stand_in_connection(_notifies_backlog=deque(["stale"]))
    conn.add_notice_handler(print)
    conn.add_notify_handler(print)
    conn._adapters = object()
    _compat.clear_notice_handlers(conn)
    _compat.clear_notify_handlers(conn)
    _compat.reset_adapters(conn)
    _compat.clear_notifies_backlog(conn)
    assert conn._notice_handlers == conn._notify_handlers == []
    assert conn._adapters is None and not conn._notifies_backlog
    conn._notifies_backlog = None  # a notifies() generator holds it: nothing to drop
    _compat.clear_notifies_backlog(conn)


def test_pool_functions_on_something_that_is_not_a_psycopg_pool_fall_back():
    other = types.SimpleNamespace(_pool=deque(["conn"]), _closed=False)
    assert _compat.idle_connections(other) == []
    assert _compat.take_idle_connections(other) is None  # caller keeps it referenced
    assert _compat.mark_closed_without_workers(other) is False
    assert other._pool == deque(["conn"]) and other._closed is False
    assert _compat.detach_from_pool(types.SimpleNamespace()) is True
    assert _compat.detach_from_pool(object()) is False  # no attribute can be set


def test_pool_functions_on_a_real_unopened_pool():
    pool = RecoveringConnectionPool("", open=False)  # no connection, no worker thread
    assert _compat.idle_connections(pool) == []
    assert _compat.take_idle_connections(pool) == []
    assert _compat.mark_closed_without_workers(pool) is True
    assert pool.closed


# -- no private access outside _compat -----------------------------------------------------
def _library_vocabulary() -> frozenset[str]:
    """Every private name psycopg's and psycopg_pool's code reads, stores or defines (all
    their modules imported first, so the set does not depend on what other tests loaded)."""
    for package in (psycopg, psycopg_pool):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            with contextlib.suppress(Exception):  # optional extras: numpy, shapely...
                importlib.import_module(info.name)
    names: set[str] = set()

    def add_code(code: types.CodeType) -> None:
        names.update(n for n in code.co_names if n.startswith("_") and not n.startswith("__"))
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                add_code(const)

    def add(obj: Any) -> None:
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        if isinstance(obj, property):
            for func in (obj.fget, obj.fset, obj.fdel):
                add(func)
        elif isinstance(obj, types.FunctionType):
            add_code(obj.__code__)
        elif isinstance(obj, type):
            for key, value in vars(obj).items():
                if key.startswith("_") and not key.startswith("__"):
                    names.add(key)
                add(value)

    for module_name, module in list(sys.modules.items()):
        if module is None or module_name.split(".")[0] not in ("psycopg", "psycopg_pool"):
            continue
        for value in list(vars(module).values()):
            if getattr(value, "__module__", None) == module_name:
                add(value)
    return frozenset(names)


LIBRARY_PRIVATE = _library_vocabulary()
LIBRARY_PACKAGES = ("psycopg", "psycopg_pool", "psycopg_c", "psycopg_binary")

#: Private library names a module may still use, with why. Each entry must be in use.
_OVERRIDE = "an override psycopg_pool calls; its shape is checked in _compat"
ALLOWED: dict[tuple[str, str], str] = {
    ("recovering_pool.py", "_add_connection"): _OVERRIDE,
    ("recovering_pool.py", "_reset_connection"): _OVERRIDE,
    ("recovering_pool.py", "_connect"): _OVERRIDE,
}


def _own_names(paths: list[Path]) -> frozenset[str]:
    """Private names the package defines: functions, classes, module names, assignments."""
    own = {path.stem for path in paths}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            elif isinstance(node, ast.arg):
                own.add(node.arg)
    return frozenset(n for n in own if n.startswith("_"))


def _library_classes(module: types.ModuleType | None) -> set[str]:
    """Names of the module's classes that subclass a psycopg / psycopg_pool class."""
    found = set()
    for name, value in vars(module or types.SimpleNamespace()).items():
        if isinstance(value, type) and any(
            base.__module__.split(".")[0] in LIBRARY_PACKAGES for base in value.__mro__[1:]
        ):
            found.add(name)
    return found


def private_accesses(
    filename: str, source: str, own: frozenset[str], library_classes: set[str]
) -> list[tuple[int, str, str]]:
    """``(line, name, code)`` for each access to a library's private name in ``source``.

    Flagged: ``x._name`` and ``getattr/setattr/hasattr/delattr(x, "_name")`` where
    ``_name`` is a library private or not one of the package's own names;
    ``self._name`` / ``cls._name`` / ``super()._name`` only in a class subclassing a
    library class; imports of ``psycopg_pool.base`` or of a private module or name.
    """
    found: list[tuple[int, str, str]] = []
    tree = ast.parse(source, filename)

    def foreign(name: str) -> bool:
        return name in LIBRARY_PRIVATE or (name not in own and not name.startswith("_plain_pool"))

    def visit(node: ast.AST, cls: str | None) -> None:
        if isinstance(node, ast.ClassDef):
            cls = node.name
        name = None
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            name = node.attr
            base = node.value
            on_self = (isinstance(base, ast.Name) and base.id in ("self", "cls")) or (
                isinstance(base, ast.Call)
                and isinstance(base.func, ast.Name)
                and base.func.id == "super"
            )
            if (
                name.startswith("__")
                or (on_self and not (cls in library_classes and name in LIBRARY_PRIVATE))
                or (not on_self and not foreign(name))
            ):
                name = None
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and node.args[1].value.startswith("_")
            and not node.args[1].value.startswith("__")
            and foreign(node.args[1].value)
        ):
            name = node.args[1].value
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for module in modules:
                parts = module.split(".")
                if parts[0] in LIBRARY_PACKAGES and (
                    module.startswith("psycopg_pool.base") or any(p.startswith("_") for p in parts)
                ):
                    name = module
                    break
        if name is not None:
            found.append((node.lineno, name, ast.get_source_segment(source, node) or ""))
        for child in ast.iter_child_nodes(node):
            visit(child, cls)

    visit(tree, None)
    return found


def _package_sources() -> list[Path]:
    return sorted(p for p in PACKAGE.glob("*.py") if p.name != "_compat.py")


def _scan_package() -> dict[tuple[str, str], list[str]]:
    paths = _package_sources()
    own = _own_names(paths)
    found: dict[tuple[str, str], list[str]] = {}
    for path in paths:
        try:
            module = importlib.import_module(f"plain_pool.{path.stem}")
        except ImportError:
            module = None
        for line, name, code in private_accesses(
            path.name, path.read_text(), own, _library_classes(module)
        ):
            found.setdefault((path.name, name), []).append(f"{path.name}:{line}: {code}")
    return found


def test_no_private_psycopg_access_outside_compat():
    found = _scan_package()
    unexpected = {key: where for key, where in found.items() if key not in ALLOWED}
    assert not unexpected, (
        "private psycopg / psycopg_pool access outside plain_pool/_compat.py (add a function "
        "there, covered by its shape check; if the name is the package's own, rename it or "
        f"list it in ALLOWED with why): {unexpected}"
    )
    stale = [key for key in ALLOWED if key not in found]
    assert not stale, f"ALLOWED entries no longer used (remove them): {stale}"


SCAN_CANARIES = {
    # what pools.py, session_reset.py and recovering_pool.py did before _compat
    "conn._pool = None": "_pool",
    'idle = list(getattr(pool, "_pool", ()))': "_pool",
    "pool._closed = True": "_closed",
    'handlers = getattr(conn, "_notice_handlers", None)': "_notice_handlers",
    'if hasattr(conn, "_adapters"):\n    conn._adapters = None': "_adapters",
    'backlog = getattr(conn, "_notifies_backlog", None)': "_notifies_backlog",
    'names = getattr(getattr(conn, "_prepared", None), "_names", {})': "_prepared",
    "from psycopg_pool.base import AttemptWithBackoff": "psycopg_pool.base",
    "ConnectionPool._add_connection": "_add_connection",
    "from psycopg._preparing import PrepareManager": "psycopg._preparing",
    "psycopg._preparing.PrepareManager()": "_preparing",
    "enc = conn.pgconn._encoding": "_encoding",
    (
        "class P(ConnectionPool):\n    def f(self):\n        with self._lock:\n            pass"
    ): "_lock",
}


@pytest.mark.parametrize("snippet", list(SCAN_CANARIES))
def test_the_scan_flags_private_accesses(snippet):
    """Canary: the accesses this change moved into _compat, and their kin, are flagged."""
    own = _own_names(_package_sources())
    found = private_accesses("snippet.py", snippet, own, {"P"})
    assert SCAN_CANARIES[snippet] in [name for _, name, _ in found], found


def test_the_scan_leaves_the_package_own_private_names_alone():
    source = textwrap.dedent(
        """
        class Plain:
            def f(self, secret, settings):
                self._lock = None
                pools._check_pid()
                settings._compute_identity()
                assert secret._value == other._value
                return getattr(secret, "_plain_pool_created_at", None)
        """
    )
    own = _own_names(_package_sources())
    assert private_accesses("snippet.py", source, own, set()) == []


def test_compat_declares_every_private_name_it_uses():
    """Each library private _compat.py names is in PRIVATE_NAMES (hence in the canaries
    above), and each PRIVATE_NAMES entry is used."""
    source = (PACKAGE / "_compat.py").read_text()
    used = {name for _, name, _ in private_accesses("_compat.py", source, frozenset(), set())}
    assert used <= set(_compat.PRIVATE_NAMES), used - set(_compat.PRIVATE_NAMES)
    for name in _compat.PRIVATE_NAMES:
        assert re.search(rf"[.\"']{re.escape(name)}\b", source), f"{name} is declared, unused"
