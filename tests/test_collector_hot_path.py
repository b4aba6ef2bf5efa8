"""The collector's fast paths give exactly what the reference implementations give.

- ``parse_json`` takes orjson when it can: the value must equal the standard parser's,
  a key given twice must still be noticed (orjson alone keeps the last one), and a body
  it calls sound must have no shape problem anywhere.
- ``truncate_ip`` reads dotted quads by hand: it must agree with the ipaddress module.
- ``encode`` writes with a compiled writer: the bytes must equal fastavro's, for every
  event type, for enriched events of the seeds' mix, and for data it leaves to fastavro.
"""

from __future__ import annotations

import io
import ipaddress
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import realistic
from collector.body import (
    MAX_JSON_DEPTH,
    BodyError,
    parse_json,
    parse_json_sound,
    shape_problem,
)
from collector.enrichment import EnrichmentPolicy, Sender, enrich, truncate_ip
from schemas.catalog import default_catalog
from schemas.codec import decode, encode
from schemas.examples import example_event
from schemas.registry import FileSchemaRegistry
from schemas.validation import Accepted, validate_event
from tests.strategies import JSON_VALUES

CATALOG = default_catalog()
REGISTRY = FileSchemaRegistry.from_files(CATALOG)
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36"
)


def _standard(body: bytes) -> tuple[str, Any]:
    """What the standard parser makes of a body, compared by value and by problem."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "refused", None
    return "parsed", value


def _same_value(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON types all the way down (1 is not 1.0 here)."""
    if type(a) is not type(b) and not (isinstance(a, dict) and isinstance(b, dict)):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) or (a != a and b != b)  # NaN equals NaN here


LAYOUTS = [
    {},  # json.dumps's own: ", " and ": "
    {"separators": (",", ":")},  # what SDKs send
    {"separators": (",", ":"), "ensure_ascii": False},
    {"indent": 2},
    {"separators": (",", " : ")},  # a space before the colon
]


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.sampled_from(LAYOUTS))
def test_the_fast_parser_reads_what_the_standard_one_reads(value: Any, layout: Any) -> None:
    body = json.dumps(value, **layout).encode("utf-8", errors="surrogatepass")
    outcome, expected = _standard(body)
    if outcome == "refused":
        with pytest.raises(BodyError):
            parse_json(body)
        return
    value, sound = parse_json_sound(body)
    assert _same_value(value, expected)
    if sound:  # the claim that lets the collector skip the per-event shape check
        assert shape_problem(value) is None


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1])
def test_a_body_nested_too_deep_is_not_called_sound(depth: int) -> None:
    value, sound = parse_json_sound(b'{"a":' * depth + b"1" + b"}" * depth)
    assert sound == (shape_problem(value) is None) == (depth <= MAX_JSON_DEPTH)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":1,"a":2}',
        b'{"a":1,"b":{"c":1,"c":1}}',
        b'{"a" :1,"a":2}',
        b'{"a"\n:1,"a":2}',
        b'[{"x":"\\":","x":1}]',
        b'{"a":":","a":2}',  # a value that starts with a colon adds a '":' of its own
        b'{"a\\u0062":1,"ab":2}',  # one key spelt with an escape
    ],
)
def test_a_key_given_twice_is_still_noticed(body: bytes) -> None:
    assert "more than once" in (shape_problem(parse_json(body)) or "")


@pytest.mark.parametrize(
    "body",
    [
        b'{"n":18446744073709551616}',  # past 64 bits: a whole integer, not a float
        b"-9223372036854775809",
        b'{"n":NaN,"m":-Infinity}',  # the standard parser takes these; validation refuses
        b'{"s":"\\ud800"}',  # a lone surrogate: the event's problem, not the body's
        b'{"url":"http://x.example/a\\"b","k":":v"}',
        b'{"a":1.0,"b":1,"c":-0.0,"d":1e2,"e":0.1}',
    ],
)
def test_what_orjson_reads_differently_goes_to_the_standard_parser(body: bytes) -> None:
    outcome, expected = _standard(body)
    assert outcome == "parsed"
    assert _same_value(parse_json(body), expected)


def _fastavro(schema_id: int, parsed: Any, datum: Any) -> bytes:
    buffer = io.BytesIO()
    buffer.write(b"\x00" + schema_id.to_bytes(4, "big"))
    schemaless_writer(buffer, parsed, datum)
    return buffer.getvalue()


def _accepted(events: list[dict[str, Any]]) -> list[tuple[int, Any, dict[str, Any]]]:
    sender = Sender(ip="203.0.113.9", user_agent=CHROME)
    policy = EnrichmentPolicy(ip_handling="truncate")
    made = []
    for event in events:
        outcome = validate_event(CATALOG, event, NOW)
        assert isinstance(outcome, Accepted), outcome
        kind = outcome.event_type
        datum = enrich(kind, outcome.datum, NOW, sender, policy)
        made.append((REGISTRY.id_for(kind.subject, kind.schema), kind.parsed, datum))
    return made


def test_the_compiled_writer_writes_fastavros_bytes_for_every_event_type() -> None:
    examples = [example_event(t, NOW - timedelta(hours=1)) for t in CATALOG.values()]
    mix = realistic.fresh(600, end=NOW - timedelta(minutes=5), days=2.0, seed=3)
    for schema_id, parsed, datum in _accepted(examples + mix):
        written = encode(schema_id, parsed, datum)
        assert written == _fastavro(schema_id, parsed, datum)
        assert str(decode(REGISTRY, written)["event_id"]) == datum["event_id"]


RECORD = parse_schema(
    {
        "type": "record",
        "name": "Probe",
        "fields": [
            {"name": "n", "type": ["null", "long"], "default": None},
            {"name": "x", "type": "double"},
            {"name": "i", "type": ["null", "int", "string"], "default": None},
            {"name": "m", "type": ["null", {"type": "map", "values": "string"}, "string"]},
            {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "d", "type": ["null", {"type": "int", "logicalType": "date"}]},
            {"name": "f", "type": ["float", "double"], "default": 0.0},
        ],
    }
)
BASE = {"n": 5, "x": 1.5, "i": 3, "m": {"k": "v"}, "t": NOW, "d": None, "f": 0.5}


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"n": None, "i": "three", "m": "{}", "x": 2},  # other branches, an int for a double
        {"n": 2**40, "t": 1_700_000_000_000, "f": 2},
        {"t": datetime(2026, 1, 1, 12, 30, 0, 999_999, tzinfo=UTC)},
        {"i": 2**40},  # too big for the int branch: fastavro says so
        {"n": True},  # a bool where fastavro decides
        {"d": datetime(2026, 1, 1).date()},  # a logical type the writer leaves to fastavro
        {"x": float("nan")},
        {"m": ("string", "{}")},  # fastavro's (branch, value) notation
    ],
)
def test_what_the_compiled_writer_leaves_to_fastavro_is_written_by_fastavro(
    change: dict[str, Any],
) -> None:
    datum = {**BASE, **change}
    try:
        expected = _fastavro(7, RECORD, datum)
    except (ValueError, TypeError, OverflowError) as refused:
        with pytest.raises(type(refused)):
            encode(7, RECORD, datum)
        return
    assert encode(7, RECORD, datum) == expected


def _truncated_by_ipaddress(text: str) -> str | None:
    """The reference: what the ipaddress module makes of an address."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False).network_address)


OCTETS = st.integers(0, 300).map(str) | st.sampled_from(["00", "010", "٣", "", " 1", "+1", "1_0"])


@given(st.lists(OCTETS, min_size=3, max_size=5).map(".".join) | st.ip_addresses().map(str))
def test_addresses_are_truncated_as_the_ipaddress_module_truncates_them(text: str) -> None:
    assert truncate_ip(text) == _truncated_by_ipaddress(text)
