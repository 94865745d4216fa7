"""Request bodies decoded the way Go's ``encoding/json`` Decoder does, with its error wording.

Toxiproxy answers a bad body with ``bad request body: <Go's error>``, and
clients or tests may match on it, so the messages follow Go's:

- syntax: ``unexpected EOF``, ``invalid character 'x' looking for beginning
  of value`` and the rest of Go's scanner (``encoding/json/scanner.go``);
  only the first value is read, trailing bytes are ignored (``Decoder.Decode``);
- types: ``json: cannot unmarshal string into Go struct field Proxy.name of
  type string`` (:func:`type_error`), with numbers named by their literal when
  they do not fit (``number 100.0``), as Go's ``UnmarshalTypeError`` does.

A port of Go's scanner checks the syntax first (Python accepts a little
more, such as ``1.x`` read as ``1``); Python's parser then does the decoding.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 10_000  # Go's maxNestingDepth


class Number(float):
    """A JSON number with a fraction or exponent, remembering its literal (``100.0``)."""

    literal: str

    def __new__(cls, literal: str) -> Number:
        number = super().__new__(cls, literal)
        number.literal = literal
        return number


class GoJSONError(ValueError):
    """A body Go's Decoder refuses; ``str()`` is Go's message."""


def decode(raw: bytes) -> Any:
    """The first JSON value of ``raw``; GoJSONError with Go's message when there is none."""
    if not raw.strip(b" \t\r\n"):
        raise GoJSONError("EOF")  # io.EOF: nothing at all (vs. unexpected EOF: cut short)
    problem = syntax_error(raw.decode("latin-1"))  # Go's scanner works on bytes
    if problem is not None:
        raise GoJSONError(problem)
    text = raw.decode("utf-8", errors="replace").lstrip(_SPACE)  # Go takes bad UTF-8 as U+FFFD
    try:
        value, _end = json.JSONDecoder(parse_float=Number).raw_decode(text)
    except RecursionError:  # valid, but deeper than Python parses
        raise GoJSONError("exceeded max depth") from None
    return value


def type_name(value: Any) -> str:
    """How Go names a JSON value in an UnmarshalTypeError."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "number"


def number_text(value: int | float) -> str:
    """``number <literal>``: how Go names a number that does not fit its field."""
    literal = value.literal if isinstance(value, Number) else repr(value)
    return f"number {literal}"


def type_error(what: str, struct: str, field: str, go_type: str) -> str:
    """Go's UnmarshalTypeError for a struct field (``struct`` may be "" for anonymous ones)."""
    return f"json: cannot unmarshal {what} into Go struct field {struct}.{field} of type {go_type}"


def value_error(what: str, go_type: str) -> str:
    """Go's UnmarshalTypeError for a whole value (the body itself has the wrong type)."""
    return f"json: cannot unmarshal {what} into Go value of type {go_type}"


# --- Go's scanner, for its error messages -------------------------------------------------------
_SPACE = " \t\r\n"
_DIGITS = "0123456789"
_HEX = "0123456789abcdefABCDEF"
_ESCAPES = 'bfnrt\\/"'


_CONTROL_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
}


def _quote(c: str) -> str:
    """Go's quoteChar: the byte as a rune, quoted like strconv.Quote, in single quotes."""
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    if c in _CONTROL_ESCAPES:
        return f"'{_CONTROL_ESCAPES[c]}'"
    if c.isprintable():
        return f"'{c}'"
    return f"'\\x{ord(c):02x}'" if ord(c) < 0x80 else f"'\\u{ord(c):04x}'"


def syntax_error(text: str) -> str | None:
    """Go's Decoder error for ``text`` (one char per byte; None: its first value is fine)."""
    stack: list[str] = []  # "key" / "value" (inside an object), "array"
    i, n = 0, len(text)

    def at(pos: int) -> str | None:
        return text[pos] if pos < n else None

    def bad(pos: int, context: str) -> str:
        c = at(pos)
        return "unexpected EOF" if c is None else f"invalid character {_quote(c)} {context}"

    def skip(pos: int) -> int:
        while pos < n and text[pos] in _SPACE:
            pos += 1
        return pos

    def literal(pos: int, word: str) -> tuple[int, str | None]:
        for k, expected in enumerate(word[1:], start=1):
            c = at(pos + k)
            if c != expected:
                context = f"in literal {word} (expecting {_quote(expected)})"
                return pos + k, bad(pos + k, context)
        return pos + len(word), None

    def number(pos: int) -> tuple[int, str | None]:
        if at(pos) == "-":
            pos += 1
            if at(pos) is None or at(pos) not in _DIGITS:
                return pos, bad(pos, "in numeric literal")
        if at(pos) == "0":
            pos += 1
        else:
            while at(pos) is not None and at(pos) in _DIGITS:
                pos += 1
        if at(pos) == ".":
            pos += 1
            if at(pos) is None or at(pos) not in _DIGITS:
                return pos, bad(pos, "after decimal point in numeric literal")
            while at(pos) is not None and at(pos) in _DIGITS:
                pos += 1
        if at(pos) in ("e", "E"):
            pos += 1
            if at(pos) in ("+", "-"):
                pos += 1
            if at(pos) is None or at(pos) not in _DIGITS:
                return pos, bad(pos, "in exponent of numeric literal")
            while at(pos) is not None and at(pos) in _DIGITS:
                pos += 1
        return pos, None

    def string(pos: int) -> tuple[int, str | None]:
        pos += 1  # the opening quote
        while True:
            c = at(pos)
            if c is None:
                return pos, "unexpected EOF"
            if c == '"':
                return pos + 1, None
            if c == "\\":
                pos += 1
                c = at(pos)
                if c == "u":
                    for k in range(1, 5):
                        h = at(pos + k)
                        if h is None or h not in _HEX:
                            return pos + k, bad(pos + k, "in \\u hexadecimal character escape")
                    pos += 5
                    continue
                if c is None or c not in _ESCAPES:
                    return pos, bad(pos, "in string escape code")
            elif c < " ":
                return pos, bad(pos, "in string literal")
            pos += 1

    expect_value = True
    while True:
        if expect_value:
            i = skip(i)
            c = at(i)
            if c is None:
                return "unexpected EOF"
            if c in "{[":
                if len(stack) >= MAX_DEPTH:
                    return "exceeded max depth"
                i = skip(i + 1)
                closing = "}" if c == "{" else "]"
                if at(i) == closing:
                    i += 1
                    expect_value = False
                elif c == "{":
                    if at(i) != '"':
                        return bad(i, "looking for beginning of object key string")
                    stack.append("key")
                    i, err = string(i)
                    if err:
                        return err
                    expect_value = False
                else:
                    stack.append("array")
                continue
            if c == '"':
                i, err = string(i)
            elif c == "-" or c in _DIGITS:
                i, err = number(i)
            elif c in "tfn":
                i, err = literal(i, {"t": "true", "f": "false", "n": "null"}[c])
            else:
                return bad(i, "looking for beginning of value")
            if err:
                return err
            expect_value = False
            continue
        # after a value (or an object key)
        if not stack:
            return None  # the first value is complete; Go ignores what follows
        i = skip(i)
        top = stack[-1]
        c = at(i)
        if top == "key":
            if c != ":":
                return bad(i, "after object key")
            stack[-1] = "value"
            i += 1
            expect_value = True
        elif top == "value":
            if c == ",":
                i = skip(i + 1)
                if at(i) != '"':
                    return bad(i, "looking for beginning of object key string")
                stack[-1] = "key"
                i, err = string(i)
                if err:
                    return err
            elif c == "}":
                stack.pop()
                i += 1
            else:
                return bad(i, "after object key:value pair")
        else:  # array
            if c == ",":
                i += 1
                expect_value = True
            elif c == "]":
                stack.pop()
                i += 1
            else:
                return bad(i, "after array element")
