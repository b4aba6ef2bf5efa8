"""The file-backed registry, served as the Confluent Schema Registry's read API.

A consuming service then needs no copy of ``schemas/``: a stock Confluent client
(``confluent_kafka.schema_registry.avro.AvroDeserializer`` and its peers in Java, Go,
JavaScript) resolves the id in each record's framing here, as it would on a Confluent
server. Ids are the file registry's (canonical-form fingerprints), so they are the ids
already on the topics.

Subjects, read-only:

- by record name (RecordNameStrategy), e.g. ``learnstream.events.QuizCompleted`` and
  ``learnstream.projections.UserProgress``: released versions first, the current file
  last (``latest``). ``ConfluentSchemaRegistry`` registers under these names too.
- by topic (TopicNameStrategy), ``<topic>-value`` for every topic whose values are Avro:
  a projection topic's subject has the versions of its record; ``events.raw``,
  ``events.clean`` and ``events.derived`` carry many event types, so their subject is a
  union of every event record (``events.derived`` holds only the derived kinds, a
  subset), by schema references: the layout Confluent documents for several event types
  in one topic. Keys are UTF-8 strings, not Avro: no ``-key`` subjects.
  ``events.invalid`` and ``requests.erasure`` hold JSON.

The API is the read half of Confluent's (plus the lookup ``POST /subjects/{subject}``,
which registers nothing); writes are not served (405).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from learnstream.topics import (
    EVENTS_CLEAN,
    EVENTS_DERIVED,
    EVENTS_RAW,
    PROJECTION_SCHEMAS,
)
from schemas.catalog import EVENT_NAMESPACE, load_named_schema
from schemas.registry import FileSchemaRegistry, fingerprint_id

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
# where the sink's read API serves it: a client's registry URL is <read API>/schema-registry
SCHEMA_REGISTRY_PATH = "/schema-registry"
# What the file registry guarantees between a subject's versions: the test suite checks
# that the current schema reads every released one (schemas.evolution).
COMPATIBILITY = "BACKWARD"
EVENT_TOPICS = (EVENTS_RAW, EVENTS_CLEAN, EVENTS_DERIVED)
PROJECTION_TOPIC_SCHEMAS = PROJECTION_SCHEMAS  # learnstream.topics: one map for both
_MAX_VERSION = 2**31 - 1


@dataclass(frozen=True)
class Registered:
    """One schema as the API shows it: its text and the named schemas it refers to."""

    schema_id: int
    text: str
    references: tuple[dict[str, Any], ...] = ()

    def body(self) -> dict[str, Any]:
        # Confluent leaves schemaType out for AVRO, and references out when there are none
        found: dict[str, Any] = {"schema": self.text}
        if self.references:
            found["references"] = list(self.references)
        return found


@dataclass
class RegistryView:
    """Subjects and ids as served: the file registry's, plus one subject per topic."""

    registry: FileSchemaRegistry
    topic: Callable[[str], str] = field(default=lambda name: name)  # Settings.topic

    @cached_property
    def subjects(self) -> Mapping[str, tuple[int, ...]]:
        """Each subject's schema ids, version 1 first."""
        by_record = dict(self.registry.subjects())
        served = dict(by_record)
        for topic, schema_file in PROJECTION_TOPIC_SCHEMAS.items():
            schema = load_named_schema(schema_file)
            served[f"{self.topic(topic)}-value"] = by_record[
                f"{schema['namespace']}.{schema['name']}"
            ]
        union = self._event_union
        for topic in EVENT_TOPICS:
            served[f"{self.topic(topic)}-value"] = (union.schema_id,)
        return dict(sorted(served.items()))

    @cached_property
    def _event_union(self) -> Registered:
        records = sorted(s for s in self.registry.subjects() if s.startswith(EVENT_NAMESPACE + "."))
        references = tuple(
            {"name": s, "subject": s, "version": len(self.registry.subjects()[s])} for s in records
        )
        text = json.dumps(records, separators=(",", ":"))
        identity = json.dumps([text, references], sort_keys=True).encode()
        schema_id = int.from_bytes(hashlib.sha256(identity).digest()[:4], "big") & 0x7FFFFFFF
        if self._file_schema(schema_id) is not None:
            raise ValueError(f"schema id collision on {schema_id} for the event topics' union")
        return Registered(schema_id, text, references)

    def _file_schema(self, schema_id: int) -> Registered | None:
        try:
            schema = self.registry.schema_by_id(schema_id)
        except LookupError:
            return None
        return Registered(schema_id, json.dumps(schema, separators=(",", ":")))

    def by_id(self, schema_id: int) -> Registered | None:
        if schema_id == self._event_union.schema_id:
            return self._event_union
        return self._file_schema(schema_id)

    def uses_of(self, schema_id: int) -> list[tuple[str, int]]:
        """(subject, version) for every subject version with this id."""
        return [
            (subject, number)
            for subject, ids in self.subjects.items()
            for number, found in enumerate(ids, start=1)
            if found == schema_id
        ]

    def matching_version(self, subject: str, text: str) -> int | None:
        """The version of ``subject`` whose schema is ``text`` (by canonical form)."""
        ids = self.subjects[subject]
        union = self._event_union
        if ids == (union.schema_id,):
            return 1 if _same_json(text, union.text) else None
        try:
            wanted = fingerprint_id(json.loads(text))
        except Exception:  # not JSON, or not a schema: it matches nothing here
            return None
        return ids.index(wanted) + 1 if wanted in ids else None


def _same_json(a: str, b: str) -> bool:
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return False


def _answer(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE)


def _error(status: int, code: int, message: str) -> JSONResponse:
    return _answer({"error_code": code, "message": message}, status)


def _subject_missing(subject: str) -> JSONResponse:
    return _error(404, 40401, f"Subject '{subject}' not found.")


def _schema_missing(schema_id: str | int) -> JSONResponse:
    return _error(404, 40403, f"Schema {schema_id} not found.")


def _version_index(version: str, count: int) -> int | JSONResponse:
    """0-based index of ``version`` (a number, ``latest`` or -1) among ``count``."""
    if version in ("latest", "-1"):
        return count - 1
    number = int(version) if version.isdigit() else 0
    if not 1 <= number <= _MAX_VERSION:
        return _error(
            422,
            42202,
            f"The specified version '{version}' is not a valid version id. Allowed values are "
            f'between [1, {_MAX_VERSION}] and the string "latest"',
        )
    if number > count:
        return _error(404, 40402, f"Version {version} not found.")
    return number - 1


def registry_router(view: Callable[[], RegistryView], prefix: str = "") -> APIRouter:
    """The read API on ``view()`` (called per request; cache it: building a view loads
    every schema file, which a process serving other things should do only when asked)."""
    router = APIRouter(prefix=prefix, tags=["schema registry"])

    def version_of(subject: str, version: str) -> tuple[int, Registered] | JSONResponse:
        served = view()
        ids = served.subjects.get(subject)
        if ids is None:
            return _subject_missing(subject)
        index = _version_index(version, len(ids))
        if isinstance(index, JSONResponse):
            return index
        found = served.by_id(ids[index])
        assert found is not None  # every subject version's id is served
        return index + 1, found

    @router.get("/schemas/ids/{schema_id}")
    async def schema_by_id(schema_id: str) -> JSONResponse:
        """The schema for an id on the wire; ``subject`` and ``format`` are accepted and
        need nothing here (one context, one format)."""
        found = view().by_id(int(schema_id)) if schema_id.isdigit() else None
        return _schema_missing(schema_id) if found is None else _answer(found.body())

    @router.get("/schemas/ids/{schema_id}/schema")
    async def schema_text_by_id(schema_id: str) -> JSONResponse:
        found = view().by_id(int(schema_id)) if schema_id.isdigit() else None
        if found is None:
            return _schema_missing(schema_id)
        return _answer(json.loads(found.text))

    @router.get("/schemas/ids/{schema_id}/subjects")
    async def subjects_of_id(schema_id: str) -> JSONResponse:
        uses = view().uses_of(int(schema_id)) if schema_id.isdigit() else []
        if not uses:
            return _schema_missing(schema_id)
        return _answer(sorted({subject for subject, _ in uses}))

    @router.get("/schemas/ids/{schema_id}/versions")
    async def versions_of_id(schema_id: str) -> JSONResponse:
        uses = view().uses_of(int(schema_id)) if schema_id.isdigit() else []
        if not uses:
            return _schema_missing(schema_id)
        return _answer([{"subject": s, "version": v} for s, v in uses])

    @router.get("/schemas/types")
    async def schema_types() -> JSONResponse:
        return _answer(["AVRO"])

    @router.get("/subjects")
    async def subjects(prefix: str = Query("", alias="subjectPrefix")) -> JSONResponse:
        return _answer([s for s in view().subjects if s.startswith(prefix)])

    @router.get("/subjects/{subject}/versions")
    async def versions(subject: str) -> JSONResponse:
        ids = view().subjects.get(subject)
        if ids is None:
            return _subject_missing(subject)
        return _answer(list(range(1, len(ids) + 1)))

    @router.get("/subjects/{subject}/versions/{version}")
    async def subject_version(subject: str, version: str) -> JSONResponse:
        found = version_of(subject, version)
        if isinstance(found, JSONResponse):
            return found
        number, registered = found
        body = {"subject": subject, "version": number, "id": registered.schema_id}
        return _answer({**body, **registered.body()})

    @router.get("/subjects/{subject}/versions/{version}/schema")
    async def subject_version_schema(subject: str, version: str) -> JSONResponse:
        found = version_of(subject, version)
        if isinstance(found, JSONResponse):
            return found
        return _answer(json.loads(found[1].text))

    @router.post("/subjects/{subject}")
    async def lookup(subject: str, request: Request) -> JSONResponse:
        """Whether a schema is registered under ``subject`` (a read: nothing is
        registered here). The serializers' ``use.latest.version`` asks this."""
        served = view()
        if subject not in served.subjects:
            return _subject_missing(subject)
        try:
            text = (await request.json())["schema"]
        except (ValueError, KeyError, TypeError):
            return _error(422, 42201, 'Invalid schema: the body must be {"schema": "..."}')
        number = served.matching_version(subject, str(text))
        if number is None:
            return _error(404, 40403, "Schema not found")
        registered = served.by_id(served.subjects[subject][number - 1])
        assert registered is not None
        body = {"subject": subject, "version": number, "id": registered.schema_id}
        return _answer({**body, **registered.body()})

    @router.get("/config")
    async def config() -> JSONResponse:
        return _answer({"compatibilityLevel": COMPATIBILITY})

    @router.get("/config/{subject}")
    async def subject_config(
        subject: str, to_global: bool = Query(False, alias="defaultToGlobal")
    ) -> JSONResponse:
        if subject not in view().subjects:
            return _subject_missing(subject)
        if to_global:
            return _answer({"compatibilityLevel": COMPATIBILITY})
        return _error(
            404,
            40408,
            f"Subject '{subject}' does not have subject-level compatibility configured",
        )

    @router.get("/mode")
    async def mode() -> JSONResponse:
        return _answer({"mode": "READONLY"})

    return router


def file_registry_router(
    topic: Callable[[str], str] = lambda name: name, prefix: str = ""
) -> APIRouter:
    """The read API on the schema files, built on first request. ``topic`` names a
    topic as deployed (``Settings.topic``: with its prefix)."""
    built: list[RegistryView] = []

    def view() -> RegistryView:
        if not built:
            built.append(RegistryView(FileSchemaRegistry.from_files(), topic))
        return built[0]

    return registry_router(view, prefix)


def registry_router_for(
    topic: Callable[[str], str], remote_url: str | None, prefix: str = ""
) -> APIRouter:
    """The sink's: the schema files, unless the deployment uses a registry server
    (``LEARNSTREAM_SCHEMA_REGISTRY_URL``). Then the ids on the wire are that server's and
    only it can resolve them, so every path here says where to look instead."""
    if remote_url is None:
        return file_registry_router(topic, prefix)
    router = APIRouter(prefix=prefix, tags=["schema registry"])

    @router.get("/{path:path}")
    async def elsewhere(path: str) -> JSONResponse:
        message = f"this deployment's schemas are in the registry at {remote_url}"
        return _error(404, 40401 if path.startswith("subjects") else 40403, message)

    return router
