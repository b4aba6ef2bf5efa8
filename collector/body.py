"""Reading a request body into JSON, refusing what no stage can take, with a reason.

Every refusal here is the request's own fault, so it is a 4xx naming ``(body)``:
- the size is enforced while reading (Content-Length first, then the stream is cut at
  the limit), so a 300 MB body costs at most the limit in memory;
- ``Content-Encoding: gzip`` is taken (SDKs send it), with the limit applied to the
  decompressed size, since that is what is held and parsed;
- only JSON media types and only UTF-8;
- per event (``shape_problem``): no lone surrogates from ``\\u`` escapes, no duplicate
  keys, and a nesting depth far above any event's but far below the parser's recursion
  limit.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from learnstream.refusal import Refusal

MAX_JSON_DEPTH = 32
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class BodyError(Refusal):
    """Why a body was refused; ``raw`` is what was read of it, for the dead letter."""

    def __init__(self, status: int, reason: str, message: str, raw: bytes = b"") -> None:
        super().__init__(status, message)
        self.reason = reason  # the metrics label
        self.raw = raw


def _too_large(limit: int, raw: bytes, what: str = "body") -> BodyError:
    return BodyError(413, "too_large", f"{what} is larger than {limit} bytes", raw)


def check_media_type(content_type: str | None) -> None:
    """application/json, or a structured ``+json`` type (application/vnd.x+json)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    shown = media or "no Content-Type"
    raise BodyError(415, "unsupported_media_type", f"must be application/json, not {shown}")


def is_gzipped(content_encoding: str | None) -> bool:
    """True for gzip; identity (or none) is False; anything else is refused."""
    coding = (content_encoding or "identity").strip().lower()
    if coding in ("identity", ""):
        return False
    if coding in ("gzip", "x-gzip"):
        return True
    raise BodyError(
        415, "unsupported_media_type", f"Content-Encoding {coding!r} is not supported; use gzip"
    )


async def read_limited(
    chunks: AsyncIterator[bytes], content_length: str | None, limit: int
) -> bytes:
    """The whole body as sent, or a BodyError as soon as it passes ``limit``."""
    declared = (content_length or "").strip()
    if declared.isdigit() and int(declared) > limit:  # refused before a byte is read
        raise _too_large(limit, b"")
    received = bytearray()
    async for chunk in chunks:
        received += chunk
        if len(received) > limit:
            raise _too_large(limit, bytes(received[:limit]))
    return bytes(received)


def gunzip_limited(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BodyError(400, "malformed_json", f"is not valid gzip: {exc}", body) from None
    if len(inflated) > limit:
        raise _too_large(limit, inflated[:limit], "decompressed body")
    if not inflater.eof:
        raise BodyError(400, "malformed_json", "gzip stream is truncated", body)
    return inflated


@dataclass(frozen=True)
class JsonBody:
    """A request body read and parsed: its value, the bytes it came from, and whether
    its strings need the Unicode check (see ``may_hold_surrogates``)."""

    value: Any
    raw: bytes
    check_text: bool
    sound: bool = False  # no value in it can have a shape problem (see parse_json_sound)

    @functools.cached_property
    def text(self) -> str:
        """The body as text, for a dead letter: decoded only when something is refused."""
        return self.raw.decode("utf-8", errors="replace")


class _Object(dict[str, Any]):
    """A JSON object that remembers a key it was given twice (which one should win is a
    guess), so the event holding it is refused rather than the whole body."""

    duplicate: str | None = None


def _object_noting_duplicates(pairs: list[tuple[str, Any]]) -> _Object:
    made = _Object(pairs)
    if len(made) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                made.duplicate = name
                break
            seen.add(name)
    return made


def _not_unicode(text: str) -> bool:
    """JSON's \\ud800 escapes decode to lone surrogates, which no UTF-8 encoder (Avro,
    Kafka, ClickHouse) takes."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_NOT_UNICODE = "holds a string that is not valid Unicode (a lone surrogate escape)"
# the only way JSON text that is UTF-8 can carry a lone surrogate: a \\uD800-\\uDFFF escape
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def may_hold_surrogates(body: bytes) -> bool:
    """Whether strings parsed from ``body`` need the Unicode check: one search of the
    bytes, instead of a look at every string of every event."""
    return _SURROGATE_ESCAPE.search(body) is not None


def shape_problem(
    value: Any, depth_limit: int = MAX_JSON_DEPTH, check_text: bool = True
) -> str | None:
    """Why a parsed JSON value cannot go further: nested too deep, a key given twice, or
    (with ``check_text``) a string that is not Unicode. Checked per event, so one such
    event in a batch is refused alone. Only containers are visited unless text is
    checked: an event has a handful of them and hundreds of leaves."""
    if not isinstance(value, dict | list):
        return (
            _NOT_UNICODE if check_text and isinstance(value, str) and _not_unicode(value) else None
        )
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > depth_limit:
            return f"is nested more than {depth_limit} levels deep"
        children: Any = item
        if isinstance(item, dict):
            if (name := getattr(item, "duplicate", None)) is not None:
                shown = name if len(name) <= 64 else f"{name[:64]}…"
                return f"has the key {shown!r} more than once in one object"
            if check_text and any(_not_unicode(key) for key in item):
                return _NOT_UNICODE
            children = item.values()
        for child in children:
            if isinstance(child, dict | list):
                pending.append((child, depth + 1))
            elif check_text and isinstance(child, str) and _not_unicode(child):
                return _NOT_UNICODE
    return None


# Whitespace between a key and its colon: the key count below needs every key to end in '":'
_SPACED_COLON = re.compile(rb'"[ \t\r\n]+:')
_INT64_LIMIT = float(2**63)


def _keys_and_depth(value: Any) -> tuple[int, int] | None:
    """How many keys the objects in a value parsed by orjson hold, all levels together,
    and how deep its containers nest; None if a float is at least 2**63 in size: orjson
    reads an integer beyond 64 bits as a float, where the standard parser keeps it whole
    (and validation says it is too big). Level by level, with exact type checks (orjson
    makes plain dicts and lists): 2.6x quicker than a stack of (value, depth) pairs."""
    count = depth = 0
    level: list[Any] = [[value]]  # in a list: a bare number is checked too
    while level:
        below: list[Any] = []
        for item in level:
            if type(item) is dict:
                count += len(item)
                item = item.values()
            for child in item:
                kind = type(child)
                if kind is dict or kind is list:
                    below.append(child)
                elif kind is float and not -_INT64_LIMIT < child < _INT64_LIMIT:
                    return None
        if below:
            depth += 1
        level = below
    return count, depth


def _fast_parse(body: bytes) -> tuple[Any, bool] | None:
    """The body parsed by orjson (several times faster) and whether its values need no
    ``shape_problem`` check, or None when the standard parser must decide: for a
    backslash (an escaped quote would upset the key count, and orjson refuses the whole
    body for a surrogate escape, where the door refuses just its event), anything orjson
    refuses (NaN, which the standard parser takes), and a key given twice. orjson keeps
    the last of those, where the door refuses the event; with no escaped quote and no
    space before a colon, every key ends in '":' and every other '":' is inside a
    string, so as many '":' as parsed keys means no key came twice. With no key twice,
    no escape and nothing nested too deep, no event in the body has a shape problem."""
    if b"\\" in body or _SPACED_COLON.search(body) is not None:
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    shape = _keys_and_depth(value)
    if shape is None or shape[0] != body.count(b'":'):
        return None
    return value, shape[1] <= MAX_JSON_DEPTH


def parse_json(body: bytes) -> Any:
    """The body as JSON, or a 400. Its shape is judged per event (``shape_problem``)."""
    return parse_json_sound(body)[0]


def parse_json_sound(body: bytes) -> tuple[Any, bool]:
    """The body as JSON, or a 400; and True when no value in it can have a shape problem
    (so ``shape_problem`` may be skipped), False when each event must be checked."""
    fast = _fast_parse(body)
    if fast is not None:
        return fast
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"is not UTF-8: {exc.reason} at byte {exc.start}"
        raise BodyError(400, "malformed_json", message) from None
    try:
        return json.loads(text, object_pairs_hook=_object_noting_duplicates), False
    except RecursionError:  # far deeper than any event: the parser itself gives up
        raise BodyError(
            400, "malformed_json", f"is nested more than {MAX_JSON_DEPTH} levels deep"
        ) from None
    except ValueError as exc:  # JSONDecodeError, a 5000-digit integer
        raise BodyError(400, "malformed_json", f"is not valid JSON: {exc}") from None
