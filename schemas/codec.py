"""Avro binary in the Confluent framing: magic byte 0, 4-byte big-endian schema id, payload.

``encode`` writes with a writer compiled once per parsed schema (``compiled_writer``): one
closure per schema node, and each record as generated Python that writes its fields one
after the other, the commonest types inline and a union's branch picked by
``type(v) is`` (``_Compiler._generated``). fastavro pays, per datum, a type dispatch on
every node and, for every ``["null", record]`` union, a full validation of the record
before writing it; the closures took an event of the seeds' mix from 25 to 12 µs of CPU,
the generated records to 7-9 (BENCHMARKS.md, collector, issue 14). ``reference_writer``
builds the records as loops instead; tests/test_generated_paths.py holds the two to the
same bytes.

fastavro stays the reference: the compiled writer takes only what it can write exactly
as fastavro does (every type the catalogue uses, checked strictly: a ``long`` is an
``int``, never a ``bool`` or a ``float``), and hands anything else (another union shape,
a logical type it does not know, a value of an unexpected type) to fastavro, which writes
it or raises as before. Tests hold the two to identical bytes.
"""

from __future__ import annotations

import io
import struct
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from schemas.registry import SchemaRegistry

MAGIC = 0
_HEADER = struct.Struct(">bI")


class FramingError(ValueError):
    pass


def encode(schema_id: int, parsed_schema: Any, datum: dict[str, Any]) -> bytes:
    out = _buffer()
    out += _HEADER.pack(MAGIC, schema_id)
    try:
        compiled_writer(parsed_schema)(out, datum)
    except Exception:  # whatever it is, fastavro writes it or says why
        return _fastavro_encode(schema_id, parsed_schema, datum)
    return bytes(out)


def _fastavro_encode(schema_id: int, parsed_schema: Any, datum: dict[str, Any]) -> bytes:
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


# --- the compiled writer ----------------------------------------------------------------

Writer = Callable[[bytearray, Any], None]

_local = threading.local()


def _buffer() -> bytearray:
    """This thread's output buffer, emptied: reused so that an event costs no allocation
    beyond its bytes (encode is called from the event loop and from worker threads)."""
    out: bytearray | None = getattr(_local, "buffer", None)
    if out is None:
        out = _local.buffer = bytearray()
    del out[:]
    return out


class _Unsupported(Exception):
    """A schema node or a value the compiled writer leaves to fastavro."""


_ABSENT = object()
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_F32, _F64 = struct.Struct("<f"), struct.Struct("<d")
# zigzag varints of the small values most longs and every length here are
_SMALL = {n: bytes([(n << 1) ^ (n >> 63)]) for n in range(-64, 64)}


def _varint(out: bytearray, n: int) -> None:
    small = _SMALL.get(n)
    if small is not None:
        out += small
        return
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _write_long(out: bytearray, value: Any) -> None:
    if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:
        raise _Unsupported("long")
    _varint(out, value)


def _write_int(out: bytearray, value: Any) -> None:
    if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
        raise _Unsupported("int")
    _varint(out, value)


def _write_string(out: bytearray, value: Any) -> None:
    if type(value) is not str:
        raise _Unsupported("string")
    data = value.encode()
    _varint(out, len(data))
    out += data


def _write_boolean(out: bytearray, value: Any) -> None:
    if type(value) is not bool:
        raise _Unsupported("boolean")
    out.append(1 if value else 0)


def _write_double(out: bytearray, value: Any) -> None:
    if type(value) is not float and type(value) is not int:
        raise _Unsupported("double")
    out += _F64.pack(value)


def _write_float(out: bytearray, value: Any) -> None:
    if type(value) is not float and type(value) is not int:
        raise _Unsupported("float")
    out += _F32.pack(value)


def _write_null(out: bytearray, value: Any) -> None:
    if value is not None:
        raise _Unsupported("null")


def _write_timestamp_millis(out: bytearray, value: Any) -> None:
    if type(value) is datetime and value.tzinfo is not None:
        delta = value - _EPOCH  # fastavro's arithmetic, to the same truncation
        _varint(out, (delta.days * 86400 + delta.seconds) * 1000 + int(delta.microseconds / 1000))
    else:
        _write_long(out, value)  # an int is written as is; a naive datetime is fastavro's


def _write_uuid(out: bytearray, value: Any) -> None:
    _write_string(out, str(value) if type(value) is uuid.UUID else value)


def _unsupported(out: bytearray, value: Any) -> None:
    raise _Unsupported("schema")


_PRIMITIVES: dict[str, Writer] = {
    "null": _write_null,
    "boolean": _write_boolean,
    "int": _write_int,
    "long": _write_long,
    "float": _write_float,
    "double": _write_double,
    "string": _write_string,
}
_KIND_TYPES: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "boolean": (bool,),
    "int": (int,),
    "long": (int,),
    "float": (float, int),
    "double": (float, int),
    "string": (str,),
    "enum": (str,),
    "record": (dict,),
    "map": (dict,),
    "array": (list,),
}
_LOGICAL_TYPES: dict[tuple[str, str], tuple[type, ...]] = {
    ("long", "timestamp-millis"): (datetime, int),
    ("string", "uuid"): (str, uuid.UUID),
}
_LOGICAL: dict[tuple[str, str], Writer] = {
    ("long", "timestamp-millis"): _write_timestamp_millis,
    ("string", "uuid"): _write_uuid,
}


_STRING_LINES = [
    "b = v.encode()",
    "n = len(b)",
    "if n < 64:",
    "    out.append(n << 1)  # the zigzag varint of a small length: one byte",
    "else:",
    "    _varint(out, n)",
    "out += b",
]
_VARINT_LINES = [
    "n = (n << 1) ^ (n >> 63)",
    "while n > 127:",
    "    out.append((n & 127) | 128)",
    "    n >>= 7",
    "out.append(n)",
]
# A writer's inline form for generated records (``_Compiler._generated``): the Python
# types it takes (all its type check is), a further bound on ``v``, the _Unsupported
# label, and lines that write ``v`` once those hold. Each does what the writer does.
_INLINE: dict[Writer, tuple[tuple[type, ...], str | None, str, list[str]]] = {
    _write_string: ((str,), None, "string", _STRING_LINES),
    _write_long: ((int,), "_LONG_MIN <= v <= _LONG_MAX", "long", ["n = v", *_VARINT_LINES]),
    _write_int: ((int,), "_INT_MIN <= v <= _INT_MAX", "int", ["n = v", *_VARINT_LINES]),
    _write_boolean: ((bool,), None, "boolean", ["out.append(1 if v else 0)"]),
    _write_double: ((float, int), None, "double", ["out += _pack_double(v)"]),
    _write_float: ((float, int), None, "float", ["out += _pack_float(v)"]),
    _write_timestamp_millis: (
        (),
        None,
        "timestamp",
        [
            "if type(v) is datetime and v.tzinfo is not None:",
            "    delta = v - _EPOCH  # fastavro's arithmetic, to the same truncation",
            "    n = (delta.days * 86400 + delta.seconds) * 1000 + int(delta.microseconds / 1000)",
            *("    " + line for line in _VARINT_LINES),
            "else:",
            "    _write_long(out, v)",
        ],
    ),
    _write_uuid: (
        (),
        None,
        "uuid",
        [
            "if type(v) is str:",
            *("    " + line for line in _STRING_LINES),
            "else:",
            "    _write_uuid(out, v)",
        ],
    ),
}
_INLINE_CONSTANTS: dict[str, Any] = {
    "_Unsupported": _Unsupported,
    "_ABSENT": _ABSENT,
    "_varint": _varint,
    "_write_long": _write_long,
    "_write_uuid": _write_uuid,
    "_LONG_MIN": _LONG_MIN,
    "_LONG_MAX": _LONG_MAX,
    "_INT_MIN": _INT_MIN,
    "_INT_MAX": _INT_MAX,
    "_EPOCH": _EPOCH,
    "_pack_double": _F64.pack,
    "_pack_float": _F32.pack,
    "datetime": datetime,
    "str": str,
    "int": int,
    "bool": bool,
    "float": float,
}


def _looped(
    fields: list[tuple[str, Any, bool, Writer, dict[type, tuple[bytes, Writer]] | None]],
) -> Writer:
    """A record's writer as a loop over its fields: the generated one's reference."""

    def record(out: bytearray, value: Any) -> None:
        if not isinstance(value, dict) or "-type" in value:  # "-type": fastavro's
            raise _Unsupported("record")
        for name, default, required, write, branches in fields:
            item = value.get(name, _ABSENT)
            if item is _ABSENT:
                if required:
                    raise _Unsupported("missing field")
                item = default
            if branches is None:
                write(out, item)
                continue
            entry = branches.get(type(item))  # a tuple, fastavro's notation: not here
            if entry is None:
                raise _Unsupported("union")
            out += entry[0]
            if item is not None:
                entry[1](out, item)

    return record


class _Compiler:
    """Builds the writer of one parsed schema; named types are written once, referred to
    by name after, so references resolve (lazily: a type may refer to itself)."""

    def __init__(self, named: dict[str, Any], generate: bool = True) -> None:
        self.named = named
        self.generate = generate  # records as generated code, or as loops (the reference)
        self.built: dict[str, Writer] = {}
        self.enum_marks: dict[Writer, dict[str, bytes]] = {}  # for enums written inline

    def node(self, schema: Any) -> Writer:
        if isinstance(schema, str):
            primitive = _PRIMITIVES.get(schema)
            return primitive if primitive is not None else self._reference(schema)
        if isinstance(schema, list):
            return self._union(schema)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical is not None:
            known = isinstance(kind, str) and isinstance(logical, str)
            return _LOGICAL.get((kind, logical), _unsupported) if known else _unsupported
        if kind == "record":
            return self._record(schema)
        if kind == "enum":
            return self._enum(schema)
        if kind == "array":
            return self._array(self.node(schema["items"]))
        if kind == "map":
            return self._map(self.node(schema["values"]))
        if kind in _PRIMITIVES or isinstance(kind, dict | list):
            return self.node(kind)
        return _unsupported  # fixed, bytes, error, a name in "type": fastavro's

    def _reference(self, name: str) -> Writer:
        if name not in self.named:
            return _unsupported

        def referred(out: bytearray, value: Any) -> None:
            if name not in self.built:
                self.built[name] = self.node(self.named[name])
            self.built[name](out, value)

        return referred

    def _union(self, branches: list[Any]) -> Writer:
        by_type = self._branches(branches)
        if by_type is None:
            return _unsupported

        def union(out: bytearray, value: Any) -> None:
            # a tuple is fastavro's (name, value) notation: not in by_type, so fastavro's
            entry = by_type.get(type(value))
            if entry is None:
                raise _Unsupported("union")
            out += entry[0]
            entry[1](out, value)

        return union

    def _branches(self, branches: list[Any]) -> dict[type, tuple[bytes, Writer]] | None:
        """A union's branch mark and writer by Python type: the branch of a value is the
        one branch that takes its type. fastavro takes the first branch that validates;
        when no two branches take one Python type, that is the same branch. Unions where
        two do (None here) are left to fastavro."""
        by_type: dict[type, tuple[bytes, Writer]] = {}
        for index, branch in enumerate(branches):
            takes = self._python_types(branch)
            if takes is None or any(t in by_type for t in takes):
                return None
            entry = (bytes(_varint_of(index)), self.node(branch))
            by_type.update((t, entry) for t in takes)
        return by_type

    def _python_types(self, schema: Any) -> tuple[type, ...] | None:
        """The Python types fastavro's validation lets a union branch take."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            schema = self.named.get(schema)
        if isinstance(schema, str):
            kind, logical = schema, None
        elif isinstance(schema, dict) and isinstance(schema.get("type"), str):
            kind, logical = schema["type"], schema.get("logicalType")
        else:
            return None
        if logical is not None:
            return _LOGICAL_TYPES.get((kind, logical))
        return _KIND_TYPES.get(kind)

    def _record(self, schema: dict[str, Any]) -> Writer:
        # a union field's branches are picked in the record's own loop (most fields are
        # ["null", x]): a call less per field, and none at all for a null
        fields: list[tuple[str, Any, bool, Writer, dict[type, tuple[bytes, Writer]] | None]]
        fields = []
        for field in schema["fields"]:
            # fastavro writes a missing field's default, or None where null is allowed
            required = "default" not in field and "null" not in field["type"]
            kind = field["type"]
            branches = self._branches(kind) if isinstance(kind, list) else None
            write = self.node(kind) if branches is None else _unsupported
            fields.append((field["name"], field.get("default"), required, write, branches))

        record = self._generated(fields) if self.generate else _looped(fields)
        if isinstance(schema.get("name"), str):  # where it is defined, for references
            self.built[schema["name"]] = record
        return record

    def _generated(
        self, fields: list[tuple[str, Any, bool, Writer, dict[type, tuple[bytes, Writer]] | None]]
    ) -> Writer:
        """A record's writer as generated Python: its fields one after the other, each
        type's writing inline (``_inline``), a union's branch picked by ``type(v) is``;
        what is not inline is a call to the node's writer, as in ``_looped``."""
        constants: dict[str, Any] = dict(_INLINE_CONSTANTS)
        body = [
            "def record(out, value):",
            "    if not isinstance(value, dict) or '-type' in value:  # '-type': fastavro's",
            "        raise _Unsupported('record')",
            "    get = value.get",
        ]
        for index, (name, default, required, write, branches) in enumerate(fields):
            if required:
                body += [
                    f"    v = get({name!r}, _ABSENT)",
                    "    if v is _ABSENT:",
                    "        raise _Unsupported('missing field')",
                ]
            else:
                constants[f"default{index}"] = default
                body.append(f"    v = get({name!r}, default{index})")
            if branches is None:
                body += self._inline(write, None, f"w{index}", constants, "    ")
                continue
            keyword = "if"
            for number, (kind, (mark, branch)) in enumerate(branches.items()):
                constants[f"mark{index}_{number}"] = mark
                if kind is type(None):
                    body += [f"    {keyword} v is None:", f"        out += mark{index}_{number}"]
                else:
                    constants[f"type{index}_{number}"] = kind
                    body += [
                        f"    {keyword} type(v) is type{index}_{number}:",
                        f"        out += mark{index}_{number}",
                        *self._inline(branch, kind, f"w{index}_{number}", constants, "        "),
                    ]
                keyword = "elif"
            body += ["    else:", "        raise _Unsupported('union')"]
        exec("\n".join(body), constants)  # names and constants only, as in validation.py
        record: Writer = constants["record"]
        return record

    def _inline(
        self, write: Writer, known: type | None, name: str, constants: dict[str, Any], indent: str
    ) -> list[str]:
        """Source lines that write ``v`` exactly as ``write`` would, raising _Unsupported
        where it does (its type check is left out where ``known``, the type the union
        picked, passes it); a call to ``write`` for writers with no inline form."""
        marks = self.enum_marks.get(write)
        if marks is not None:
            constants[f"{name}_marks"] = marks
            lines = [
                f"m = {name}_marks.get(v) if type(v) is str else None",
                "if m is None:",
                "    raise _Unsupported('enum')",
                "out += m",
            ]
            return [indent + line for line in lines]
        inline = _INLINE.get(write)
        if inline is None:
            constants[name] = write
            return [f"{indent}{name}(out, v)"]
        takes, bound, label, lines = inline
        checks = []
        if takes and known not in takes:
            checks.append(" and ".join(f"type(v) is not {t.__name__}" for t in takes))
        if bound:
            checks.append(f"not {bound}")
        if checks:
            lines = [f"if {' or '.join(checks)}:", f"    raise _Unsupported({label!r})", *lines]
        return [indent + line for line in lines]

    def _enum(self, schema: dict[str, Any]) -> Writer:
        marks = {symbol: bytes(_varint_of(i)) for i, symbol in enumerate(schema["symbols"])}

        def enum(out: bytearray, value: Any) -> None:
            mark = marks.get(value) if type(value) is str else None
            if mark is None:
                raise _Unsupported("enum")
            out += mark

        self.enum_marks[enum] = marks
        return enum

    @staticmethod
    def _array(item: Writer) -> Writer:
        def array(out: bytearray, value: Any) -> None:
            if type(value) is not list:
                raise _Unsupported("array")
            if value:
                _varint(out, len(value))
                for element in value:
                    item(out, element)
            out.append(0)

        return array

    @staticmethod
    def _map(item: Writer) -> Writer:
        def map_(out: bytearray, value: Any) -> None:
            if type(value) is not dict:
                raise _Unsupported("map")
            if value:
                _varint(out, len(value))
                for key, element in value.items():
                    _write_string(out, key)
                    item(out, element)
            out.append(0)

        return map_


def _varint_of(n: int) -> bytearray:
    out = bytearray()
    _varint(out, n)
    return out


_COMPILED: dict[int, tuple[Any, Writer]] = {}


def compiled_writer(parsed_schema: Any) -> Writer:
    """The writer of a parsed schema, compiled on first use. Keyed by the schema object
    (held, so its id cannot be reused): parsed schemas live as long as their registry."""
    found = _COMPILED.get(id(parsed_schema))
    if found is not None and found[0] is parsed_schema:
        return found[1]
    named = parsed_schema.get("__named_schemas", {}) if isinstance(parsed_schema, dict) else {}
    writer = _Compiler(dict(named)).node(parsed_schema)
    _COMPILED[id(parsed_schema)] = (parsed_schema, writer)
    return writer


def reference_writer(parsed_schema: Any) -> Writer:
    """The writer with records as loops over their fields, no generated code: what the
    generated one must write byte for byte (tests hold them to it). Not memoised."""
    named = parsed_schema.get("__named_schemas", {}) if isinstance(parsed_schema, dict) else {}
    return _Compiler(dict(named), generate=False).node(parsed_schema)
