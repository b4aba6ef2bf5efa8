"""The compiled Avro reader reads what fastavro reads, from the same bytes.

Datums are drawn from each of the catalogue's schemas (and from a few schemas with the
shapes the catalogue does not use: maps, enums, bytes, floats, a recursive record),
written by fastavro and read back by both readers."""

from __future__ import annotations

import io
import math
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.catalog import default_catalog
from schemas.codec import decode as fastavro_decode
from schemas.codec import encode
from schemas.reader import compiled_reader, decode
from schemas.registry import FileSchemaRegistry
from sinks.rows import UuidsAsText
from tests.test_sink_redelivery import lesson_datum

CATALOG = default_catalog()
REGISTRY = FileSchemaRegistry.from_files(CATALOG)
LONGS = st.integers(-(2**63), 2**63 - 1)
# fastavro writes a datetime as its milliseconds; drawn on whole milliseconds, in range
MOMENTS = st.integers(-62135596800000, 253402300799999).map(
    lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
)


def datums(schema: Any, named: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Any value fastavro can write for a parsed schema (arrays empty past a depth of
    three, so a recursive record ends)."""
    if isinstance(schema, list):
        return st.one_of([datums(branch, named, depth) for branch in schema])
    if isinstance(schema, str):
        if schema in named:
            return datums(named[schema], named, depth)
        schema = {"type": schema}
    kind, logical = schema["type"], schema.get("logicalType")
    if isinstance(kind, dict | list):
        return datums(kind, named, depth)
    if (kind, logical) == ("long", "timestamp-millis"):
        return MOMENTS
    if (kind, logical) == ("string", "uuid"):
        return st.uuids().map(str)
    simple: dict[str, st.SearchStrategy[Any]] = {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": LONGS,
        "float": st.floats(width=32, allow_nan=False),
        "double": st.floats(allow_nan=False),
        "string": st.text(max_size=20),
        "bytes": st.binary(max_size=20),
    }
    if kind in simple:
        return simple[kind]
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        if depth >= 3:
            return st.just([])
        return st.lists(datums(schema["items"], named, depth + 1), max_size=4)
    if kind == "map":
        values = datums(schema["values"], named, depth + 1)
        return st.dictionaries(st.text(max_size=8), values, max_size=4)
    assert kind == "record", kind
    return st.fixed_dictionaries(
        {field["name"]: datums(field["type"], named, depth) for field in schema["fields"]}
    )


def same(left: Any, right: Any) -> bool:
    """Equal, and of the same types all the way down (True is not 1, 1.0 is not 1)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return list(left) == list(right) and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, float):
        return left == right and math.copysign(1, left) == math.copysign(1, right)
    return bool(left == right)


def both_read(parsed: Any, data: bytes) -> tuple[Any, Any]:
    reader = compiled_reader(parsed)
    assert reader is not None
    return reader(data, 0), schemaless_reader(io.BytesIO(data), parsed, None)


EXTRA_SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "record",
        "name": "Shapes",
        "fields": [
            {"name": "flag", "type": "boolean"},
            {"name": "ratio", "type": "float"},
            {"name": "blob", "type": "bytes"},
            {"name": "tags", "type": {"type": "map", "values": ["null", "long", "string"]}},
            {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["R", "G"]}},
            {"name": "again", "type": ["null", "Colour"]},
            {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        ],
    },
    {
        "type": "record",
        "name": "Tree",
        "fields": [
            {"name": "label", "type": "string"},
            {"name": "children", "type": {"type": "array", "items": "Tree"}},
        ],
    },
]
SCHEMAS: dict[str, Any] = {
    **{
        f"{t.name} (uuid as text)": UuidsAsText(REGISTRY).parsed_by_id(
            REGISTRY.id_for(t.subject, t.schema)
        )
        for t in CATALOG.values()
    },
    **{t.name: t.parsed for t in CATALOG.values()},
    **{s["name"]: parse_schema(s) for s in EXTRA_SCHEMAS},
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_reads_what_fastavro_reads(name: str) -> None:
    parsed = SCHEMAS[name]
    named = dict(parsed.get("__named_schemas", {}))

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(datums(parsed, named))
    def check(datum: Any) -> None:
        out = io.BytesIO()
        schemaless_writer(out, parsed, datum)
        ours, theirs = both_read(parsed, out.getvalue())
        assert same(ours, theirs), (ours, theirs)

    check()


def test_blocks_with_byte_sizes_are_read() -> None:
    """Other writers (not fastavro's) may give a block's count negated, then its size."""
    parsed = parse_schema({"type": "array", "items": "long"})
    # two blocks: -2 items (size 2 bytes): 1, 2; then 1 item: 300; then the end
    data = bytes([0x03, 0x04, 0x02, 0x04, 0x02, 0xD8, 0x04, 0x00])
    ours, theirs = both_read(parsed, data)
    assert ours == theirs == [1, 2, 300]


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_framed_events_decode_as_with_fastavro(name: str) -> None:
    """``decode`` of the Confluent framing, as the sink calls it, against fastavro's."""
    event_type = CATALOG[name]
    schema_id = REGISTRY.id_for(event_type.subject, event_type.schema)

    @settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(datums(event_type.parsed, dict(event_type.parsed.get("__named_schemas", {}))))
    def check(datum: Any) -> None:
        data = encode(schema_id, event_type.parsed, datum)
        assert same(decode(REGISTRY, data), fastavro_decode(REGISTRY, data))

    check()


def test_other_schemas_are_left_to_fastavro() -> None:
    fixed = parse_schema({"type": "fixed", "name": "F", "size": 4})
    decimal = parse_schema({"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2})
    assert compiled_reader(fixed) is None
    assert compiled_reader(decimal) is None


def test_a_truncated_record_is_refused() -> None:
    lesson = CATALOG["lesson_completed"]
    data = encode(REGISTRY.id_for(lesson.subject, lesson.schema), lesson.parsed, lesson_datum(3))
    assert decode(REGISTRY, data) == fastavro_decode(REGISTRY, data)
    for cut in (6, 20, len(data) - 1):
        with pytest.raises((EOFError, IndexError, ValueError, struct.error)):
            decode(REGISTRY, data[:cut])


def test_a_negative_length_is_refused() -> None:
    """Corrupt bytes: a length of -2 would move the reader backwards."""
    for kind in ("string", "bytes"):
        reader = compiled_reader(parse_schema(kind))
        assert reader is not None
        with pytest.raises(EOFError):
            reader(b"\x03abc", 0)


def test_an_enum_index_out_of_range_is_refused() -> None:
    """Corrupt bytes: index -1 (zig-zag 0x01) must not read as the last symbol."""
    reader = compiled_reader(parse_schema({"type": "enum", "name": "E", "symbols": ["a", "b"]}))
    assert reader is not None
    assert reader(b"\x02", 0) == "b"
    for corrupt in (b"\x01", b"\x04"):
        with pytest.raises((ValueError, IndexError)):
            reader(corrupt, 0)


def test_a_union_index_in_a_longer_varint_is_read() -> None:
    """Branch 1 written as a two-byte varint (0x82 0x00) rather than 0x02: read alike;
    a varint of an index out of range (64) is refused by both."""
    parsed = parse_schema(["null", "long"])
    ours, theirs = both_read(parsed, bytes([0x82, 0x00, 0x04]))
    assert ours == theirs == 2
    reader = compiled_reader(parsed)
    assert reader is not None
    with pytest.raises(ValueError):
        reader(bytes([0x80, 0x01, 0x04]), 0)  # zig-zag 128: index 64
