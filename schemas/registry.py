"""Schema ids for the Confluent wire format, from two interchangeable registries.

``FileSchemaRegistry`` is the embedded default: ids are derived from each schema's
Parsing Canonical Form, so they are deterministic across machines and stable when
schema files are added (an index-based id would shift and mis-decode old data).
``ConfluentSchemaRegistry`` speaks the Confluent REST API for server deployments
(Confluent's, or Apicurio's Confluent-compatible one: ``devstack.apicurio``), with
subjects by record name; ``registry_for`` registers what the services write up front.
``schemas.registry_api`` serves the file registry as a Confluent registry, for consumers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import httpx
from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from schemas.catalog import EventCatalog, Schema, default_catalog, load_named_schema
from schemas.evolution import released_projections, released_versions

log = logging.getLogger(__name__)

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
    return _canonical_id(to_parsing_canonical_form(parse_schema(copy.deepcopy(schema))))


def _canonical_id(canonical: str) -> int:
    """The first 4 bytes of SHA-256 over the Parsing Canonical Form, big-endian, with
    the top bit cleared (Confluent's ids are positive signed 32-bit integers)."""
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

    def __init__(
        self, schemas: list[Schema], subjects: Mapping[str, Sequence[Schema]] | None = None
    ) -> None:
        """``subjects``: the versions of each subject, oldest first (for the served
        registry API, ``schemas.registry_api``); their schemas are registered too."""
        self._memo = _IdMemo()
        self._by_id: dict[int, Any] = {}
        self._canonical_by_id: dict[int, str] = {}
        self._schema_by_id: dict[int, Schema] = {}
        self._subjects: dict[str, tuple[int, ...]] = {}
        for schema in schemas:
            self._add(schema)
        for subject, versions in (subjects or {}).items():
            # newest first, so a version that differs from a newer one only in docs or
            # defaults (the same id) is served, and listed, as that newer one
            newest_first = [self._add(s) for s in reversed(versions)]
            self._subjects[subject] = tuple(reversed(dict.fromkeys(newest_first)))

    def _add(self, schema: Schema) -> int:
        parsed = parse_schema(copy.deepcopy(schema))
        canonical = to_parsing_canonical_form(parsed)
        schema_id = _canonical_id(canonical)
        seen = self._canonical_by_id.get(schema_id)
        if seen is not None and seen != canonical:
            raise ValueError(f"schema id collision on {schema_id}; rename a record")
        if seen is None:
            self._by_id[schema_id] = parsed
            self._canonical_by_id[schema_id] = canonical
            self._schema_by_id[schema_id] = schema
        return schema_id

    @classmethod
    def from_files(cls, catalog: EventCatalog | None = None) -> FileSchemaRegistry:
        catalog = catalog if catalog is not None else default_catalog()
        # released versions too: records written before a schema change must still
        # decode. Subjects by record name (as ConfluentSchemaRegistry registers them),
        # released versions first, so the current file is each subject's latest.
        released = released_versions(catalog)
        subjects: dict[str, list[Schema]] = {
            t.subject: [*released.get(t.subject, []), t.schema] for t in catalog.values()
        }
        old_projections = released_projections()
        for name in PROJECTION_SCHEMA_FILES:
            current = load_named_schema(name)
            subject = f"{current['namespace']}.{current['name']}"
            subjects[subject] = [*old_projections.get(name, []), current]
        return cls([], subjects)

    def subjects(self) -> Mapping[str, tuple[int, ...]]:
        """Each subject's schema ids, oldest version first."""
        return self._subjects

    def schema_by_id(self, schema_id: int) -> Schema:
        """The schema as written in its file (docs, defaults), for readers of the API."""
        try:
            return self._schema_by_id[schema_id]
        except KeyError:
            raise UnknownSchemaError(f"no schema with id {schema_id}") from None

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
        return self._registered(subject, schema, None)

    def _registered(self, subject: str, schema: Schema, timeout_s: float | None) -> int:
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
            timeout=timeout_s if timeout_s is not None else self._http.timeout,
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

    def register_all(
        self, schemas: Mapping[str, Schema], workers: int = 4, timeout_s: float = 30.0
    ) -> None:
        """Register (or look up) ``subject -> schema`` all at once, a few in parallel.
        Each schema's first use costs a blocking round trip otherwise (about 0.2 s on
        Apicurio's kafkasql storage, on the collector's event loop). Registrations queue
        up in the registry when several services start together, hence the long timeout;
        each service takes the subjects in an order of its own, so that most of what it
        asks another one has registered already (a cheap lookup, not a write)."""
        items = random.sample(list(schemas.items()), len(schemas))
        pool = ThreadPoolExecutor(workers)
        try:
            for _ in pool.map(lambda item: self._registered(item[0], item[1], timeout_s), items):
                pass
        finally:  # after a failure, nothing more is asked: a registry that hangs costs
            pool.shutdown(cancel_futures=True)  # one timeout, not one per schema


def written_schemas(catalog: EventCatalog | None = None) -> dict[str, Schema]:
    """``subject -> schema`` for everything the services write: every event type's
    current schema and every projection's."""
    catalog = catalog if catalog is not None else default_catalog()
    written = {t.subject: t.schema for t in catalog.values()}
    for name in PROJECTION_SCHEMA_FILES:
        schema = load_named_schema(name)
        written[f"{schema['namespace']}.{schema['name']}"] = schema
    return written


def registry_for(url: str | None) -> SchemaRegistry:
    """The file registry, or a client of the registry at ``url`` with every schema the
    services write registered now. If that fails (the registry is not up yet), each is
    registered on first use, as it would be anyway."""
    if not url:
        return FileSchemaRegistry.from_files()
    registry = ConfluentSchemaRegistry(url)
    try:
        registry.register_all(written_schemas())
    except httpx.HTTPError as exc:
        log.warning("could not register the schemas at %s at start-up: %r", url, exc)
    return registry
