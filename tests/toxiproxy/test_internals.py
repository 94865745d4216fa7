"""Server-free checks of the embedded server: module layering, slicer arithmetic."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import chaos.toxiproxy.toxics as toxics_package
from chaos.toxiproxy.gojson import GoJSONError, decode
from chaos.toxiproxy.toxics.slicer import SlicerToxic

FORBIDDEN = ("chaos.toxiproxy.chain", "chaos.toxiproxy.dataplane", "chaos.toxiproxy.model")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_toxics_never_import_the_chain_or_the_data_plane():
    package = Path(toxics_package.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert len(modules) > 5
    for module in modules:
        bad = {m for m in imported_modules(module) if m.startswith(FORBIDDEN)}
        assert not bad, f"{module.name} imports {sorted(bad)}"


def slicer(average: int, variation: int) -> SlicerToxic:
    return SlicerToxic({"average_size": average, "size_variation": variation, "delay": 0})


def test_slicer_halves_until_within_average_plus_variation():
    assert slicer(10, 0).slices(100) == [6, 6, 6, 7] * 4  # Toxiproxy's 16 slices of 6-7
    assert slicer(10, 0).slices(10) == [10]
    assert slicer(10, -3).slices(64) == [4] * 16  # negative variation used as is
    for _ in range(200):
        sizes = slicer(100, 20).slices(1024)
        assert sum(sizes) == 1024
        assert all(1 <= size <= 120 for size in sizes), sizes


def test_slicer_that_can_never_cut_small_enough_holds_data():
    assert slicer(0, 0).slices(100) is None
    assert slicer(5, -5).slices(100) is None
    assert slicer(1, 0).slices(3) == [1, 1, 1]


def test_slicer_keeps_cuts_inside_the_chunk_for_large_variations():
    for _ in range(200):
        sizes = slicer(1, 10).slices(50)
        assert sum(sizes) == 50 and all(size >= 1 for size in sizes), sizes


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"  \n", "EOF"),
        (b"-", "unexpected EOF"),
        (b'"abc', "unexpected EOF"),
        (b"[1, 2", "unexpected EOF"),
        (b"NaN", "invalid character 'N' looking for beginning of value"),
        (b"-Infinity", "invalid character 'I' in numeric literal"),
        (b"tru", "unexpected EOF"),
        (b"trap", "invalid character 'a' in literal true (expecting 'u')"),
        (b"nul!", "invalid character '!' in literal null (expecting 'l')"),
        (b"1.x", "invalid character 'x' after decimal point in numeric literal"),
        (b"1e+", "unexpected EOF"),
        (b"1ex", "invalid character 'x' in exponent of numeric literal"),
        (b'{"a":1 "b"}', "invalid character '\"' after object key:value pair"),
        (b'{"a":1,}', "invalid character '}' looking for beginning of object key string"),
        (b"[1 2]", "invalid character '2' after array element"),
        (b'"a\x01"', "invalid character '\\x01' in string literal"),
        (b'"\\q"', "invalid character 'q' in string escape code"),
        (b'"\\u12g4"', "invalid character 'g' in \\u hexadecimal character escape"),
        (b"\xef\xbb\xbf{}", "invalid character '\u00ef' looking for beginning of value"),
        (b"{'a': 1}", "invalid character '\\'' looking for beginning of object key string"),
    ],
)
def test_go_decoder_error_wording(raw, message):
    with pytest.raises(GoJSONError) as info:
        decode(raw)
    assert str(info.value) == message


def test_go_decoder_reads_the_first_value_only():
    assert decode(b'{"a": [1, 2.5e1, "x"]} trailing') == {"a": [1, 25.0, "x"]}
    assert decode(b"0123") == 0
    assert decode(b'"\xff"') == "\ufffd"  # invalid UTF-8 becomes U+FFFD, as in Go
