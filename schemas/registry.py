"""Schema ids for the Confluent wire format, from two interchangeable registries.

``FileSchemaRegistry`` is the embedded default: ids are derived from each schema's
Parsing Canonical Form, so they are deterministic across machines and stable when
schema files are added (an index-based id would shift and mis-decode old data).
``ConfluentSchemaRegistry`` speaks the Confluent REST API for server deployments.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Protocol

import httpx
from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from schemas.catalog import EventCatalog, Schema, default_catalog, load_named_schema
from schemas.evolution import released_projections, released_versions

PROJECTION_SCHEMA_FILES = (
    "projections/user_xp.avsc",
    "projections/user_progress.avsc",
    "projections/topic_mastery.avsc",
    "projections/mode_progress.avsc",
    "projections/blind_spots.avsc",
)


class UnknownSchemaError(LookupError):
    pass


class SchemaRegistry(Protocol):
    def id_for(self, subject: str, schema: Schema) -> int:
        """The id under which ``schema`` is registered (registering it if needed)."""

    def parsed_by_id(self, schema_id: int) -> Any:
        """The parsed schema a reader needs for data written with ``schema_id``."""


def fingerprint_id(schema: Schema) -> int:
    canonical = to_parsing_canonical_form(parse_schema(copy.deepcopy(schema)))
    digest = hashlib.sha256(canonical.encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class _IdMemo:
    """Ids already resolved, by schema object. Fingerprinting a schema (parse plus
    canonical form) costs ~0.2 ms, too much per event; the held reference keeps the
    object alive, so its id() cannot be reused by another schema."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, int], tuple[Schema, int]] = {}

    def get(self, subject: str, schema: Schema) -> int | None:
        found = self._known.get((subject, id(schema)))
        return found[1] if found is not None and found[0] is schema else None

    def put(self, subject: str, schema: Schema, schema_id: int) -> int:
        self._known[(subject, id(schema))] = (schema, schema_id)
        return schema_id


class FileSchemaRegistry:
    """Every schema under ``schemas/avro``; ids are canonical-form fingerprints."""

    def __init__(self, schemas: list[Schema]) -> None:
        self._memo = _IdMemo()
        self._by_id: dict[int, Any] = {}
        self._canonical_by_id: dict[int, str] = {}
        for schema in schemas:
            parsed = parse_schema(copy.deepcopy(schema))
            canonical = to_parsing_canonical_form(parsed)
            schema_id = fingerprint_id(schema)
            seen = self._canonical_by_id.get(schema_id)
            if seen is not None and seen != canonical:
                raise ValueError(f"schema id collision on {schema_id}; rename a record")
            self._by_id[schema_id] = parsed
            self._canonical_by_id[schema_id] = canonical

    @classmethod
    def from_files(cls, catalog: EventCatalog | None = None) -> FileSchemaRegistry:
        catalog = catalog if catalog is not None else default_catalog()
        schemas = [t.schema for t in catalog.values()]
        # released versions too: records written before a schema change must still decode
        schemas += [s for versions in released_versions(catalog).values() for s in versions]
        schemas += [s for versions in released_projections().values() for s in versions]
        schemas += [load_named_schema(name) for name in PROJECTION_SCHEMA_FILES]
        return cls(schemas)

    def id_for(self, subject: str, schema: Schema) -> int:
        known = self._memo.get(subject, schema)
        if known is not None:
            return known
        schema_id = fingerprint_id(schema)
        if schema_id not in self._by_id:
            raise UnknownSchemaError(f"{subject}: schema is not among the files in schemas/avro")
        return self._memo.put(subject, schema, schema_id)

    def parsed_by_id(self, schema_id: int) -> Any:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise UnknownSchemaError(f"no schema with id {schema_id}") from None


class ConfluentSchemaRegistry:
    """Client for a Confluent-compatible registry (subjects by record name)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s)
        self._memo = _IdMemo()
        self._ids: dict[tuple[str, str], int] = {}
        self._parsed: dict[int, Any] = {}

    def id_for(self, subject: str, schema: Schema) -> int:
        known = self._memo.get(subject, schema)
        if known is not None:
            return known
        text = json.dumps(schema, sort_keys=True)
        cached = self._ids.get((subject, text))
        if cached is not None:
            return cached
        response = self._http.post(
            f"/subjects/{subject}/versions",
            json={"schema": text},
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        )
        response.raise_for_status()
        schema_id = int(response.json()["id"])
        self._ids[(subject, text)] = schema_id
        self._parsed[schema_id] = parse_schema(copy.deepcopy(schema))
        return self._memo.put(subject, schema, schema_id)

    def parsed_by_id(self, schema_id: int) -> Any:
        cached = self._parsed.get(schema_id)
        if cached is not None:
            return cached
        response = self._http.get(f"/schemas/ids/{schema_id}")
        if response.status_code == 404:
            raise UnknownSchemaError(f"no schema with id {schema_id}")
        response.raise_for_status()
        parsed = parse_schema(json.loads(response.json()["schema"]))
        self._parsed[schema_id] = parsed
        return parsed


def registry_for(url: str | None) -> SchemaRegistry:
    return ConfluentSchemaRegistry(url) if url else FileSchemaRegistry.from_files()
