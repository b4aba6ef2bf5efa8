"""Reading a request body into JSON, refusing what no stage can take, with a reason.

Every refusal here is the request's own fault, so it is a 4xx naming ``(body)``:
- the size is enforced while reading (Content-Length first, then the stream is cut at
  the limit), so a 300 MB body costs at most the limit in memory;
- ``Content-Encoding: gzip`` is taken (SDKs send it), with the limit applied to the
  decompressed size, since that is what is held and parsed;
- only JSON media types, only UTF-8, no duplicate keys (which one would win is a guess),
  and a nesting depth far above any event's but far below the parser's recursion limit.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

MAX_JSON_DEPTH = 32
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class BodyError(Exception):
    """Why a body was refused; ``raw`` is what was read of it, for the dead letter."""

    def __init__(self, status: int, reason: str, message: str, raw: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason  # the metrics label
        self.message = message
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


class _DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    made = dict(pairs)
    if len(made) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                shown = name if len(name) <= 64 else f"{name[:64]}…"
                raise _DuplicateKey(f"key {shown!r} appears more than once in one object")
            seen.add(name)
    return made


def _deeper_than(value: Any, limit: int) -> bool:
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item
        if not isinstance(item, dict | list):
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def parse_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"is not UTF-8: {exc.reason} at byte {exc.start}"
        raise BodyError(400, "malformed_json", message) from None
    try:
        payload = json.loads(text, object_pairs_hook=_object_without_duplicates)
    except RecursionError:
        raise BodyError(
            400, "malformed_json", f"is nested more than {MAX_JSON_DEPTH} levels deep"
        ) from None
    except ValueError as exc:  # JSONDecodeError, a duplicate key, a 5000-digit integer
        raise BodyError(400, "malformed_json", f"is not valid JSON: {exc}") from None
    if _deeper_than(payload, MAX_JSON_DEPTH):
        raise BodyError(400, "malformed_json", f"is nested more than {MAX_JSON_DEPTH} levels deep")
    return payload
