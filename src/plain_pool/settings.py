"""``DatabaseSettings``: the validated, immutable form of the POSTGRES_* settings.

Why: every bad input must fail at startup with an ``ImproperlyConfigured``
naming the key, not as an obscure error on the first request; and the
user's dicts are copied, never mutated (Django #37075: a user ``check`` in
the pool options collided with Django's own, and the fix had to copy the
options so as not to mutate the user's settings). No message or repr shows a
password (:mod:`plain_pool._redact`): values are echoed through ``safe_repr``
and URLs through ``mask_url``.

Two inputs: a dict of ``POSTGRES_*`` keys (``from_dict``) or a
``postgres://`` URL (``from_url``) whose query parameters map to the same keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import numbers
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

import psycopg.pq

from plain_pool._redact import Secret, is_secret_key, mask_url, redact, safe_repr, secrets_of
from plain_pool.exceptions import ImproperlyConfigured
from plain_pool.pool_options import KNOWN_OPTIONS, validate_pool_options

#: Keys of POSTGRES_OPTIONS handled by the backend rather than passed to libpq.
SPECIAL_OPTIONS = ("assume_role", "prepare_threshold", "server_side_binding")

#: Top-level settings keys and their defaults.
SETTING_KEYS: dict[str, Any] = {
    "POSTGRES_HOST": "",
    "POSTGRES_PORT": None,
    "POSTGRES_DATABASE": None,
    "POSTGRES_USER": "",
    "POSTGRES_PASSWORD": "",
    "POSTGRES_OPTIONS": {},
    "POSTGRES_POOL": False,
    "POSTGRES_CONN_MAX_AGE": 0,
    "POSTGRES_CONN_HEALTH_CHECKS": False,
    "POSTGRES_DISABLE_SERVER_SIDE_CURSORS": False,
    "TIME_ZONE": "UTC",
    "USE_TZ": True,
}

#: URL query parameters that are settings (the rest are libpq options).
_URL_SETTINGS = {
    "pool": "POSTGRES_POOL",
    "conn_max_age": "POSTGRES_CONN_MAX_AGE",
    "health_checks": "POSTGRES_CONN_HEALTH_CHECKS",
    "conn_health_checks": "POSTGRES_CONN_HEALTH_CHECKS",
    "disable_server_side_cursors": "POSTGRES_DISABLE_SERVER_SIDE_CURSORS",
    "time_zone": "TIME_ZONE",
    "use_tz": "USE_TZ",
}
_URL_POOL_PREFIX = "pool_"


def _libpq_keywords() -> frozenset[str]:
    return frozenset(d.keyword.decode() for d in psycopg.pq.Conninfo.get_defaults())


LIBPQ_KEYWORDS = _libpq_keywords()
#: Set by the backend itself; a user value would be ignored or break it.
_RESERVED_LIBPQ = {
    "host": "POSTGRES_HOST",
    "port": "POSTGRES_PORT",
    "dbname": "POSTGRES_DATABASE",
    "user": "POSTGRES_USER",
    "password": "POSTGRES_PASSWORD",
}


def _shown(value: Any, key: object = None) -> str:
    """``type: repr`` of a bad value for a message, secrets masked."""
    return f"{type(value).__name__}: {safe_repr(value, key=key)}"


@contextlib.contextmanager
def _masking(secrets: Iterable[str]) -> Iterator[None]:
    """Mask known secrets in an ImproperlyConfigured raised inside (a password typed
    into another key, TIME_ZONE say, is echoed by that key's message otherwise)."""
    try:
        yield
    except ImproperlyConfigured as exc:
        exc.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in exc.args)
        raise


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ImproperlyConfigured(f"{key} must be True or False, got {_shown(value, key)}")


def _parse_bool_text(key: str, text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on", "t", "y"):
        return True
    if low in ("0", "false", "no", "off", "f", "n"):
        return False
    raise ImproperlyConfigured(f"{key} must be a boolean, got {safe_repr(text)}")


def _parse_number_text(key: str, text: str, *, allow_none: bool = False) -> Any:
    if allow_none and text.strip().lower() in ("none", "null", ""):
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ImproperlyConfigured(f"{key} must be a number, got {safe_repr(text)}") from None


@dataclasses.dataclass(frozen=True, repr=False)
class DatabaseSettings:
    """Validated connection and pool settings for one database alias.

    Build it with :meth:`from_dict` or :meth:`from_url`; the constructor does
    no validation of its own. Mappings are read-only copies. The repr never
    shows the password, nor a secret libpq option such as ``sslpassword``.
    """

    host: str
    port: int | None
    database: str
    user: str
    password: str = dataclasses.field(repr=False)
    #: libpq options (connect_timeout, keepalives, sslmode, options, ...).
    options: Mapping[str, Any]
    assume_role: str | None
    #: None = prepared statements off (the default, safe behind PgBouncer).
    prepare_threshold: int | None
    server_side_binding: bool
    #: None = no pool; otherwise the validated ConnectionPool kwargs.
    pool: Mapping[str, Any] | None
    #: 0 = close at request end; None = persistent forever; N = seconds.
    conn_max_age: float | None
    conn_health_checks: bool
    disable_server_side_cursors: bool
    time_zone: str
    use_tz: bool
    #: The settings dict this was built from (a deep-enough copy), for replace().
    source: Mapping[str, Any] = dataclasses.field(repr=False, compare=False)

    # -- construction -------------------------------------------------
    @classmethod
    def coerce(cls, value: DatabaseSettings | Mapping[str, Any] | str) -> DatabaseSettings:
        """Accept a DatabaseSettings, a settings dict or a URL."""
        if isinstance(value, DatabaseSettings):
            return value
        if isinstance(value, str):
            return cls.from_url(value)
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise ImproperlyConfigured(
            f"database settings must be a dict, a URL or DatabaseSettings, got {_shown(value)}"
        )

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> DatabaseSettings:
        """Validate a dict of POSTGRES_* keys (plus TIME_ZONE / USE_TZ)."""
        if not isinstance(settings, Mapping):
            raise ImproperlyConfigured(f"database settings must be a dict, got {_shown(settings)}")
        with _masking(secrets_of(settings)):
            return cls._from_dict(settings)

    @classmethod
    def _from_dict(cls, settings: Mapping[str, Any]) -> DatabaseSettings:
        unknown = sorted(set(settings) - set(SETTING_KEYS))
        if unknown:
            raise ImproperlyConfigured(
                f"unknown database setting {unknown[0]!r} (known: {', '.join(SETTING_KEYS)})"
            )
        s = {**SETTING_KEYS, **settings}
        source = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in settings.items()}

        database = s["POSTGRES_DATABASE"]
        if not isinstance(database, str) or not database:
            raise ImproperlyConfigured(
                f"POSTGRES_DATABASE is required and must be a non-empty str, got {_shown(database)}"
            )
        for key in ("POSTGRES_HOST", "POSTGRES_USER", "POSTGRES_PASSWORD"):
            if not isinstance(s[key], str):
                raise ImproperlyConfigured(f"{key} must be a str, got {_shown(s[key], key)}")
        port = s["POSTGRES_PORT"]
        if isinstance(port, str) and port.strip().isdigit():
            port = int(port)
        if port in ("", None):
            port = None
        elif isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ImproperlyConfigured(
                f"POSTGRES_PORT must be an int in 1..65535, got {_shown(port)}"
            )

        options, assume_role, prepare_threshold, server_side_binding = cls._options(
            s["POSTGRES_OPTIONS"]
        )
        pool = validate_pool_options(s["POSTGRES_POOL"])

        max_age = s["POSTGRES_CONN_MAX_AGE"]
        if max_age is not None and (
            isinstance(max_age, bool) or not isinstance(max_age, numbers.Real) or max_age < 0
        ):
            raise ImproperlyConfigured(
                f"POSTGRES_CONN_MAX_AGE must be None or a number >= 0, got {_shown(max_age)}"
            )
        if pool is not None and max_age != 0:
            raise ImproperlyConfigured(
                f"POSTGRES_POOL cannot be used with POSTGRES_CONN_MAX_AGE={max_age!r}: "
                "pooling does not support persistent connections; set POSTGRES_CONN_MAX_AGE to 0"
            )
        health = _bool("POSTGRES_CONN_HEALTH_CHECKS", s["POSTGRES_CONN_HEALTH_CHECKS"])
        no_ssc = _bool(
            "POSTGRES_DISABLE_SERVER_SIDE_CURSORS", s["POSTGRES_DISABLE_SERVER_SIDE_CURSORS"]
        )
        use_tz = _bool("USE_TZ", s["USE_TZ"])
        time_zone = s["TIME_ZONE"]
        if not isinstance(time_zone, str) or not time_zone:
            raise ImproperlyConfigured(
                f"TIME_ZONE must be a non-empty str, got {_shown(time_zone)}"
            )
        try:
            zoneinfo.ZoneInfo(time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ImproperlyConfigured(
                f"TIME_ZONE {safe_repr(time_zone)} is not a known time zone"
            ) from None

        return cls(
            host=s["POSTGRES_HOST"],
            port=port,
            database=database,
            user=s["POSTGRES_USER"],
            password=s["POSTGRES_PASSWORD"],
            options=MappingProxyType(options),
            assume_role=assume_role,
            prepare_threshold=prepare_threshold,
            server_side_binding=server_side_binding,
            pool=pool,
            conn_max_age=max_age,
            conn_health_checks=health,
            disable_server_side_cursors=no_ssc,
            time_zone=time_zone,
            use_tz=use_tz,
            source=MappingProxyType(source),
        )

    @staticmethod
    def _options(value: Any) -> tuple[dict[str, Any], str | None, int | None, bool]:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ImproperlyConfigured(f"POSTGRES_OPTIONS must be a dict, got {_shown(value)}")
        options: dict[str, Any] = {}
        assume_role = None
        prepare_threshold = None
        server_side_binding = False
        for key, item in value.items():
            name = f"POSTGRES_OPTIONS[{safe_repr(key)}]"
            if key == "assume_role":
                if item is not None and (not isinstance(item, str) or not item):
                    raise ImproperlyConfigured(
                        f"{name} must be a non-empty str, got {_shown(item)}"
                    )
                assume_role = item
            elif key == "prepare_threshold":
                if item is not None and (
                    isinstance(item, bool) or not isinstance(item, int) or item < 0
                ):
                    raise ImproperlyConfigured(
                        f"{name} must be None or an int >= 0, got {_shown(item)}"
                    )
                prepare_threshold = item
            elif key == "server_side_binding":
                server_side_binding = _bool(name, item)
            elif key in _RESERVED_LIBPQ:
                raise ImproperlyConfigured(f"{name} is set with {_RESERVED_LIBPQ[key]} instead")
            elif key not in LIBPQ_KEYWORDS:
                raise ImproperlyConfigured(
                    f"{name} is not a libpq connection option nor one of {SPECIAL_OPTIONS}"
                )
            elif not isinstance(item, str | int | float) or isinstance(item, bool):
                raise ImproperlyConfigured(
                    f"{name} must be a str or a number, got {_shown(item, key)}"
                )
            else:
                options[key] = item
        return options, assume_role, prepare_threshold, server_side_binding

    @classmethod
    def from_url(cls, url: str, **extra: Any) -> DatabaseSettings:
        """Parse ``postgres://user:password@host:port/database?param=value``.

        Query parameters: ``pool``, ``pool_<ConnectionPool option>``,
        ``conn_max_age``, ``health_checks``, ``disable_server_side_cursors``,
        ``time_zone``, ``use_tz``, ``assume_role``, ``prepare_threshold``,
        ``server_side_binding``; anything else is a libpq option (``sslmode``,
        ``connect_timeout``, ...). ``extra`` are POSTGRES_* keys that win over the URL.
        """
        if not isinstance(url, str):
            raise ImproperlyConfigured(f"database URL must be a str, got {_shown(url)}")
        try:
            parts = urlsplit(url)
            hostname = parts.hostname
        except ValueError as exc:  # e.g. "Invalid IPv6 URL"
            raise ImproperlyConfigured(
                f"database URL is malformed ({exc}): {mask_url(url)!r}"
            ) from None
        password = parts.password or ""
        with _masking([password, unquote(password), *secrets_of(extra)]):
            return cls._from_url_parts(url, parts, hostname, extra)

    @classmethod
    def _from_url_parts(
        cls, url: str, parts: SplitResult, hostname: str | None, extra: Mapping[str, Any]
    ) -> DatabaseSettings:
        if parts.scheme not in ("postgres", "postgresql"):
            raise ImproperlyConfigured(
                "database URL scheme must be postgres:// or postgresql://, "
                f"got {safe_repr(parts.scheme)}"
            )
        try:
            port = parts.port
        except ValueError:
            raise ImproperlyConfigured(
                f"database URL has an invalid port: {mask_url(url)!r}"
            ) from None
        settings: dict[str, Any] = {
            "POSTGRES_HOST": unquote(hostname or ""),
            "POSTGRES_PORT": port,
            "POSTGRES_DATABASE": unquote(parts.path.lstrip("/")),
            "POSTGRES_USER": unquote(parts.username or ""),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
        }
        options: dict[str, Any] = {}
        pool: dict[str, Any] = {}
        pool_flag: bool | None = None
        for name, text in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
            key = f"URL parameter {safe_repr(name)}"
            if name == "pool":
                pool_flag = _parse_bool_text(key, text)
            elif name.startswith(_URL_POOL_PREFIX) and name[len(_URL_POOL_PREFIX) :] in (
                KNOWN_OPTIONS
            ):
                option = name[len(_URL_POOL_PREFIX) :]
                kind = KNOWN_OPTIONS[option]
                if kind in ("callable",):
                    raise ImproperlyConfigured(f"{key}: {option} cannot be given in a URL")
                pool[option] = (
                    text if kind == "str" else _parse_number_text(key, text, allow_none=True)
                )
            elif name in ("conn_max_age",):
                settings[_URL_SETTINGS[name]] = _parse_number_text(key, text, allow_none=True)
            elif name in _URL_SETTINGS and name not in ("time_zone",):
                settings[_URL_SETTINGS[name]] = _parse_bool_text(key, text)
            elif name == "time_zone":
                settings["TIME_ZONE"] = text
            elif name == "assume_role":
                options["assume_role"] = text
            elif name == "prepare_threshold":
                options["prepare_threshold"] = _parse_number_text(key, text, allow_none=True)
            elif name == "server_side_binding":
                options["server_side_binding"] = _parse_bool_text(key, text)
            elif name in LIBPQ_KEYWORDS and name not in _RESERVED_LIBPQ:
                options[name] = text
            elif name in _RESERVED_LIBPQ:
                raise ImproperlyConfigured(
                    f"{key} cannot be given as a query parameter: "
                    "give it in the URL itself, before the '?'"
                )
            else:
                raise ImproperlyConfigured(
                    f"{key} is not a libpq option nor a plain_pool parameter"
                )
        if pool and pool_flag is False:
            raise ImproperlyConfigured("URL parameter 'pool' is false but pool_* options are given")
        if pool or pool_flag:
            settings["POSTGRES_POOL"] = pool or True
        if options:
            settings["POSTGRES_OPTIONS"] = options
        settings.update(extra)
        return cls.from_dict(settings)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={safe_repr(getattr(self, f.name))}"
            for f in dataclasses.fields(self)
            if f.repr
        )
        return f"{type(self).__name__}({shown})"

    # -- derived values -----------------------------------------------
    @property
    def pooled(self) -> bool:
        return self.pool is not None

    @property
    def connection_timezone(self) -> str:
        """The session zone: "UTC" when USE_TZ (aware datetimes), else TIME_ZONE (as Django)."""
        return "UTC" if self.use_tz else self.time_zone

    def to_dict(self) -> dict[str, Any]:
        """A fresh copy of the settings dict this was built from."""
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.source.items()}

    def replace(self, **changes: Any) -> DatabaseSettings:
        """New settings with some POSTGRES_* / TIME_ZONE / USE_TZ keys changed (validated)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    @functools.cached_property
    def _identity(self) -> tuple[Any, ...]:
        return self._compute_identity()

    def identity(self) -> tuple[Any, ...]:
        """Cached :meth:`_compute_identity` (it is on every checkout's path)."""
        return self._identity

    def _compute_identity(self) -> tuple[Any, ...]:
        """What makes two settings talk to the same pool, ignoring the time zone.

        Health checks are left out too (they run in the checkout loop, not in
        the pool). The zone is deliberately left out: a zone change must be handled by
        ``ensure_timezone()`` closing and forgetting the pool, whose idle
        sessions carry the old zone in their startup options, not hidden by a
        new registry key (which would leave the old pool and its sessions open).
        Secrets are wrapped in :class:`~plain_pool._redact.Secret`: the key is
        part of the pool registry's entries, and must not print a password.
        """
        pool = tuple(sorted((k, repr(v)) for k, v in (self.pool or {}).items()))
        return (
            self.host,
            self.port,
            self.database,
            self.user,
            Secret(self.password),
            tuple(
                sorted(
                    (k, Secret(str(v)) if is_secret_key(k) else str(v))
                    for k, v in self.options.items()
                )
            ),
            self.assume_role,
            self.prepare_threshold,
            self.server_side_binding,
            pool,
        )
