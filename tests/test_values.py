"""Values and their types: text that shows the type, JSON that round-trips every msgpack value,
``get --raw``, ``put KEY -`` / ``--file``, ``get --meta`` (issue #13)."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import ENV, NodeProcess, node_process, udpdht
from hypothesis import given
from hypothesis import strategies as st

from udpdht import values, wire
from udpdht.limits import MAX_VALUE

# --- pure conversions --------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(values.INT_MIN, values.INT_MAX)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
_keys = st.none() | st.booleans() | st.integers(values.INT_MIN, values.INT_MAX) | st.text()
msgpack_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(), inner, max_size=4)
        | st.dictionaries(_keys | st.binary(), inner, max_size=4)
        | st.dictionaries(st.sampled_from(["$bytes", "$map", "$float"]), inner, max_size=1)
    ),
    max_leaves=12,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, types included (1 is not 1.0 nor True), NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(msgpack_values)
def test_json_round_trips_every_msgpack_value(value: Any) -> None:
    text = values.to_json(value)
    json.loads(text)  # strict JSON: no NaN, no Infinity
    assert _same(values.from_json(text), value)


@given(msgpack_values)
def test_json_round_trips_through_the_store_encoding(value: Any) -> None:
    """What `get --json` prints of a stored value, `put --json` stores as the same bytes."""
    stored = wire.unpack_value(wire.pack_value(value, 10**6))
    again = values.from_json(values.to_json(stored))
    assert wire.pack_value(again, 10**6) == wire.pack_value(stored, 10**6)


@given(st.floats(allow_nan=True) | st.sampled_from([math.inf, -math.inf, math.nan]))
def test_every_float_round_trips(x: float) -> None:
    assert _same(values.from_json(values.to_json(x)), x)


def test_json_forms() -> None:
    assert values.to_json(b"hi") == '{"$bytes": "aGk="}'
    assert values.to_json({1: "a"}) == '{"$map": [[1, "a"]]}'
    assert values.to_json({"$bytes": "x"}) == '{"$map": [["$bytes", "x"]]}'  # not read as bytes
    assert values.to_json(math.nan) == '{"$float": "NaN"}'
    assert values.to_json(1.0) == "1.0" and values.from_json("1.0") == 1.0
    assert type(values.from_json("1")) is int and type(values.from_json("1.0")) is float
    assert values.from_json('{"$bytes": ""}') == b""
    assert values.from_json('{"$bytes": "aGk=", "other": 1}') == {"$bytes": "aGk=", "other": 1}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("18446744073709551616", "outside msgpack's range"),
        ("-9223372036854775809", "outside msgpack's range"),
        ("[1, 2", "not valid JSON"),
        ("NaN", 'write {"$float": "NaN"}'),
        ('{"$bytes": "!!"}', "not base64"),
        ('{"$bytes": 3}', "base64 string"),
        ('{"$map": [[1]]}', "[key, value] pairs"),
        ('{"$map": [[[1], 2]]}', "cannot be a list"),
        ('{"$map": [[1, "one"], [true, 2]]}', '"$map": keys 1 and true would be one key'),
        ('{"$map": [[1.0, "a"], [1, "b"]]}', '"$map": keys 1.0 and 1 would be one key'),
        ('{"$map": [["k", 1], ["k", 2]]}', '"$map": key "k" is given twice'),
        ('{"$float": "nan"}', '"NaN", "Infinity", "-Infinity"'),
        ('"\\ud800"', "lone surrogate"),
        ('{"\\udc00": 1}', "lone surrogate"),
    ],
)
def test_json_refusals(text: str, error: str) -> None:
    with pytest.raises(values.ValueFormatError) as info:
        values.from_json(text)
    assert error in str(info.value)


def test_extreme_ints_are_accepted() -> None:
    for n in (values.INT_MIN, values.INT_MAX):
        assert values.from_json(str(n)) == n
        wire.pack_value(n, 100)  # and msgpack takes them


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("42", "42"),
        ("", ""),
        (42, "(int) 42"),
        (1.5, "(float) 1.5"),
        (math.nan, "(float) NaN"),
        (-math.inf, "(float) -Infinity"),
        (True, "(bool) true"),
        (None, "(nil) null"),
        (b"\x00\xff", "(bytes) AP8="),
        ([1, "a"], '(list) [1, "a"]'),
        ({"k": b"x"}, '(map) {"k": {"$bytes": "eA=="}}'),
    ],
)
def test_show_names_every_type_but_str(value: Any, text: str) -> None:
    assert values.show(value) == text


def test_raw() -> None:
    assert values.raw(b"\x00\xff") == b"\x00\xff"
    assert values.raw("é") == "é".encode()
    with pytest.raises(values.ValueFormatError, match=r"the value is an int; .*use --json"):
        values.raw(42)


def test_meta_of_a_stored_value() -> None:
    stored = values.StoredValue("v", 1_700_000_000_123, "ab" * 20, 1_700_000_100.0)
    meta = stored.meta(now=1_700_000_040.0)
    assert meta["ttl_left_s"] == pytest.approx(60.0)
    assert meta["written"] == "2023-11-14T22:13:20.123Z"
    assert meta["version"] == {"stamp": 1_700_000_000_123, "writer": "ab" * 20}
    text = values.show_meta(stored, now=1_700_000_040.0)
    assert "expires  in 1 min 00 s" in text and "ab" * 20 in text
    forever = values.StoredValue(1, 1, "00" * 20, None)
    assert forever.ttl_left() is None and "expires  never" in values.show_meta(forever)


# --- the CLI against a node process ------------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    with node_process() as proc:
        yield proc


def run(
    node: NodeProcess, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """`udpdht ARGS --node NODE` with bytes in and out."""
    return subprocess.run(
        [sys.executable, "-m", "udpdht", *args, "--node", node.addr_text],
        input=stdin,
        capture_output=True,
        timeout=30,
        env=ENV,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> bytes:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_string_and_int_look_different(node: NodeProcess) -> None:
    ok(run(node, "put", "s42", "42"))
    ok(run(node, "put", "n42", "42", "--json"))
    assert ok(run(node, "get", "s42")) == b"42\n"
    assert ok(run(node, "get", "n42")) == b"(int) 42\n"
    assert ok(run(node, "get", "s42", "--json")) == b'"42"\n'
    assert ok(run(node, "get", "n42", "--json")) == b"42\n"


def test_bytes_from_stdin_round_trip_through_json_and_raw(node: NodeProcess) -> None:
    blob = bytes(range(256)) * 3
    ok(run(node, "put", "blob", "-", stdin=blob))
    assert ok(run(node, "get", "blob", "--raw")) == blob
    shown = ok(run(node, "get", "blob", "--json"))
    assert json.loads(shown) == {"$bytes": base64.b64encode(blob).decode()}
    ok(run(node, "put", "blob2", "-", "--json", stdin=shown))
    assert ok(run(node, "get", "blob2", "--raw")) == blob
    assert ok(run(node, "get", "blob")).startswith(b"(bytes) AAECAw")


def test_json_round_trips_every_type_through_the_cli(node: NodeProcess) -> None:
    doc = (
        '{"a": [1, 2.5, true, null, "x"], "b": {"$bytes": "AP8="}, "c": {"$map": [[7, "int key"]]}}'
    )
    ok(run(node, "put", "doc", doc, "--json"))
    out = ok(run(node, "get", "doc", "--json"))
    assert json.loads(out) == json.loads(doc)
    ok(run(node, "put", "doc2", "-", "--json", stdin=out))
    assert ok(run(node, "get", "doc2", "--json")) == out


def test_raw_of_a_str_is_utf8_and_of_an_int_an_error(node: NodeProcess) -> None:
    ok(run(node, "put", "word", "héllo"))
    assert ok(run(node, "get", "word", "--raw")) == "héllo".encode()  # no newline
    ok(run(node, "put", "num", "7", "--json"))
    result = run(node, "get", "num", "--raw")
    assert result.returncode == 2 and result.stdout == b""
    assert b"the value is an int" in result.stderr and b"--json" in result.stderr


def test_put_from_a_file_bytes_or_text(node: NodeProcess, tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_bytes("héllo\n".encode())
    ok(run(node, "put", "f-bytes", "--file", str(path)))
    assert ok(run(node, "get", "f-bytes", "--json")) == b'{"$bytes": "aMOpbGxvCg=="}\n'
    ok(run(node, "put", "f-text", "--file", str(path), "--text"))
    assert ok(run(node, "get", "f-text", "--json")) == '"héllo\\n"\n'.encode()
    # A text that ends in its newline prints as it is, not with a blank line after it (a new
    # user's trial: printf 'line1\nline2\n' | udpdht put txt - --text; udpdht get txt).
    assert ok(run(node, "get", "f-text")) == "héllo\n".encode()
    ok(run(node, "put", "lines", "-", "--text", stdin=b"line1\nline2\n"))
    assert ok(run(node, "get", "lines")) == b"line1\nline2\n"
    path.write_bytes(b"\xff")
    bad = run(node, "put", "f-text", "--file", str(path), "--text")
    assert bad.returncode == 2 and b"not UTF-8" in bad.stderr


def test_size_limits_are_clear(node: NodeProcess, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_VALUE + 1))
    result = run(node, "put", "big", "--file", str(big))
    assert result.returncode == 2
    assert result.stderr.count(b"\n") == 1 and b"more than 60,000 bytes" in result.stderr
    result = run(node, "put", "big", "-", stdin=b"x" * (MAX_VALUE - 2))  # fits, not encoded
    assert result.returncode == 2 and b"exceeds 60,000" in result.stderr
    assert b"limit per value" in result.stderr
    assert b"59,998 bytes of data and the header" in result.stderr  # why not 59,998 alone
    result = run(node, "put", "big", str(2**64), "--json")
    assert result.returncode == 2 and b"outside msgpack's range" in result.stderr


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["put", "k"], "VALUE is missing"),
        (["put", "k", "v", "--file", "/nonexistent"], "not both"),
        (["put", "k", "--file", "/nonexistent"], "cannot read /nonexistent"),
        (["put", "k", "v", "--text"], "--text applies to stdin"),
        (["put", "k", "{", "--json"], "VALUE: not valid JSON"),
        (["get", "k", "--raw", "--json"], "not allowed with argument"),
        (["ring", "--draw", "--json"], "give --json or --draw, not both"),  # (--json was ignored)
        (["ring", "--svg", "r.svg", "--json"], "give --json or --svg, not both"),
    ],
)
def test_put_and_get_mistakes_are_one_line(node: NodeProcess, args: list[str], error: str) -> None:
    result = udpdht(*args, "--node", node.addr_text)
    assert result.returncode == 2
    assert error in result.stderr and result.stderr.count("\n") == 1


def test_a_map_whose_keys_collide_is_refused_and_not_stored(node: NodeProcess) -> None:
    result = udpdht(
        "put", "mm", '{"$map": [[1, "one"], [true, 2]]}', "--json", "--node", node.addr_text
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        'udpdht: error: VALUE: "$map": keys 1 and true would be one key (1, true and 1.0 are '
        "equal keys here); give each key once\n"
    )
    assert run(node, "get", "mm").returncode == 1  # nothing was stored
    ok(run(node, "put", "mm", '{"$map": [[1, "one"], [2, "two"]]}', "--json"))
    assert ok(run(node, "get", "mm")) == b'(map) {"$map": [[1, "one"], [2, "two"]]}\n'


def test_get_meta_shows_version_writer_and_ttl(node: NodeProcess) -> None:
    ok(run(node, "put", "temp", "v1", "--ttl", "300"))
    ok(run(node, "put", "temp", "v2", "--ttl", "300"))
    text = ok(run(node, "get", "temp", "--meta")).decode()
    assert text.startswith("v2\ntype     str\nversion  ")
    writer = node_hex(node)
    assert f"writer   {writer}" in text and "expires  in 4 min" in text
    meta = json.loads(ok(run(node, "get", "temp", "--meta", "--json")))
    assert meta["value"] == "v2" and meta["type"] == "str"
    assert meta["version"]["writer"] == writer
    assert 290 < meta["ttl_left_s"] <= 300
    # Both times read alike (a new user's trial: epoch seconds beside ISO 8601).
    written = datetime.fromisoformat(meta["written"].replace("Z", "+00:00")).timestamp()
    expires = datetime.fromisoformat(meta["expires"].replace("Z", "+00:00")).timestamp()
    assert expires - written == pytest.approx(300, abs=0.01)
    ok(run(node, "put", "forever", "1", "--json"))
    meta = json.loads(ok(run(node, "get", "forever", "--meta", "--json")))
    assert meta["expires"] is None and meta["ttl_left_s"] is None and meta["type"] == "int"
    raw = run(node, "get", "temp", "--raw", "--meta")
    assert raw.stdout == b"v2" and b"writer" in raw.stderr


def node_hex(node: NodeProcess) -> str:
    return f"{node.id:040x}"
