"""An event's row read straight from its Avro bytes is the row of its decoded datum.

The sink builds most rows with a function compiled per schema that reads the record's
fields into locals (sinks.rows.event_row_reader); ``event_row`` over the datum fastavro
decodes is the reference. Datums are drawn from every catalogue schema."""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import pytest
from fastavro import parse_schema
from hypothesis import HealthCheck, given, settings

from schemas.codec import decode as fastavro_decode
from schemas.codec import encode
from sinks.routes import event_route
from sinks.rows import UuidsAsText, event_row, event_row_reader
from tests.test_avro_reader import CATALOG, REGISTRY, datums, same
from tests.test_sink_redelivery import lesson_datum

TEXT_UUIDS = UuidsAsText(REGISTRY)
ROUTE = event_route(CATALOG, TEXT_UUIDS)


def row_from_bytes(data: bytes, offset: int = 7) -> list[Any]:
    _, row = ROUTE.to_row(SimpleNamespace(value=data, offset=offset), "events.clean", 3)
    return row


def reference_row(data: bytes, offset: int = 7) -> list[Any]:
    return event_row(CATALOG, fastavro_decode(TEXT_UUIDS, data), "events.clean", 3, offset)


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_rows_read_from_bytes_are_the_rows_of_the_decoded_datum(name: str) -> None:
    event_type = CATALOG[name]
    schema_id = REGISTRY.id_for(event_type.subject, event_type.schema)
    assert event_row_reader(CATALOG, TEXT_UUIDS.parsed_by_id(schema_id)) is not None

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(datums(event_type.parsed, dict(event_type.parsed.get("__named_schemas", {}))))
    def check(datum: Any) -> None:
        data = encode(schema_id, event_type.parsed, datum)
        try:
            expected = reference_row(data)
        except ValueError:  # an event_id that is no UUID: refused both ways
            with pytest.raises(ValueError):
                row_from_bytes(data)
            return
        assert same(row_from_bytes(data), expected)

    check()


def test_a_truncated_record_is_refused() -> None:
    lesson = CATALOG["lesson_completed"]
    data = encode(REGISTRY.id_for(lesson.subject, lesson.schema), lesson.parsed, lesson_datum(3))
    assert row_from_bytes(data) == reference_row(data)
    for cut in (6, 20, len(data) - 1):
        with pytest.raises((EOFError, IndexError, ValueError, struct.error)):
            row_from_bytes(data[:cut])


def test_schemas_without_an_event_or_left_to_fastavro_have_no_reader() -> None:
    no_event_id = parse_schema(
        {
            "type": "record",
            "name": "NoId",
            "fields": [
                {"name": "event_type", "type": "string"},
                {"name": "timestamp", "type": "long"},
            ],
        }
    )
    fixed_id = parse_schema(
        {
            "type": "record",
            "name": "FixedId",
            "fields": [
                {"name": "event_id", "type": {"type": "fixed", "name": "F", "size": 16}},
                {"name": "event_type", "type": "string"},
                {"name": "timestamp", "type": "long"},
            ],
        }
    )
    assert event_row_reader(CATALOG, no_event_id) is None
    assert event_row_reader(CATALOG, fixed_id) is None
    assert event_row_reader(CATALOG, parse_schema("string")) is None
