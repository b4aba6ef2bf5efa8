"""Reading request bodies: any bytes are parsed or refused with a reason, never raise."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.body import (
    MAX_JSON_DEPTH,
    BodyError,
    check_media_type,
    gunzip_limited,
    is_gzipped,
    may_hold_surrogates,
    parse_json,
    read_limited,
    shape_problem,
)
from tests.strategies import JSON_VALUES


@given(st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_are_json_or_a_400_with_a_reason(body: bytes) -> None:
    try:
        parse_json(body)
    except BodyError as refused:
        assert refused.status == 400 and refused.message


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 10_000, 200_000])
def test_deep_nesting_is_refused_whatever_the_depth(depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    try:
        parsed = parse_json(body)
    except BodyError as refused:  # deeper than the parser goes: the whole body
        assert "nested more than" in refused.message
    else:  # within the parser's reach: the event that holds it
        assert "nested more than" in (shape_problem(parsed) or "")
    shallow = parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert shape_problem(shallow) is None


def test_duplicate_keys_and_lone_surrogates_are_the_events_problem() -> None:
    assert "'a' more than once" in (shape_problem(parse_json(b'{"x": {"a": 1, "a": 2}}')) or "")
    assert "not valid Unicode" in (shape_problem(parse_json(b'{"x": ["\\ud800"]}')) or "")
    assert "not valid Unicode" in (shape_problem(parse_json(b'{"\\udc00": 1}')) or "")
    assert shape_problem(parse_json('{"x": "字 \\u00e9"}'.encode())) is None


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/x+json"]
)
def test_json_media_types_are_taken(content_type: str) -> None:
    check_media_type(content_type)


@pytest.mark.parametrize("content_type", [None, "", "text/notjson", "text/plain", "json"])
def test_other_media_types_are_415(content_type: str | None) -> None:
    with pytest.raises(BodyError) as refused:
        check_media_type(content_type)
    assert refused.value.status == 415


def test_only_gzip_and_identity_encodings() -> None:
    assert is_gzipped("gzip") and not is_gzipped(None) and not is_gzipped("identity")
    with pytest.raises(BodyError) as refused:
        is_gzipped("br")
    assert refused.value.status == 415


def test_the_limit_applies_to_the_decompressed_size() -> None:
    assert gunzip_limited(gzip.compress(b"x" * 100), 100) == b"x" * 100
    with pytest.raises(BodyError, match="decompressed body is larger than 100") as refused:
        gunzip_limited(gzip.compress(b"x" * 10_000_000), 100)
    assert refused.value.status == 413
    with pytest.raises(BodyError, match="not valid gzip"):
        gunzip_limited(b"not gzip", 100)
    with pytest.raises(BodyError, match="truncated"):
        gunzip_limited(gzip.compress(b"x" * 1000)[:20], 10_000)


async def _chunks(count: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b" " * size


def test_a_body_is_cut_at_the_limit_while_reading() -> None:
    assert asyncio.run(read_limited(_chunks(3, 10), None, 30)) == b" " * 30
    with pytest.raises(BodyError) as refused:
        asyncio.run(read_limited(_chunks(10**6, 10), None, 95))
    assert refused.value.status == 413 and len(refused.value.raw) == 95
    with pytest.raises(BodyError, match="larger than 10 bytes"):  # refused unread
        asyncio.run(read_limited(_chunks(0, 0), "300000000", 10))


@given(st.text(max_size=30))
def test_the_unicode_check_is_skipped_only_for_bodies_that_cannot_need_it(text: str) -> None:
    """Lone surrogates reach a parsed string only through a \\uD800-\\uDFFF escape, so a
    body without one needs no look at its strings."""
    body = json.dumps({"x": [text]}).encode()  # ensure_ascii: every non-ASCII escaped
    value = parse_json(body)
    if not may_hold_surrogates(body):
        assert shape_problem(value, check_text=True) is None
    assert may_hold_surrogates(b'{"x": "\\ud800"}') and may_hold_surrogates(b'{"x": "\\uDFFF"}')
    assert not may_hold_surrogates('{"x": "\\u00e9 字"}'.encode())
