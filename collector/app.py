"""The collector's HTTP API.

Accepted means durable: 202 is answered only after Kafka acknowledged the write.
Rejected means explained and kept: 422 names each failing field, and the raw input
with the reasons is published to the dead-letter topic before answering.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from collector.dead_letters import dead_letter
from collector.enrichment import enrich, partition_key
from collector.publisher import PublishUnavailable
from learnstream.settings import Settings
from learnstream.topics import EVENTS_INVALID, EVENTS_RAW
from schemas.catalog import EventCatalog
from schemas.codec import encode
from schemas.registry import SchemaRegistry
from schemas.validation import Accepted, FieldError, validate_event

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
RETRY_AFTER_S = "5"
Clock = Callable[[], datetime]


class Publisher(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, topic: str, key: bytes | None, value: bytes) -> None: ...
    async def is_ready(self) -> bool: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _errors_body(errors: tuple[FieldError, ...] | list[FieldError]) -> dict[str, Any]:
    return {"errors": [{"field": e.field, "message": e.message} for e in errors]}


def _unavailable(reason: str) -> JSONResponse:
    return JSONResponse(
        {"error": "event store unavailable, retry later", "detail": reason},
        status_code=503,
        headers={"Retry-After": RETRY_AFTER_S},
    )


def create_app(
    settings: Settings,
    catalog: EventCatalog,
    registry: SchemaRegistry,
    publisher: Publisher,
    clock: Clock = _utc_now,
) -> FastAPI:
    raw_topic = settings.topic(EVENTS_RAW)
    invalid_topic = settings.topic(EVENTS_INVALID)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await publisher.start()
        try:
            yield
        finally:
            await publisher.stop()

    app = FastAPI(title="learnstream collector", version="1", lifespan=lifespan)

    async def reject(raw: str, errors: tuple[FieldError, ...], received_at: datetime) -> None:
        await publisher.publish(invalid_topic, None, dead_letter(raw, errors, received_at))

    @app.post("/v1/events", status_code=202)
    async def post_event(request: Request) -> JSONResponse:
        received_at = clock()
        body = await request.body()
        raw = body.decode("utf-8", errors="replace")
        try:
            if len(body) > MAX_BODY_BYTES:
                errors: tuple[FieldError, ...] = (
                    FieldError("(body)", f"larger than {MAX_BODY_BYTES} bytes"),
                )
                await reject(raw[:10_000], errors, received_at)
                return JSONResponse(_errors_body(errors), status_code=413)
            try:
                payload = json.loads(body)
            except ValueError as exc:
                errors = (FieldError("(body)", f"is not valid JSON: {exc}"),)
                await reject(raw, errors, received_at)
                return JSONResponse(_errors_body(errors), status_code=400)
            outcome = validate_event(catalog, payload, received_at)
            if not isinstance(outcome, Accepted):
                await reject(raw, outcome.errors, received_at)
                return JSONResponse(_errors_body(outcome.errors), status_code=422)
            event_type = outcome.event_type
            datum = enrich(event_type, outcome.datum, received_at)
            schema_id = registry.id_for(event_type.subject, event_type.schema)
            await publisher.publish(
                raw_topic, partition_key(datum), encode(schema_id, event_type.parsed, datum)
            )
        except PublishUnavailable as exc:
            log.warning("publish failed: %s", exc)
            return _unavailable(str(exc))
        return JSONResponse({"status": "accepted", "event_id": datum["event_id"]}, status_code=202)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if await publisher.is_ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "kafka unreachable"}, status_code=503)

    return app
