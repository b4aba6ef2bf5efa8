"""Schema evolution: released versions stay readable.

Changing a schema file that has shipped starts by copying the shipped version into
``avro/released/`` (``envelope.vN.avsc``, ``properties/<event_type>.vN.avsc`` or
``projections/<name>.vN.avsc``).
Records written with any released version must then stay readable by the current
schema (Avro *backward* compatibility: new reader, old writer), which the test suite
checks for every event type; and the file registry keeps the released versions, so
records already on the topics still decode after the change.

The check follows the Avro specification's schema-resolution rules structurally,
rather than by trying sample data, so it also catches a break on a branch no sample
happens to take.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.catalog import AVRO_DIR, EventCatalog, Schema, compose

# Writer type -> reader types it may be read as (the specification's promotions).
_PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"int", "long", "float", "double"}),
    "long": frozenset({"long", "float", "double"}),
    "float": frozenset({"float", "double"}),
    "string": frozenset({"string", "bytes"}),
    "bytes": frozenset({"bytes", "string"}),
}
_NAMED = ("record", "enum", "fixed")


def released_versions(catalog: EventCatalog, avro_dir: Path = AVRO_DIR) -> dict[str, list[Schema]]:
    """Per subject, every released composed schema that differs from the current one."""
    released = avro_dir / "released"
    envelopes = [_load_json(p) for p in sorted(released.glob("envelope.v*.avsc"))]
    current_envelope = _load_json(avro_dir / "envelope.avsc")
    versions: dict[str, list[Schema]] = {}
    for name, event_type in catalog.items():
        current_properties = _load_json(avro_dir / "properties" / f"{name}.avsc")
        old_properties = sorted((released / "properties").glob(f"{name}.v*.avsc"))
        properties = [current_properties, *(_load_json(p) for p in old_properties)]
        for envelope in [current_envelope, *envelopes]:
            for props in properties:
                schema = compose(envelope, props)
                if schema != event_type.schema:
                    versions.setdefault(event_type.subject, []).append(schema)
    return versions


def released_projections(avro_dir: Path = AVRO_DIR) -> dict[str, list[Schema]]:
    """Per projection schema file (``projections/<name>.avsc``), its released versions."""
    versions: dict[str, list[Schema]] = {}
    for path in sorted((avro_dir / "released" / "projections").glob("*.v*.avsc")):
        name = f"projections/{path.name.split('.v')[0]}.avsc"
        versions.setdefault(name, []).append(_load_json(path))
    return versions


def backward_incompatibilities(writer: Any, reader: Any) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader`` (empty: it can)."""
    return list(_Resolver().check(writer, reader, "$"))


class _Resolver:
    def __init__(self) -> None:
        self._named_writer: dict[str, Any] = {}
        self._named_reader: dict[str, Any] = {}
        self._in_progress: set[tuple[str, str]] = set()

    def _resolve(self, schema: Any, named: dict[str, Any]) -> Any:
        if isinstance(schema, dict) and schema.get("type") in _NAMED:
            named.setdefault(_short(schema["name"]), schema)
            return schema
        if isinstance(schema, str) and _short(schema) in named:
            return named[_short(schema)]
        return schema

    def check(self, writer: Any, reader: Any, path: str) -> Iterator[str]:
        writer = self._resolve(_unwrap(writer), self._named_writer)
        reader = self._resolve(_unwrap(reader), self._named_reader)
        if isinstance(writer, list):  # every branch the writer may pick must resolve
            for branch in writer:
                yield from self.check(branch, reader, path)
            return
        if isinstance(reader, list):
            problems = [list(self.check(writer, branch, path)) for branch in reader]
            if not any(not p for p in problems):
                yield f"{path}: writer type {_kind(writer)} matches no branch of the reader union"
            return
        writer_kind, reader_kind = _kind(writer), _kind(reader)
        if writer_kind in _NAMED or reader_kind in _NAMED:
            yield from self._named(writer, reader, writer_kind, reader_kind, path)
        elif writer_kind in ("array", "map"):
            if writer_kind != reader_kind:
                yield f"{path}: {writer_kind} cannot be read as {reader_kind}"
                return
            inner = "items" if writer_kind == "array" else "values"
            yield from self.check(writer[inner], reader[inner], f"{path}[]")
        elif reader_kind not in _PROMOTIONS.get(writer_kind, frozenset({writer_kind})):
            yield f"{path}: {writer_kind} cannot be read as {reader_kind}"

    def _named(
        self, writer: Any, reader: Any, writer_kind: str, reader_kind: str, path: str
    ) -> Iterator[str]:
        if writer_kind != reader_kind:
            yield f"{path}: {writer_kind} cannot be read as {reader_kind}"
            return
        if _short(writer["name"]) != _short(reader["name"]):
            yield f"{path}: {writer['name']} cannot be read as {reader['name']}"
            return
        key = (_short(writer["name"]), path)
        if key in self._in_progress:  # a recursive type already being compared
            return
        self._in_progress.add(key)
        if writer_kind == "record":
            yield from self._record(writer, reader, path)
        elif writer_kind == "enum":
            missing = sorted(set(writer["symbols"]) - set(reader["symbols"]))
            if missing and "default" not in reader:
                yield f"{path}: enum symbols {missing} were removed and the reader has no default"
        elif writer.get("size") != reader.get("size"):
            yield f"{path}: fixed size changed from {writer.get('size')} to {reader.get('size')}"

    def _record(self, writer: Any, reader: Any, path: str) -> Iterator[str]:
        written = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            names = [field["name"], *field.get("aliases", [])]
            source = next((written[n] for n in names if n in written), None)
            if source is None:
                if "default" not in field:
                    yield f"{path}.{field['name']}: added without a default"
                continue
            yield from self.check(source["type"], field["type"], f"{path}.{field['name']}")


def _kind(schema: Any) -> str:
    return str(schema["type"]) if isinstance(schema, dict) else str(schema)


def _unwrap(schema: Any) -> Any:
    """``{"type": {...}}`` and ``{"type": [...]}`` are just the inner type."""
    while isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
        schema = schema["type"]
    return schema


def _load_json(path: Path) -> Schema:
    loaded: Schema = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]
