"""Avro binary in the Confluent framing: magic byte 0, 4-byte big-endian schema id, payload."""

from __future__ import annotations

import io
import struct
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from schemas.registry import SchemaRegistry

MAGIC = 0
_HEADER = struct.Struct(">bI")


class FramingError(ValueError):
    pass


def encode(schema_id: int, parsed_schema: Any, datum: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    buffer.write(_HEADER.pack(MAGIC, schema_id))
    schemaless_writer(buffer, parsed_schema, datum)
    return buffer.getvalue()


def schema_id_of(data: bytes) -> int:
    if len(data) < _HEADER.size:
        raise FramingError(f"message of {len(data)} bytes is shorter than the framing header")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FramingError(f"unknown magic byte {magic}")
    return int(schema_id)


def decode(registry: SchemaRegistry, data: bytes) -> dict[str, Any]:
    parsed = registry.parsed_by_id(schema_id_of(data))
    datum = schemaless_reader(io.BytesIO(data[_HEADER.size :]), parsed, None)
    if not isinstance(datum, dict):
        raise FramingError("payload is not an Avro record")
    return datum
