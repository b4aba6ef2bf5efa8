"""An Avro reader compiled per parsed schema: the mirror of ``schemas.codec``'s writer.

Each record type becomes one generated Python function that reads its fields in line
(a varint of one byte, the usual case, costs no call) and builds the record's dict in
one literal. fastavro stays the reference: the compiled reader covers the types the
catalogue uses (every primitive, records, enums, arrays, maps, unions,
``timestamp-millis`` and ``uuid``) and ``compiled_reader`` answers None for a schema
with anything else, so the caller reads that one with fastavro. Tests hold the two to
equal values on the same bytes (tests/test_avro_reader.py).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.codec import FramingError, schema_id_of
from schemas.codec import decode as codec_decode
from schemas.registry import SchemaRegistry

# (payload, position of the datum) -> the datum
Reader = Callable[[bytes, int], Any]

FRAMING_HEADER_SIZE = 5  # magic byte and schema id (schemas.codec)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FLOAT = struct.Struct("<f").unpack_from
_DOUBLE = struct.Struct("<d").unpack_from
_PRIMITIVE_KINDS = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)


class _Unsupported(Exception):
    """A schema the compiled reader does not cover: fastavro reads it."""


def _long(buf: bytes, p: int) -> tuple[int, int]:
    """A zig-zag varint of more than one byte (the generated code reads one-byte ones)."""
    b = buf[p]
    n = b & 0x7F
    shift = 7
    p += 1
    while b & 0x80:
        b = buf[p]
        p += 1
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), p


class _Generator:
    """Writes the source of one function per record type; named types by reference."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.functions: dict[str, str] = {}  # record name -> generated function name
        self.sources: list[str] = []
        self.constants: dict[str, Any] = {}
        self._temp = 0

    def temp(self, prefix: str) -> str:
        self._temp += 1
        return f"{prefix}{self._temp}"

    def constant(self, value: Any) -> str:
        name = self.temp("_k")
        self.constants[name] = value
        return name

    def read(self, schema: Any, target: str, pad: str) -> list[str]:
        """Lines that read one value of ``schema`` at ``p`` into ``target``."""
        if isinstance(schema, str):
            if schema in _PRIMITIVE_KINDS:
                return self._primitive(schema, target, pad)
            if schema not in self.named:
                raise _Unsupported(schema)
            # a named record by its function (it may be recursive); an enum in line
            return self.read(self.named[schema], target, pad)
        if isinstance(schema, list):
            return self._union(schema, target, pad)
        if not isinstance(schema, dict):
            raise _Unsupported(repr(schema))
        kind = schema.get("type")
        logical = schema.get("logicalType")
        if logical is not None:
            return self._logical(kind, logical, target, pad)
        if kind == "record":
            return self._record_call(schema, target, pad)
        if kind == "enum":
            symbols = self.constant(tuple(schema["symbols"]))
            return [
                *self._long("_i", pad),
                f"{pad}if _i < 0:",  # a negative index would count from the end
                f"{pad}    raise ValueError('enum index out of range')",
                f"{pad}{target} = {symbols}[_i]",
            ]
        if kind == "array":
            return self._blocks(schema["items"], target, pad, keyed=False)
        if kind == "map":
            return self._blocks(schema["values"], target, pad, keyed=True)
        if isinstance(kind, str) and kind in _PRIMITIVE_KINDS:
            return self._primitive(kind, target, pad)
        raise _Unsupported(repr(kind))  # fixed, error, a name or a schema in "type"

    @staticmethod
    def _long(target: str, pad: str) -> list[str]:
        return [
            f"{pad}_b = buf[p]",
            f"{pad}if _b < 128:",
            f"{pad}    {target} = (_b >> 1) ^ -(_b & 1)",
            f"{pad}    p += 1",
            f"{pad}else:",
            f"{pad}    {target}, p = _long(buf, p)",
        ]

    def _primitive(self, kind: str, target: str, pad: str) -> list[str]:
        if kind == "null":
            return [f"{pad}{target} = None"]
        if kind == "boolean":
            return [f"{pad}{target} = buf[p] != 0", f"{pad}p += 1"]
        if kind in ("int", "long"):
            return self._long(target, pad)
        if kind == "float":
            return [f"{pad}{target} = _FLOAT(buf, p)[0]", f"{pad}p += 4"]
        if kind == "double":
            return [f"{pad}{target} = _DOUBLE(buf, p)[0]", f"{pad}p += 8"]
        if kind == "bytes":
            return [
                *self._long("_n", pad),
                f"{pad}if _n < 0 or p + _n > _end:",
                f"{pad}    raise EOFError('bytes length out of the record')",
                f"{pad}{target} = buf[p : p + _n]",
                f"{pad}p += _n",
            ]
        # string: a slice past the end would be silently short, and a negative length
        # would move p back: refused, as fastavro refuses a short read
        return [
            *self._long("_n", pad),
            f"{pad}if _n < 0 or p + _n > _end:",
            f"{pad}    raise EOFError('string length out of the record')",
            f"{pad}{target} = buf[p : p + _n].decode()",
            f"{pad}p += _n",
        ]

    def _logical(self, kind: Any, logical: Any, target: str, pad: str) -> list[str]:
        if kind == "long" and logical == "timestamp-millis":
            # as fastavro does (not fromtimestamp, which rounds: bugs.python.org/issue36439);
            # positional, in line: a keyword call was a tenth of the read
            return [*self._long("_ms", pad), f"{pad}{target} = _EPOCH + _td(0, 0, _ms * 1000)"]
        if kind == "string" and logical == "uuid":
            return [*self._primitive("string", "_s", pad), f"{pad}{target} = _UUID(_s)"]
        raise _Unsupported(f"{kind}/{logical}")

    def _union(self, branches: list[Any], target: str, pad: str) -> list[str]:
        index = self.temp("_u")
        if len(branches) <= 63:
            # the branch by its zig-zagged index, one byte (2 x index) in every writer's
            # usual encoding: compared as it is, not decoded first (a union in almost
            # every field); a longer varint is decoded and compared the same way
            lines = [
                f"{pad}{index} = buf[p]",
                f"{pad}if {index} < 128:",
                f"{pad}    p += 1",
                f"{pad}else:",
                f"{pad}    {index}, p = _long(buf, p)",
                f"{pad}    {index} = 2 * {index} if 0 <= {index} < 64 else 1",
            ]
            tested = [f"{index} == {2 * i}" for i in range(len(branches))]
        else:
            lines = self._long(index, pad)
            tested = [f"{index} == {i}" for i in range(len(branches))]
        for i, branch in enumerate(branches):
            keyword = "if" if i == 0 else "elif"
            lines.append(f"{pad}{keyword} {tested[i]}:")
            lines.extend(self.read(branch, target, pad + "    "))
        lines.append(f"{pad}else:")
        lines.append(f"{pad}    raise ValueError('union branch out of range')")
        return lines

    def _blocks(self, item: Any, target: str, pad: str, keyed: bool) -> list[str]:
        count, value, key = self.temp("_c"), self.temp("_v"), self.temp("_key")
        inner = pad + "        "
        lines = [f"{pad}{target} = {{}}" if keyed else f"{pad}{target} = []"]
        lines.append(f"{pad}while True:")
        lines.extend(self._long(count, pad + "    "))
        lines.append(f"{pad}    if {count} == 0:")
        lines.append(f"{pad}        break")
        lines.append(f"{pad}    if {count} < 0:  # a block with its size in bytes")
        lines.append(f"{pad}        {count} = -{count}")
        lines.extend(self._long("_size", pad + "        "))
        lines.append(f"{pad}    for _ in range({count}):")
        if keyed:
            lines.extend(self._primitive("string", key, inner))
        lines.extend(self.read(item, value, inner))
        lines.append(
            f"{inner}{target}[{key}] = {value}" if keyed else f"{inner}{target}.append({value})"
        )
        return lines

    def _record_call(self, schema: dict[str, Any], target: str, pad: str) -> list[str]:
        name = schema.get("name")
        function = self.functions.get(name) if isinstance(name, str) else None
        if function is None:
            function = self._record(schema)
        return [f"{pad}{target}, p = {function}(buf, p)"]

    def _record(self, schema: dict[str, Any]) -> str:
        function = self.temp("_record")
        if isinstance(schema.get("name"), str):  # before its fields: it may refer to itself
            self.functions[schema["name"]] = function
        body: list[str] = []
        fields = []
        for field in schema["fields"]:
            local = self.temp("_f")
            body.extend(self.read(field["type"], local, "    "))
            fields.append(f"{field['name']!r}: {local}")
        # _end: the payload's length, for the strings' bounds check, taken once
        source = [
            f"def {function}(buf, p):",
            "    _end = len(buf)",
            *body,
            f"    return {{{', '.join(fields)}}}, p",
        ]
        self.sources.append("\n".join(source))
        return function


# what generated readers call
_READER_NAMES: dict[str, Any] = {
    "_long": _long,
    "_EPOCH": _EPOCH,
    "_td": timedelta,
    "_UUID": uuid.UUID,
    "_FLOAT": _FLOAT,
    "_DOUBLE": _DOUBLE,
}

_COMPILED: dict[int, tuple[Any, Reader | None]] = {}


def _compile(parsed_schema: Any) -> Reader:
    named = parsed_schema.get("__named_schemas", {}) if isinstance(parsed_schema, dict) else {}
    generator = _Generator(dict(named))
    lines = ["def _read(buf, p):", "    _end = len(buf)"]
    lines.extend(generator.read(parsed_schema, "_value", "    "))
    lines.append("    return _value")
    label = parsed_schema.get("name", "") if isinstance(parsed_schema, dict) else parsed_schema
    reader: Reader = _define(generator, lines, f"<avro reader {label}>", {})
    return reader


def _define(
    generator: _Generator, lines: list[str], filename: str, names: Mapping[str, Any]
) -> Callable[..., Any]:
    """The function ``_read`` that ``lines`` define, with the record functions and
    constants ``generator`` wrote for it, and ``names`` besides."""
    scope: dict[str, Any] = {**_READER_NAMES, **generator.constants, **names}
    source = "\n\n".join([*generator.sources, "\n".join(lines)])
    exec(compile(source, filename, "exec"), scope)
    function: Callable[..., Any] = scope["_read"]
    return function


def compile_record_function(
    parsed_schema: Any,
    parameters: str,
    fields: Mapping[str, str],
    body: str,
    namespace: Mapping[str, Any],
    label: str,
) -> Callable[..., Any] | None:
    """A function ``(buf, p, <parameters>)`` that reads a record's top-level fields at
    ``p`` into locals, then runs ``body`` (indented by four spaces, ending in a return)
    over them: the caller's own use of a record, without building its dict. Each field
    of ``fields`` (name -> the expression it takes when the schema has no such field)
    is the local ``f_<name>``; a field not listed is read past. ``namespace`` holds the
    names ``body`` uses. None for a schema the compiled reader leaves to fastavro, or
    one that is not a record."""
    if not isinstance(parsed_schema, dict) or parsed_schema.get("type") != "record":
        return None
    named = parsed_schema.get("__named_schemas", {})
    generator = _Generator(dict(named))
    lines = [f"def _read(buf, p, {parameters}):", "    _end = len(buf)"]
    present = set()
    try:
        for field in parsed_schema["fields"]:
            name = field["name"]
            target = f"f_{name}" if name in fields else "_skipped"
            present.add(name)
            lines.extend(generator.read(field["type"], target, "    "))
    except _Unsupported:
        return None
    missing = [name for name in fields if name not in present]
    lines.extend(f"    f_{name} = {fields[name]}" for name in missing)
    lines.append(body.rstrip())
    return _define(generator, lines, f"<avro record function {label}>", namespace)


def compiled_reader(parsed_schema: Any) -> Reader | None:
    """The reader of a parsed schema, compiled on first use; None where fastavro must read
    it. Keyed by the schema object (held, so its id cannot be reused)."""
    found = _COMPILED.get(id(parsed_schema))
    if found is not None and found[0] is parsed_schema:
        return found[1]
    try:
        reader: Reader | None = _compile(parsed_schema)
    except _Unsupported:
        reader = None
    _COMPILED[id(parsed_schema)] = (parsed_schema, reader)
    return reader


def decode(registry: SchemaRegistry, data: bytes) -> dict[str, Any]:
    """``schemas.codec.decode`` with the compiled reader: the same datum from the same
    Confluent-framed bytes, fastavro's where the schema is one the reader leaves to it."""
    parsed = registry.parsed_by_id(schema_id_of(data))
    reader = compiled_reader(parsed)
    if reader is None:
        return codec_decode(registry, data)
    datum = reader(data, FRAMING_HEADER_SIZE)
    if not isinstance(datum, dict):
        raise FramingError("payload is not an Avro record")
    return datum
