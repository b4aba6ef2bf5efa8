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
import re
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
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
    zone = parsed.tzinfo
    if zone is None:
        raise ValueError("timestamp needs a UTC offset, e.g. 2025-01-27T14:30:45.123Z")
    if zone is not UTC:  # Z and +00:00 parse to UTC itself, which astimezone returns as is
        try:
            parsed = parsed.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00:00-01:00 is before datetime.min in UTC
            raise ValueError(f"{text!r} is outside the representable range") from None
    return to_millis(parsed)


def to_millis(moment: datetime) -> datetime:
    """Event time has millisecond resolution everywhere (Avro timestamp-millis, ClickHouse
    DateTime64(3)); truncating at the edge keeps JSON and Avro readers in agreement."""
    extra = moment.microsecond % 1000
    return moment.replace(microsecond=moment.microsecond - extra) if extra else moment


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


# A compiled node: (JSON value, its path, the event's error list) -> the Avro datum, or
# _Invalid. Errors a record collects for its fields go to the list, so every error in
# the event is reported rather than only the first.
Node = Callable[[Any, str, list[FieldError]], Any]


def _string(value: Any, path: str, errors: list[FieldError]) -> Any:
    if not isinstance(value, str):
        raise _Invalid(path, f"must be a string, got {_type_name(value)}")
    # every string, also inside maps and arrays; a field's ls.maxLength may be lower
    if len(value) > DEFAULT_MAX_STRING:
        raise _Invalid(path, f"is longer than {DEFAULT_MAX_STRING} characters")
    return value


def _boolean(value: Any, path: str, errors: list[FieldError]) -> Any:
    if not isinstance(value, bool):
        raise _Invalid(path, f"must be true or false, got {_type_name(value)}")
    return value


def _integer(low: int, high: int) -> Node:
    def integer(value: Any, path: str, errors: list[FieldError]) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise _Invalid(path, f"must be an integer, got {_type_name(value)}")
        if not low <= value <= high:
            raise _Invalid(path, f"integer out of range [{low}, {high}]")
        return value

    return integer


def _number(single: bool) -> Node:
    def number(value: Any, path: str, errors: list[FieldError]) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(path, f"must be a number, got {_type_name(value)}")
        try:  # JSON integers have no size limit: a 400-digit one overflows a double
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise _Invalid(path, "must be a finite number")
        if single and abs(number) > _FLOAT32_MAX:
            raise _Invalid(path, f"is outside a 32-bit float's range (±{_FLOAT32_MAX:.4g})")
        return number

    return number


def _null(value: Any, path: str, errors: list[FieldError]) -> Any:
    if value is not None:
        raise _Invalid(path, f"must be null, got {_type_name(value)}")
    return None


_PRIMITIVES: dict[str, Node] = {
    "string": _string,
    "boolean": _boolean,
    "int": _integer(*_INT32),
    "long": _integer(*_INT64),
    "float": _number(single=True),
    "double": _number(single=False),
    "null": _null,
}


def _primitive(kind: Any) -> Node:
    found = _PRIMITIVES.get(kind) if isinstance(kind, str) else None
    if found is not None:
        return found

    def refused(value: Any, path: str, errors: list[FieldError]) -> Any:
        raise _Invalid(path, f"schema type {kind!r} is not accepted from JSON")

    return refused


def _timestamp(value: Any, path: str, errors: list[FieldError]) -> Any:
    if not isinstance(value, str):
        raise _Invalid(path, f"must be an ISO 8601 string, got {_type_name(value)}")
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise _Invalid(path, f"is not a valid ISO 8601 timestamp: {exc}") from None


# the form str(uuid.UUID(...)) gives: such a value is its own canonical text
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuid(value: Any, path: str, errors: list[FieldError]) -> Any:
    if not isinstance(value, str):
        raise _Invalid(path, f"must be a UUID string, got {_type_name(value)}")
    if _CANONICAL_UUID.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise _Invalid(path, f"must be a UUID, got {_shown(value)}") from None


def _compile(schema: Any, where: str | None) -> Node:
    """The node for one schema. ``where`` is the node's path when it is the same for
    every event (not inside an array or a map), so its fields' paths are built once."""
    if isinstance(schema, list):
        return _compile_union(schema, where)
    if isinstance(schema, str):
        return _primitive(schema)
    kind = schema["type"]
    logical = schema.get("logicalType")
    if logical == "timestamp-millis":
        return _timestamp
    if logical == "uuid":
        return _uuid
    if kind == "record":
        return _compile_record(schema, where)
    if kind == "enum":
        return _compile_enum(schema["symbols"])
    if kind == "array":
        return _compile_array(_compile(schema["items"], None))
    if kind == "map":
        return _compile_map(_compile(schema["values"], None))
    return _primitive(kind)


def _compile_enum(symbols: list[str]) -> Node:
    def enum(value: Any, path: str, errors: list[FieldError]) -> Any:
        if value not in symbols:
            raise _Invalid(path, f"must be one of {symbols}, got {_shown(value)}")
        return value

    return enum


def _compile_array(item: Node) -> Node:
    def array(value: Any, path: str, errors: list[FieldError]) -> Any:
        if not isinstance(value, list):
            raise _Invalid(path, f"must be an array, got {_type_name(value)}")
        if len(value) > DEFAULT_MAX_ITEMS:  # the field's own ls.maxItems may be lower
            raise _Invalid(path, f"has more than {DEFAULT_MAX_ITEMS} items")
        return [item(element, f"{path}[{i}]", errors) for i, element in enumerate(value)]

    return array


def _compile_map(item: Node) -> Node:
    def map_(value: Any, path: str, errors: list[FieldError]) -> Any:
        if not isinstance(value, dict):
            raise _Invalid(path, f"must be an object, got {_type_name(value)}")
        if len(value) > DEFAULT_MAX_ITEMS:
            raise _Invalid(path, f"has more than {DEFAULT_MAX_ITEMS} entries")
        for key in value:
            if len(key) > MAX_MAP_KEY:
                message = f"key {_shown(key)} is longer than {MAX_MAP_KEY} characters"
                raise _Invalid(path, message)
        return {k: item(v, f"{path}.{k}", errors) for k, v in value.items()}

    return map_


def _compile_union(branches: list[Any], where: str | None) -> Node:
    nullable = "null" in branches
    non_null = [_compile(b, where) for b in branches if b != "null"]

    if len(non_null) == 1:
        (only,) = non_null

        def optional(value: Any, path: str, errors: list[FieldError]) -> Any:
            if value is None:
                if nullable:
                    return None
                raise _Invalid(path, "must not be null")
            return only(value, path, errors)

        return optional

    def union(value: Any, path: str, errors: list[FieldError]) -> Any:
        if value is None:
            if nullable:
                return None
            raise _Invalid(path, "must not be null")
        for branch in non_null:  # first branch that takes the value wins
            probe: list[FieldError] = []
            try:
                datum = branch(value, path, probe)
            except _Invalid:
                continue
            if not probe:
                return datum
        raise _Invalid(path, f"does not match any of the allowed types, got {_type_name(value)}")

    return union


_RULE_KEYS = ("ls.maxItems", "ls.enum", "ls.maxLength", "ls.minLength", "ls.minimum")


def _compile_rules(spec: Schema) -> Callable[[Any, str], None] | None:
    """The ``ls.*`` rules written next to a field, or None when it has none: without
    them the defaults add nothing to what the node itself checked (arrays of at most
    DEFAULT_MAX_ITEMS, strings of at most DEFAULT_MAX_STRING)."""
    if not spec.get("ls.json") and not any(k in spec for k in (*_RULE_KEYS, "ls.maximum")):
        return None
    most = spec.get("ls.maxItems", DEFAULT_MAX_ITEMS)
    allowed = spec.get("ls.enum")
    longest = spec.get(
        "ls.maxLength", DEFAULT_MAX_JSON_TEXT if spec.get("ls.json") else DEFAULT_MAX_STRING
    )
    shortest = spec.get("ls.minLength", 0)
    has_low, low = "ls.minimum" in spec, spec.get("ls.minimum", 0)
    has_high, high = "ls.maximum" in spec, spec.get("ls.maximum", 0)

    def rules(datum: Any, path: str) -> None:
        if datum is None:
            return
        if isinstance(datum, list) and len(datum) > most:
            raise _Invalid(path, f"has more than {most} items")
        if allowed is not None and datum not in allowed:
            raise _Invalid(path, f"must be one of {allowed}, got {_shown(datum)}")
        if isinstance(datum, str):
            if len(datum) > longest:
                raise _Invalid(path, f"is longer than {longest} characters")
            if len(datum) < shortest:
                raise _Invalid(path, f"is shorter than {shortest} characters")
        if isinstance(datum, int | float) and not isinstance(datum, bool):
            if has_low and datum < low:
                raise _Invalid(path, f"must be >= {low}, got {datum}")
            if has_high and datum > high:
                raise _Invalid(path, f"must be <= {high}, got {datum}")

    return rules


def _compile_field(spec: Schema, where: str | None) -> Node:
    """A field's value: converted, then its rules; a failure becomes the event's error
    and the field's datum None, so the walk goes on to the other fields."""
    rules = _compile_rules(spec)
    if spec.get("ls.json"):
        nullable = "null" in spec["type"]

        def free_form(value: Any, path: str, errors: list[FieldError]) -> Any:
            try:
                datum = None if value is None else _json_text(value, path)
                if datum is None and not nullable:
                    raise _Invalid(path, "must not be null")
                if rules is not None:
                    rules(datum, path)
                return datum
            except _Invalid as invalid:
                errors.append(invalid.error)
                return None

        return free_form

    node = _compile(spec["type"], where)
    coerce = spec.get("ls.coerce") == "string"
    kind = spec["type"]
    if isinstance(kind, list) and len(kind) == 2 and "null" in kind:
        # the commonest field, ["null", <type>]: null is answered here, one call less
        # per field (what ``optional`` and ``rules`` would do with it)
        (other,) = [b for b in kind if b != "null"]
        node = _compile(other, where)

        def optional_field(value: Any, path: str, errors: list[FieldError]) -> Any:
            if value is None:
                return None
            try:
                if coerce:
                    value = _id_text(value, path)
                datum = node(value, path, errors)
                if rules is not None:
                    rules(datum, path)
                return datum
            except _Invalid as invalid:
                errors.append(invalid.error)
                return None

        return optional_field

    def field(value: Any, path: str, errors: list[FieldError]) -> Any:
        try:
            if coerce:
                value = _id_text(value, path)
            datum = node(value, path, errors)
            if rules is not None:
                rules(datum, path)
            return datum
        except _Invalid as invalid:
            errors.append(invalid.error)
            return None

    return field


# how a record fills a field: from the input, or always its default (server-owned)
_FROM_INPUT, _SERVER_OWNED = 0, 1


def _slow_field(
    name: str, static_path: str | None, how: int, has_default: bool, default: Any, convert: Node
) -> Callable[[Any, dict[str, Any], str, list[FieldError]], None]:
    """One field of a record, every case: what a record's generated code calls for a
    value its fast path does not take (an error, a conversion, a default, a key given
    under two spellings). The reference for the fast paths, which must agree with it."""

    def field(raw: Any, datum: dict[str, Any], path: str, errors: list[FieldError]) -> None:
        if raw is _TWICE:
            return  # already explained; "is required" would only confuse
        if how == _SERVER_OWNED:
            if raw is not _MISSING:
                field_path = static_path or _join(path, name)
                errors.append(FieldError(field_path, "is set by the server, not the client"))
            datum[name] = default
            return
        if raw is _MISSING:
            if has_default:
                datum[name] = default
                return
            errors.append(FieldError(static_path or _join(path, name), "is required"))
            return
        datum[name] = convert(raw, static_path or _join(path, name), errors)

    return field


def _rule_bounds(spec: Schema) -> tuple[int, int, Any, Any] | None:
    """(shortest, longest) text and (lowest, highest) number a field's rules let
    through, None for no bound; None altogether where a fast path cannot say in one
    comparison what the rules would (free-form JSON, an ``ls.enum`` of more than text)."""
    allowed = spec.get("ls.enum")
    if spec.get("ls.json") or (
        allowed is not None and not all(isinstance(a, str) for a in allowed)
    ):
        return None
    return (
        spec.get("ls.minLength", 0),
        min(spec.get("ls.maxLength", DEFAULT_MAX_STRING), DEFAULT_MAX_STRING),
        spec.get("ls.minimum"),
        spec.get("ls.maximum"),
    )


def _fast_path(
    spec: Schema, index: int, static_path: str | None, constants: dict[str, Any]
) -> tuple[str, str] | None:
    """(condition on ``v``, the datum it gives) for the commonest valid values of a
    field, in Python source, or None. Only values the field's own conversion and rules
    would take unchanged (or, for a timestamp or a record, convert without an error)
    qualify; everything else goes to ``_slow_field``, so errors are written by one
    piece of code only."""
    bounds = _rule_bounds(spec)
    if bounds is None:
        return None
    shortest, longest, lowest, highest = bounds
    has_rules = any(k in spec for k in (*_RULE_KEYS, "ls.maximum"))
    kind = spec["type"]
    if isinstance(kind, list):
        if len(kind) != 2 or "null" not in kind:
            return None
        (kind,) = [b for b in kind if b != "null"]
    if isinstance(kind, dict) and "logicalType" not in kind and kind.get("type") in _PRIMITIVES:
        kind = kind["type"]
    number = ""
    if lowest is not None:
        constants[f"low{index}"] = lowest
        number += f" and not v < low{index}"
    if highest is not None:
        constants[f"high{index}"] = highest
        number += f" and not v > high{index}"
    allowed = spec.get("ls.enum")
    if kind == "string":
        constants[f"shortest{index}"], constants[f"longest{index}"] = shortest, longest
        condition = f"type(v) is str and shortest{index} <= len(v) <= longest{index}"
        if allowed is not None:  # text in a set of text: as ``in`` the rule's list
            constants[f"allowed{index}"] = frozenset(allowed)
            condition += f" and v in allowed{index}"
        return condition, "v"
    if allowed is not None:
        return None
    if kind in ("int", "long"):
        low, high = _INT32 if kind == "int" else _INT64
        return f"type(v) is int and {low} <= v <= {high}{number}", "v"
    if kind in ("double", "float"):
        single = " and not abs(v) > _FLOAT32_MAX" if kind == "float" else ""
        return f"type(v) is float and _isfinite(v){single}{number}", "v"
    if has_rules:
        return None
    if kind == "boolean":
        return "type(v) is bool", "v"
    if not isinstance(kind, dict):
        return None
    if kind.get("logicalType") == "uuid":
        return "type(v) is str and _canonical_uuid(v) is not None", "v"
    if kind.get("logicalType") == "timestamp-millis":
        return "type(v) is str and (t := _timestamp_or_none(v)) is not None", "t"
    if kind["type"] == "enum" and "logicalType" not in kind:
        constants[f"symbols{index}"] = frozenset(kind["symbols"])
        return f"type(v) is str and v in symbols{index}", "v"
    if kind["type"] == "record" and "logicalType" not in kind:
        # a record node takes any dict without raising: its fields keep their own errors
        constants[f"record{index}"] = _compile_record(kind, static_path)
        where = repr(static_path) if static_path is not None else f"_join(path, {spec['name']!r})"
        return "type(v) is dict", f"record{index}(v, {where}, errors)"
    return None


def _timestamp_or_none(text: str) -> datetime | None:
    try:
        return parse_timestamp(text)
    except ValueError:
        return None  # the field's conversion says why, as the error


# False while the reference validator is compiled (``reference_validator``)
_GENERATE: ContextVar[bool] = ContextVar("generate", default=True)


def _compile_record(schema: Schema, where: str | None) -> Node:
    """A record's validator as generated Python: per field, one dictionary lookup and,
    for the commonest valid values, one inline check (``_fast_path``); the rest goes to
    the field's ``_slow_field``. Straight-line code instead of a loop over fields with
    three calls each (field, type, rules) halved validation of the seeds' mix (13-16 ->
    7-8 µs an event in one process; BENCHMARKS.md, issue 14). ``_reference_record`` is
    the same validator as a loop; tests/test_generated_paths.py holds the two equal."""
    if not _GENERATE.get():
        return _reference_record(schema, where)
    spellings = _spellings(schema)
    own_names = frozenset(spec["name"] for spec in schema["fields"])
    constants: dict[str, Any] = {
        "_Invalid": _Invalid,
        "_type_name": _type_name,
        "_by_field": _by_field,
        "_MISSING": _MISSING,
        "_FLOAT32_MAX": _FLOAT32_MAX,
        "_isfinite": math.isfinite,
        "_canonical_uuid": _CANONICAL_UUID.fullmatch,
        "_timestamp_or_none": _timestamp_or_none,
        "_join": _join,
        "spellings": spellings,
        "own_names": own_names.issuperset,
    }
    body = [
        "def record(value, path, errors):",
        "    if not isinstance(value, dict):",
        "        raise _Invalid(path, f'must be an object, got {_type_name(value)}')",
        "    # keys that are all field names (the usual case) need no reading through aliases",
        "    given = value if own_names(value) else _by_field(spellings, value, path, errors)",
        "    get = given.get",
        "    datum = {}",
    ]
    for index, spec in enumerate(schema["fields"]):
        name = spec["name"]
        static_path = None if where is None else _join(where, name)
        has_default = "default" in spec
        key = repr(name)
        body.append(f"    v = get({key}, _MISSING)")
        if spec.get("ls.server_owned"):
            constants[f"default{index}"] = spec.get("default")
            constants[f"slow{index}"] = _slow_field(
                name, static_path, _SERVER_OWNED, True, spec.get("default"), _null
            )
            body += [
                "    if v is _MISSING:",
                f"        datum[{key}] = default{index}",
                "    else:",
                f"        slow{index}(v, datum, path, errors)",
            ]
            continue
        convert = _compile_field(spec, static_path)
        constants[f"slow{index}"] = _slow_field(
            name, static_path, _FROM_INPUT, has_default, spec.get("default"), convert
        )
        fast = _fast_path(spec, index, static_path, constants)
        branch = "if"
        if fast is not None:
            body += [f"    if {fast[0]}:", f"        datum[{key}] = {fast[1]}"]
            branch = "elif"
        if has_default:
            constants[f"default{index}"] = spec.get("default")
            body += [f"    {branch} v is _MISSING:", f"        datum[{key}] = default{index}"]
            branch = "elif"
        if isinstance(spec["type"], list) and "null" in spec["type"] and not spec.get("ls.json"):
            # null where null is allowed: no conversion, no rule applies to it
            body += [f"    {branch} v is None:", f"        datum[{key}] = None"]
            branch = "elif"
        if branch == "if":
            body.append(f"    slow{index}(v, datum, path, errors)")
        else:
            body += ["    else:", f"        slow{index}(v, datum, path, errors)"]
    body.append("    return datum")
    # the source holds names and numbers of this module only; the schema's names and
    # values are Python literals (repr) or constants passed in
    exec("\n".join(body), constants)
    record: Node = constants["record"]
    return record


def _reference_record(schema: Schema, where: str | None) -> Node:
    """A record's validator as a loop over its fields' ``_slow_field``: the generated
    one's reference, which tests hold it to."""
    spellings = _spellings(schema)
    own_names = frozenset(spec["name"] for spec in schema["fields"])
    fields = []
    for spec in schema["fields"]:
        static_path = None if where is None else _join(where, spec["name"])
        owned = bool(spec.get("ls.server_owned"))
        convert = _null if owned else _compile_field(spec, static_path)
        how, has_default = (_SERVER_OWNED, True) if owned else (_FROM_INPUT, "default" in spec)
        fields.append(
            (
                spec["name"],
                _slow_field(
                    spec["name"], static_path, how, has_default, spec.get("default"), convert
                ),
            )
        )

    def record(value: Any, path: str, errors: list[FieldError]) -> Any:
        if not isinstance(value, dict):
            raise _Invalid(path, f"must be an object, got {_type_name(value)}")
        given = value if own_names.issuperset(value) else _by_field(spellings, value, path, errors)
        datum: dict[str, Any] = {}
        for name, field in fields:
            field(given.get(name, _MISSING), datum, path, errors)
        return datum

    return record


def reference_validator(schema: Schema) -> Node:
    """The event type's validator without generated code (``_reference_record`` at every
    level), for tests that hold the generated one to it. Not memoised."""
    token = _GENERATE.set(False)
    try:
        return _compile_record(schema, "")
    finally:
        _GENERATE.reset(token)


def _by_field(
    spellings: dict[str, str], value: dict[str, Any], path: str, errors: list[FieldError]
) -> dict[str, Any]:
    """The JSON object's values by field name, its keys read through the fields'
    aliases. Unknown keys and a field given under two spellings are errors."""
    given: dict[str, Any] = {}
    key_of: dict[str, str] = {}
    unknown: list[str] = []
    for key, raw in value.items():
        name = spellings.get(key)
        if name is None:
            unknown.append(key)
        elif name in key_of:
            message = f"is given twice, as {key_of[name]!r} and {key!r}; send one"
            errors.append(FieldError(_join(path, name), message))
            given[name] = _TWICE
        else:
            key_of[name], given[name] = key, raw
    for extra in sorted(unknown):
        name = extra if len(extra) <= MAX_MAP_KEY else f"{extra[:MAX_MAP_KEY]}…"
        errors.append(FieldError(_join(path, name), "unknown field"))
    return given


_COMPILED: dict[int, tuple[Schema, Node]] = {}


def compiled_validator(schema: Schema) -> Node:
    """The event type's validator, compiled on first use. Memoised by schema object
    (held, so its id cannot be reused), as ``_spellings`` is."""
    found = _COMPILED.get(id(schema))
    if found is not None and found[0] is schema:
        return found[1]
    node = _compile_record(schema, "")
    _COMPILED[id(schema)] = (schema, node)
    return node


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

    errors: list[FieldError] = []
    given = payload if isinstance(payload, dict) else dict(payload)
    datum = compiled_validator(event_type.schema)(given, "", errors)
    datum["event_type"] = event_type.name  # the stored name, whichever name was sent
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
