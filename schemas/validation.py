"""Turn a JSON event into an Avro datum, or explain exactly why not.

The walk follows the raw composed schema, so every error names its field path
(``properties.score``, ``device_info.timezone``). Beyond Avro's structure it applies
the ``ls.*`` rules written next to fields in the ``.avsc`` files (ranges, lengths),
size limits on every string, map key, map and array (free-form maps included), the
per-type required ids, and the event-time rules that need the injected clock
(``schemas.event_time``: the device's clock corrected, then a range every stage takes).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.catalog import EventCatalog, EventType, Schema
from schemas.event_time import EventTime, event_time

DEFAULT_MAX_STRING = 4096
DEFAULT_MAX_ITEMS = 1000
MAX_MAP_KEY = 256
DEFAULT_CLOCK_SKEW_TOLERANCE = timedelta(seconds=5)
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_FLOAT32_MAX = 3.4028234663852886e38
_MISSING = object()


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


@dataclass(frozen=True)
class Accepted:
    event_type: EventType
    datum: dict[str, Any]


@dataclass(frozen=True)
class Rejected:
    errors: tuple[FieldError, ...]


class _Invalid(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.error = FieldError(path or "(event)", message)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _shown(value: object, most: int = 80) -> str:
    """A value as an error message quotes it: never the whole of a megabyte string."""
    text = repr(value)
    return text if len(text) <= most else f"{text[:most]}… ({len(text)} characters)"


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_timestamp(text: str) -> datetime:
    """ISO 8601 with an explicit offset (``Z`` or ``+hh:mm``), normalised to UTC."""
    if len(text) > 64:  # no ISO 8601 timestamp is longer; don't quote megabytes back
        raise ValueError(f"{_shown(text, 40)} is too long for a timestamp")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("timestamp needs a UTC offset, e.g. 2025-01-27T14:30:45.123Z")
    try:
        return to_millis(parsed.astimezone(UTC))
    except OverflowError:  # 0001-01-01T00:00:00-01:00 is before datetime.min in UTC
        raise ValueError(f"{text!r} is outside the representable range") from None


def to_millis(moment: datetime) -> datetime:
    """Event time has millisecond resolution everywhere (Avro timestamp-millis, ClickHouse
    DateTime64(3)); truncating at the edge keeps JSON and Avro readers in agreement."""
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


class _Converter:
    """Collects every error in the event rather than stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def field(self, spec: Schema, value: Any, path: str) -> Any:
        try:
            if spec.get("ls.coerce") == "string" and _is_integer(value):
                value = str(value)  # seed 000 sends numeric ids; ids are strings here
            datum = self.value(spec["type"], value, path)
            self._check_rules(spec, datum, path)
            return datum
        except _Invalid as invalid:
            self.errors.append(invalid.error)
            return None

    def value(self, schema: Any, value: Any, path: str) -> Any:
        if isinstance(schema, list):
            return self._union(schema, value, path)
        if isinstance(schema, str):
            return self._primitive(schema, value, path)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical == "timestamp-millis":
            return self._timestamp(value, path)
        if logical == "uuid":
            return self._uuid(value, path)
        if kind == "record":
            return self.record(schema, value, path)
        if kind == "enum":
            if value not in schema["symbols"]:
                raise _Invalid(path, f"must be one of {schema['symbols']}, got {_shown(value)}")
            return value
        if kind == "array":
            if not isinstance(value, list):
                raise _Invalid(path, f"must be an array, got {_type_name(value)}")
            if len(value) > DEFAULT_MAX_ITEMS:  # the field's own ls.maxItems may be lower
                raise _Invalid(path, f"has more than {DEFAULT_MAX_ITEMS} items")
            return [
                self.value(schema["items"], item, f"{path}[{i}]") for i, item in enumerate(value)
            ]
        if kind == "map":
            if not isinstance(value, dict):
                raise _Invalid(path, f"must be an object, got {_type_name(value)}")
            if len(value) > DEFAULT_MAX_ITEMS:
                raise _Invalid(path, f"has more than {DEFAULT_MAX_ITEMS} entries")
            for key in value:
                if len(key) > MAX_MAP_KEY:
                    message = f"key {_shown(key)} is longer than {MAX_MAP_KEY} characters"
                    raise _Invalid(path, message)
            return {k: self.value(schema["values"], v, f"{path}.{k}") for k, v in value.items()}
        return self._primitive(kind, value, path)

    def record(self, schema: Schema, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _Invalid(path, f"must be an object, got {_type_name(value)}")
        known = {f["name"] for f in schema["fields"]}
        for extra in sorted(set(value) - known):
            name = extra if len(extra) <= MAX_MAP_KEY else f"{extra[:MAX_MAP_KEY]}…"
            self.errors.append(FieldError(_join(path, name), "unknown field"))
        datum: dict[str, Any] = {}
        for spec in schema["fields"]:
            name, field_path = spec["name"], _join(path, spec["name"])
            raw = value.get(name, _MISSING)
            if spec.get("ls.server_owned"):
                if raw is not _MISSING:
                    self.errors.append(
                        FieldError(field_path, "is set by the server, not the client")
                    )
                datum[name] = spec.get("default")
                continue
            if raw is _MISSING:
                if "default" in spec:
                    datum[name] = spec["default"]
                    continue
                self.errors.append(FieldError(field_path, "is required"))
                continue
            datum[name] = self.field(spec, raw, field_path)
        return datum

    def _union(self, branches: list[Any], value: Any, path: str) -> Any:
        if value is None:
            if "null" in branches:
                return None
            raise _Invalid(path, "must not be null")
        non_null = [b for b in branches if b != "null"]
        if len(non_null) == 1:
            return self.value(non_null[0], value, path)
        for branch in non_null:  # first branch that takes the value wins
            probe = _Converter()
            try:
                datum = probe.value(branch, value, path)
            except _Invalid:
                continue
            if not probe.errors:
                return datum
        raise _Invalid(path, f"does not match any of the allowed types, got {_type_name(value)}")

    def _primitive(self, kind: str, value: Any, path: str) -> Any:
        if kind == "string":
            if not isinstance(value, str):
                raise _Invalid(path, f"must be a string, got {_type_name(value)}")
            # every string, also inside maps and arrays; a field's ls.maxLength may be lower
            if len(value) > DEFAULT_MAX_STRING:
                raise _Invalid(path, f"is longer than {DEFAULT_MAX_STRING} characters")
            return value
        if kind == "boolean":
            if not isinstance(value, bool):
                raise _Invalid(path, f"must be true or false, got {_type_name(value)}")
            return value
        if kind in ("int", "long"):
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise _Invalid(path, f"must be an integer, got {_type_name(value)}")
            low, high = _INT32 if kind == "int" else _INT64
            if not low <= value <= high:
                raise _Invalid(path, f"integer out of range [{low}, {high}]")
            return value
        if kind in ("float", "double"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _Invalid(path, f"must be a number, got {_type_name(value)}")
            try:  # JSON integers have no size limit: a 400-digit one overflows a double
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise _Invalid(path, "must be a finite number")
            if kind == "float" and abs(number) > _FLOAT32_MAX:
                raise _Invalid(path, f"is outside a 32-bit float's range (±{_FLOAT32_MAX:.4g})")
            return number
        if kind == "null":
            if value is not None:
                raise _Invalid(path, f"must be null, got {_type_name(value)}")
            return None
        raise _Invalid(path, f"schema type {kind!r} is not accepted from JSON")

    def _timestamp(self, value: Any, path: str) -> datetime:
        if not isinstance(value, str):
            raise _Invalid(path, f"must be an ISO 8601 string, got {_type_name(value)}")
        try:
            return parse_timestamp(value)
        except ValueError as exc:
            raise _Invalid(path, f"is not a valid ISO 8601 timestamp: {exc}") from None

    def _uuid(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise _Invalid(path, f"must be a UUID string, got {_type_name(value)}")
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise _Invalid(path, f"must be a UUID, got {_shown(value)}") from None

    def _check_rules(self, spec: Schema, datum: Any, path: str) -> None:
        if datum is None:
            return
        if isinstance(datum, list):
            most = spec.get("ls.maxItems", DEFAULT_MAX_ITEMS)
            if len(datum) > most:
                raise _Invalid(path, f"has more than {most} items")
        if "ls.enum" in spec and datum not in spec["ls.enum"]:
            raise _Invalid(path, f"must be one of {spec['ls.enum']}, got {_shown(datum)}")
        if isinstance(datum, str):
            longest = spec.get("ls.maxLength", DEFAULT_MAX_STRING)
            if len(datum) > longest:
                raise _Invalid(path, f"is longer than {longest} characters")
            shortest = spec.get("ls.minLength", 0)
            if len(datum) < shortest:
                raise _Invalid(path, f"is shorter than {shortest} characters")
        if isinstance(datum, int | float) and not isinstance(datum, bool):
            if "ls.minimum" in spec and datum < spec["ls.minimum"]:
                raise _Invalid(path, f"must be >= {spec['ls.minimum']}, got {datum}")
            if "ls.maximum" in spec and datum > spec["ls.maximum"]:
                raise _Invalid(path, f"must be <= {spec['ls.maximum']}, got {datum}")


def validate_event(
    catalog: EventCatalog,
    payload: object,
    now: datetime,
    clock_skew_tolerance: timedelta = DEFAULT_CLOCK_SKEW_TOLERANCE,
) -> Accepted | Rejected:
    """Validate one JSON event against its type's schema and the semantic rules.

    ``now`` is when the event was received. The accepted datum holds the event time
    corrected for the device's clock, and the device's own timestamp as
    ``original_timestamp`` when they differ."""
    if not isinstance(payload, Mapping):
        return Rejected((FieldError("(event)", f"must be an object, got {_type_name(payload)}"),))
    event_type_name = payload.get("event_type")
    if not isinstance(event_type_name, str):
        return Rejected((FieldError("event_type", "is required and must be a string"),))
    event_type = catalog.get(event_type_name)
    if event_type is None:
        return Rejected(
            (FieldError("event_type", f"unknown event type {_shown(event_type_name)}"),)
        )

    converter = _Converter()
    datum = converter.record(event_type.schema, dict(payload), "")
    errors = converter.errors
    for required in event_type.requires:
        if datum.get(required) is None and not any(e.field == required for e in errors):
            errors.append(FieldError(required, f"is required for {event_type.name} events"))
    timestamp, sent_at = datum.get("timestamp"), datum.get("sent_at")
    if isinstance(timestamp, datetime) and not any(e.field == "sent_at" for e in errors):
        when = event_time(timestamp, sent_at, now, clock_skew_tolerance)
        if isinstance(when, EventTime):
            datum["timestamp"], datum["original_timestamp"] = when.timestamp, when.original
        else:
            errors.append(FieldError(when.field, when.message))
    if errors:
        return Rejected(tuple(errors))
    return Accepted(event_type, datum)
