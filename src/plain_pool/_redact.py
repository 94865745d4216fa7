"""Masking passwords: the one place that decides what a secret looks like in text.

Why: settings errors, reprs, logs and the chaos report all print connection
information, and a password must never reach a terminal, a CI log or a JSON
report. Everything that prints such information goes through :func:`redact`
(text) or :func:`safe_repr` (a value), which mask:

- the password of a URL (``postgres://u:***@h:5432/db``);
- the value of a password-like key in a libpq conninfo string
  (``password=***``), a keyword-argument repr (``password='***'``) or a dict
  repr (``'POSTGRES_PASSWORD': '***'``);
- any secret given explicitly (a password the caller knows, such as the one
  in the settings a scenario runs with).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

MASK = "***"

#: Key names whose values are secrets (matched case-insensitively as substrings):
#: ``password``, libpq's ``sslpassword``, ``POSTGRES_PASSWORD``, ``PGPASSWORD``...
_SECRET_KEY = re.compile(r"pass(?:word|wd)", re.IGNORECASE)

# scheme://user:PASSWORD@host - greedy up to the last "@" of the word, so a
# password holding an unescaped "@", "/", "?" or "#" is masked whole (at the
# price of over-masking a URL without a password but with an "@" further on).
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)(?P<secret>[^\s'\"]*)(?P<at>@)"
)
# key=value (conninfo), key='value' (kwargs repr), 'key': 'value' / "key": value (dict repr).
_KEY_VALUE = re.compile(
    r"(?P<head>(?P<q>['\"]?)\b(?P<key>\w*pass(?:word|wd)\w*)(?P=q)\s*[:=]\s*)"
    r"(?P<secret>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s,;)}\]&'\"]+)",
    re.IGNORECASE,
)
#: Explicit secrets shorter than this are not searched for in free text (a
#: one-letter "password" would mask every occurrence of that letter).
MIN_SECRET_LENGTH = 4


def is_secret_key(key: object) -> bool:
    """Whether a settings / option / environment key holds a secret."""
    return isinstance(key, str) and bool(_SECRET_KEY.search(key))


def _mask_value(match: re.Match[str]) -> str:
    secret = match.group("secret")
    quote = secret[0] if secret[:1] in ("'", '"') else ""
    return f"{match.group('head')}{quote}{MASK}{quote}"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every password it holds replaced by ``***``.

    ``secrets``: values known to be secret (e.g. a settings' password); each
    occurrence is masked too, however it appears.
    """
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}{m.group('at')}", text)
    text = _KEY_VALUE.sub(_mask_value, text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, MASK)
    return text


def secrets_in(text: str | None) -> list[str]:
    """The passwords a DSN or URL holds (as written, and percent-decoded).

    For callers that know a DSN (an environment variable, say) and must mask
    its password wherever else it shows up. Works on malformed DSNs too.
    """
    if not text:
        return []
    found = [m.group("secret") for m in _URL_PASSWORD.finditer(text)]
    found += [m.group("secret").strip("'\"") for m in _KEY_VALUE.finditer(text)]
    return sorted({v for s in found if s for v in (s, unquote(s))})


def secrets_of(settings: Mapping[Any, Any]) -> list[str]:
    """The values of secret keys in a (nested) settings mapping: ``POSTGRES_PASSWORD``,
    ``POSTGRES_OPTIONS["sslpassword"]``... - to mask wherever else they show up."""
    found: list[str] = []
    for key, value in settings.items():
        if isinstance(value, Mapping):
            found += secrets_of(value)
        elif is_secret_key(key) and isinstance(value, str) and value:
            found.append(value)
    return found


def redact_data(value: Any, secrets: Iterable[str | None] = ()) -> Any:
    """A copy of JSON-like data (dicts, lists, strings) with :func:`redact` applied
    to every string, keys included, and every secret key's value masked."""
    secrets = list(secrets)
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {
            redact_data(k, secrets): (
                MASK if is_secret_key(k) and v not in (None, "") else redact_data(v, secrets)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_data(v, secrets) for v in value)
    return value


def mask_url(url: str) -> str:
    """A database URL fit for printing: ``postgres://u:***@h:5432/db``."""
    return redact(url)


def safe_repr(value: Any, *, key: object = None) -> str:
    """``repr(value)`` with secrets masked: a secret key's value is never shown.

    Mappings are walked, so ``{"sslpassword": "x"}`` prints as
    ``{'sslpassword': '***'}`` even though no pattern would recognise the value.
    """
    if is_secret_key(key):
        return repr(MASK) if value not in (None, "") else repr(value)
    if isinstance(value, Mapping):
        items = ", ".join(f"{k!r}: {safe_repr(v, key=k)}" for k, v in value.items())
        return "{" + items + "}"
    return redact(repr(value))


class Secret:
    """A value that compares and hashes as itself but prints as ``***``.

    For tuples that must carry a password (the pool registry's keys) and may
    end up in a repr.
    """

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __repr__(self) -> str:
        return repr(MASK) if self._value not in (None, "") else repr(self._value)

    __str__ = __repr__
