"""Values as people and scripts see them: text for the terminal, JSON that round-trips.

A stored value is one msgpack value: str, bytes, int, float, bool, None, list or map. The CLI
(``udpdht get`` / ``put``) and the shell show and read values through this module only, so
they agree.

**Text** (:func:`show`, ``udpdht get KEY``, the shell's ``get``): a string prints as it is;
any other type prints as ``(TYPE) JSON``, e.g. ``(int) 42``, ``(bytes) aGk=`` (base64),
``(list) [1, "a"]``, ``(nil) null``. So ``"42"`` (a string) and ``42`` (an int) never look the
same, and the common case, a string, stays plain for scripts.

**JSON** (:func:`to_json` / :func:`from_json`, ``--json``): every msgpack value has exactly one
JSON form, and reading it back gives the same value. Plain JSON maps to itself; what JSON lacks
is spelt as a one-key object:

* bytes: ``{"$bytes": "<base64>"}`` (standard alphabet, with padding);
* a map whose keys are not all strings (msgpack allows int keys, say):
  ``{"$map": [[key, value], ...]}``; a string-keyed map that would read as one of these forms
  (its only key is ``$bytes``, ``$map`` or ``$float``) is written that way too;
* a float that is not finite: ``{"$float": "NaN"}``, ``"Infinity"`` or ``"-Infinity"``.

A JSON float keeps its point (``1.0`` stays a float, ``1`` is an int). An integer outside
msgpack's range (-2^63 .. 2^64 - 1) is refused.

This module loads nothing heavy (no msgpack): ``udpdht --help`` stays quick.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .text import printable

#: msgpack's integer range.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

_SPECIAL = ("$bytes", "$map", "$float")
_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class ValueFormatError(ValueError):
    """A value that cannot be read or written in the form asked for (one line for the user)."""


def type_name(value: Any) -> str:
    """The msgpack type of a value, as :func:`show` names it."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


def _check_int(value: int) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise ValueFormatError(
            f"integer {_short(str(value))} is outside msgpack's range (-2^63 .. 2^64-1); "
            "store it as a string"
        )
    return value


def _check_str(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ascii(text[exc.start])
        raise ValueFormatError(f"a string holds {bad}, a lone surrogate: not UTF-8") from None
    return text


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def to_plain(value: Any) -> Any:
    """A value as plain JSON data (dicts with str keys, lists, str, numbers, bool, None)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return _check_int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {
            "$float": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        }
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        plain_keys = all(isinstance(k, str) for k in value)
        if plain_keys and not (len(value) == 1 and next(iter(value)) in _SPECIAL):
            return {k: to_plain(v) for k, v in value.items()}
        return {"$map": [[to_plain(k), to_plain(v)] for k, v in value.items()]}
    raise ValueFormatError(f"a {type(value).__name__} is not a msgpack value")


def from_plain(data: Any) -> Any:
    """The inverse of :func:`to_plain`: JSON data (as ``json.loads`` gives it) to a value."""
    if data is None or isinstance(data, (bool, float)):
        return data
    if isinstance(data, str):
        return _check_str(data)
    if isinstance(data, int):
        return _check_int(data)
    if isinstance(data, list):
        return [from_plain(v) for v in data]
    if isinstance(data, dict):
        if len(data) == 1:
            ((tag, inner),) = data.items()
            if tag in _SPECIAL:
                return _special(tag, inner)
        return {_check_str(k): from_plain(v) for k, v in data.items()}
    raise ValueFormatError(f"a {type(data).__name__} is not JSON data")


def _special(tag: str, inner: Any) -> Any:
    if tag == "$bytes":
        if not isinstance(inner, str):
            raise ValueFormatError('"$bytes" needs a base64 string')
        try:
            return base64.b64decode(inner, validate=True)
        except (binascii.Error, ValueError):
            raise ValueFormatError(f'"$bytes": not base64: {_short(inner)!r}') from None
    if tag == "$float":
        if inner not in _FLOATS:
            raise ValueFormatError('"$float" is one of "NaN", "Infinity", "-Infinity"')
        return _FLOATS[inner]
    # "$map": a list of [key, value] pairs
    if not isinstance(inner, list) or not all(
        isinstance(pair, list) and len(pair) == 2 for pair in inner
    ):
        raise ValueFormatError('"$map" needs a list of [key, value] pairs')
    out: dict[Any, Any] = {}
    written: dict[Any, Any] = {}  # each key of out as the input wrote it
    for k, v in inner:
        key = from_plain(k)
        if isinstance(key, (list, dict)):
            raise ValueFormatError('"$map": a key cannot be a list or a map')
        if key in out:  # 1, true and 1.0 are one key to Python: a value would be lost
            first, again = _key_text(written[key]), _key_text(k)
            same = f"key {first} is given twice" if first == again else f"keys {first} and {again}"
            raise ValueFormatError(
                f'"$map": {same} would be one key (1, true and 1.0 are equal keys here); '
                "give each key once"
            )
        written[key] = k
        out[key] = from_plain(v)
    return out


def _key_text(plain: Any) -> str:
    return _short(json.dumps(plain, ensure_ascii=False))


def to_json(value: Any, *, indent: int | None = None) -> str:
    """A value as one JSON text (the ``--json`` form)."""
    return json.dumps(to_plain(value), ensure_ascii=False, allow_nan=False, indent=indent)


def _no_constant(name: str) -> Any:
    raise ValueFormatError(f'{name} is not JSON; write {{"$float": "{name}"}}')


def from_json(text: str | bytes) -> Any:
    """A value from its JSON text (the ``--json`` form); ValueFormatError for bad input."""
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ValueFormatError(f"not valid JSON: {exc.msg} at {where}") from None
    except UnicodeDecodeError:
        raise ValueFormatError("not valid JSON: the input is not UTF-8 text") from None
    except RecursionError:
        raise ValueFormatError("not valid JSON: nested too deeply") from None
    return from_plain(data)


def show(value: Any) -> str:
    """A value for the terminal: a string as it is, anything else as ``(TYPE) JSON``.

    Bytes show as ``(bytes) BASE64`` (the same base64 as ``{"$bytes": ...}`` in JSON).
    """
    if isinstance(value, str):
        return printable(value)  # (its control characters as \xNN: --raw gives them as they are)
    kind = type_name(value)
    if kind == "bytes":
        return f"(bytes) {base64.b64encode(bytes(value)).decode('ascii')}"
    if kind == "float" and not math.isfinite(value):  # (its JSON form is for --json)
        return f"(float) {to_plain(value)['$float']}"
    return f"({kind}) {to_json(value)}"


def raw(value: Any) -> bytes:
    """A value's bytes as ``get --raw`` writes them: bytes as they are, a string as UTF-8."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ValueFormatError(
        f"the value is {_article(type_name(value))}; --raw writes only bytes and strings "
        "(use --json)"
    )


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


@dataclass(frozen=True)
class StoredValue:
    """A value with its record's metadata, as ``Client.get_record`` returns it.

    ``stamp``: the version's hybrid-clock stamp (milliseconds since the Unix epoch, as the
    primary that took the write saw them); ``writer``: that primary's id (40 hex digits);
    ``expires``: absolute expiry in Unix seconds, None for never.
    """

    value: Any
    stamp: int
    writer: str
    expires: float | None

    @property
    def written_at(self) -> float:
        """When the write was stamped, in Unix seconds (by the primary's clock)."""
        return self.stamp / 1000.0

    def ttl_left(self, now: float | None = None) -> float | None:
        """Seconds until the value expires (by this machine's clock); None: it never does."""
        if self.expires is None:
            return None
        return max(0.0, self.expires - (time.time() if now is None else now))

    def meta(self, now: float | None = None) -> dict[str, Any]:
        """The metadata as JSON data (``get --meta --json``): times as ISO 8601 in UTC, as a
        person reads them (the version's stamp as it is: milliseconds since the epoch)."""
        return {
            "type": type_name(self.value),
            "version": {"stamp": self.stamp, "writer": self.writer},
            "written": _iso(self.written_at),
            "expires": None if self.expires is None else _iso(self.expires),
            "ttl_left_s": self.ttl_left(now),
        }


def _iso(when: float) -> str:
    """``2026-12-02T06:20:00.123Z``."""
    stamp = datetime.fromtimestamp(when, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def show_meta(stored: StoredValue, now: float | None = None) -> str:
    """The metadata for the terminal, one ``name  value`` line each (``get --meta``)."""
    left = stored.ttl_left(now)
    expiry = "never"
    if left is not None:
        expiry = f"in {span(left)} (at {_iso(stored.expires or 0.0)})"
    return "\n".join(
        [
            f"type     {type_name(stored.value)}",
            f"version  {stored.stamp} (written {_iso(stored.written_at)})",
            f"writer   {stored.writer}",
            f"expires  {expiry}",
        ]
    )


def span(seconds: float, *, tenths: bool = True) -> str:
    """``42.0 s`` (``42 s`` without ``tenths``), ``3 min 05 s``, ``2 h 10 min``, ``5 d 03 h``;
    ``? s`` for what no clock says (negative, infinite, NaN: a status a stranger sent)."""
    if not 0 <= seconds < 1e12:  # (NaN compares false)
        return "? s"
    if seconds < 60:
        return f"{seconds:.1f} s" if tenths else f"{int(seconds)} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
    return f"{whole // 86400} d {whole % 86400 // 3600:02d} h"
