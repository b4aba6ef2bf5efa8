"""Turn a JSON event into an Avro datum, or explain exactly why not.

The walk follows the raw composed schema, so every error names its field path
(``properties.score``, ``device_info.timezone``). Beyond Avro's structure it applies
the ``ls.*`` rules written next to fields in the ``.avsc`` files (ranges, lengths),
size limits on every string, map key, map and array (free-form maps included), the
per-type required ids, and the event-time rules that need the injected clock
(``schemas.event_time``: the device's clock corrected, then a range every stage takes).

Three rules let apps send what the seeds show them sending (issue 12):

- **Aliases.** A field's Avro ``aliases`` are the other spellings a JSON key may use
  (seed 002's ``contentId`` for ``content_id``); the datum always holds the field's own
  name, so every stage and every query sees one name. Both spellings at once is an error
  naming the field, rather than a silent pick of one.
- **Integer ids** (``"ls.coerce": "string"``): Laravel's ``$event->user->id`` and seed 000's
  ids are JSON integers; they are stored as their decimal string (for an array, each
  integer item), so one learner is one id whichever way the app spells it.
- **Free-form JSON** (``"ls.json": true``): an object the seeds define as a JSON/JSONB dict
  (``metadata``, ``filters_applied``) is kept whole as canonical JSON text (sorted keys, no
  spaces), which ClickHouse's JSON functions read: ``JSONExtractInt(JSONExtractString(
  properties, 'metadata'), 'attempts')``. Its contents get the same size and number
  limits as any other value.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

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
# free-form JSON text (ls.json) at most; an event's encoded size is capped at 900 kB anyway
DEFAULT_MAX_JSON_TEXT = 65536


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


_TWICE = object()
_SPELLINGS: dict[int, tuple[Schema, dict[str, str]]] = {}


def _spellings(schema: Schema) -> dict[str, str]:
    """JSON key -> field name for one record schema: each field's name and its aliases.
    Memoised by schema object (held, so its id cannot be reused): every event walks its
    type's records, and schemas live as long as the catalog."""
    found = _SPELLINGS.get(id(schema))
    if found is not None and found[0] is schema:
        return found[1]
    names: dict[str, str] = {}
    for spec in schema["fields"]:
        names[spec["name"]] = spec["name"]
    for spec in schema["fields"]:  # a field's own name wins over another's alias
        for alias in spec.get("aliases", ()):
            names.setdefault(alias, spec["name"])
    _SPELLINGS[id(schema)] = (schema, names)
    return names


def _id_text(value: Any, path: str) -> Any:
    """An integer id (or array of them) as decimal text; anything else unchanged, for
    the type check to judge. 64-bit at most: no app's id is longer, and a 400-digit
    "id" is someone probing the door."""

    def one(item: Any, where: str) -> Any:
        if not _is_integer(item):
            return item
        if not _INT64[0] <= item <= _INT64[1]:
            raise _Invalid(where, "an integer id must fit in 64 bits")
        return str(item)

    if isinstance(value, list) and len(value) <= DEFAULT_MAX_ITEMS:
        return [one(item, f"{path}[{i}]") for i, item in enumerate(value)]
    return one(value, path)


def _check_free_form(value: Any, path: str) -> None:
    """Every value inside a free-form object, to the limits the rest of the event has:
    strings, keys, entries, and numbers that any JSON reader (ClickHouse's included)
    can take: finite, integers within 64 bits."""
    if isinstance(value, str):
        if len(value) > DEFAULT_MAX_STRING:
            raise _Invalid(path, f"is longer than {DEFAULT_MAX_STRING} characters")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise _Invalid(path, f"integer out of range [{_INT64[0]}, {_INT64[1]}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(path, "must be a finite number")
    elif isinstance(value, list):
        if len(value) > DEFAULT_MAX_ITEMS:
            raise _Invalid(path, f"has more than {DEFAULT_MAX_ITEMS} items")
        for i, item in enumerate(value):
            _check_free_form(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        if len(value) > DEFAULT_MAX_ITEMS:
            raise _Invalid(path, f"has more than {DEFAULT_MAX_ITEMS} entries")
        for key, item in value.items():
            if len(key) > MAX_MAP_KEY:
                message = f"key {_shown(key)} is longer than {MAX_MAP_KEY} characters"
                raise _Invalid(path, message)
            _check_free_form(item, f"{path}.{key}")
    else:  # pragma: no cover - json.loads makes nothing else
        raise _Invalid(path, f"is not JSON, got {_type_name(value)}")


def _json_text(value: Any, path: str) -> str:
    """A free-form JSON object as canonical text: sorted keys, no spaces, UTF-8 as is.
    Canonical, so equal objects are equal strings (GROUP BY and dedup agree); lossless,
    because numbers, booleans, nulls and nesting survive, unlike a map of strings."""
    if not isinstance(value, dict):
        raise _Invalid(path, f"must be an object, got {_type_name(value)}")
    _check_free_form(value, path)
    try:
        text: str = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError as exc:  # a lone surrogate: not text any reader takes
        raise _Invalid(path, f"is not valid JSON text: {exc}") from None
    return text


class _Converter:
    """Collects every error in the event rather than stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def field(self, spec: Schema, value: Any, path: str) -> Any:
        try:
            if spec.get("ls.json"):
                datum: Any = None if value is None else _json_text(value, path)
                if datum is None and "null" not in spec["type"]:
                    raise _Invalid(path, "must not be null")
            else:
                if spec.get("ls.coerce") == "string":
                    value = _id_text(value, path)
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
        given = self._by_field(schema, value, path)
        datum: dict[str, Any] = {}
        for spec in schema["fields"]:
            name, field_path = spec["name"], _join(path, spec["name"])
            raw = given.get(name, _MISSING)
            if raw is _TWICE:
                continue  # already explained; "is required" would only confuse
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

    def _by_field(self, schema: Schema, value: dict[str, Any], path: str) -> dict[str, Any]:
        """The JSON object's values by field name, its keys read through the fields'
        aliases. Unknown keys and a field given under two spellings are errors."""
        spellings = _spellings(schema)
        given: dict[str, Any] = {}
        key_of: dict[str, str] = {}
        unknown: list[str] = []
        for key, raw in value.items():
            name = spellings.get(key)
            if name is None:
                unknown.append(key)
            elif name in key_of:
                message = f"is given twice, as {key_of[name]!r} and {key!r}; send one"
                self.errors.append(FieldError(_join(path, name), message))
                given[name] = _TWICE
            else:
                key_of[name], given[name] = key, raw
        for extra in sorted(unknown):
            name = extra if len(extra) <= MAX_MAP_KEY else f"{extra[:MAX_MAP_KEY]}…"
            self.errors.append(FieldError(_join(path, name), "unknown field"))
        return given

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
            fallback = DEFAULT_MAX_JSON_TEXT if spec.get("ls.json") else DEFAULT_MAX_STRING
            longest = spec.get("ls.maxLength", fallback)
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
    event_type = catalog.resolve(event_type_name)
    if event_type is None:
        return Rejected(
            (FieldError("event_type", f"unknown event type {_shown(event_type_name)}"),)
        )

    converter = _Converter()
    datum = converter.record(event_type.schema, dict(payload), "")
    datum["event_type"] = event_type.name  # the stored name, whichever name was sent
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
