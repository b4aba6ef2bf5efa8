"""The collector's HTTP API.

Accepted means durable: 202 is answered only after Kafka acknowledged the write.
Rejected means explained and kept: every failing field is named, and the raw input
with the reasons is published to the dead-letter topic before answering.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from collector.enrichment import enrich, partition_key
from collector.publisher import PublishUnavailable
from learnstream.dead_letters import dead_letter
from learnstream.settings import Settings
from learnstream.topics import EVENTS_INVALID, EVENTS_RAW
from schemas.catalog import EventCatalog
from schemas.codec import encode
from schemas.registry import SchemaRegistry
from schemas.validation import Accepted, FieldError, parse_timestamp, validate_event

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
MAX_BATCH_BODY_BYTES = 5_000_000
MAX_BATCH_EVENTS = 500
RETRY_AFTER_S = "5"
Clock = Callable[[], datetime]


class Publisher(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, topic: str, key: bytes | None, value: bytes) -> None: ...
    async def is_ready(self) -> bool: ...


@dataclass(frozen=True)
class _Record:
    """An accepted event, encoded and ready for events.raw."""

    event_id: str
    key: bytes
    value: bytes


class _BadRequest(Exception):
    def __init__(self, status: int, errors: tuple[FieldError, ...]) -> None:
        super().__init__(errors)
        self.status = status
        self.errors = errors


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _errors(errors: tuple[FieldError, ...] | list[FieldError]) -> list[dict[str, str]]:
    return [{"field": e.field, "message": e.message} for e in errors]


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

    def parse_json(request: Request, body: bytes, limit: int) -> Any:
        """The parsed body, or a _BadRequest saying what is wrong with it."""
        content_type = request.headers.get("content-type", "application/json")
        if "json" not in content_type:
            raise _BadRequest(415, (FieldError("(body)", f"must be JSON, not {content_type}"),))
        if len(body) > limit:
            raise _BadRequest(413, (FieldError("(body)", f"larger than {limit} bytes"),))
        try:
            return json.loads(body)
        except ValueError as exc:
            raise _BadRequest(400, (FieldError("(body)", f"is not valid JSON: {exc}"),)) from None

    def prepare(payload: Any, received_at: datetime) -> _Record | tuple[FieldError, ...]:
        outcome = validate_event(catalog, payload, received_at)
        if not isinstance(outcome, Accepted):
            return outcome.errors
        event_type = outcome.event_type
        datum = enrich(event_type, outcome.datum, received_at)
        schema_id = registry.id_for(event_type.subject, event_type.schema)
        return _Record(
            datum["event_id"], partition_key(datum), encode(schema_id, event_type.parsed, datum)
        )

    async def publish_all(records: list[_Record]) -> None:
        # all in flight at once; any failure fails the request, and the client's retry
        # of the whole batch is safe because processors drop repeated event_ids
        await asyncio.gather(*(publisher.publish(raw_topic, r.key, r.value) for r in records))

    async def answer(
        raw: str, received_at: datetime, handle: Callable[[], Awaitable[JSONResponse]]
    ) -> JSONResponse:
        """Run one request's work: a bad request is explained and dead-lettered, and a
        Kafka that does not acknowledge becomes 503, never a 500 or a silent drop."""
        try:
            try:
                return await handle()
            except _BadRequest as bad:
                await reject(raw[:10_000], bad.errors, received_at)
                return JSONResponse({"errors": _errors(bad.errors)}, status_code=bad.status)
        except PublishUnavailable as exc:
            log.warning("publish failed: %s", exc)
            return _unavailable(str(exc))

    @app.post("/v1/events", status_code=202)
    async def post_event(request: Request) -> JSONResponse:
        received_at = clock()
        body = await request.body()
        raw = body.decode("utf-8", errors="replace")

        async def handle() -> JSONResponse:
            prepared = prepare(parse_json(request, body, MAX_BODY_BYTES), received_at)
            if not isinstance(prepared, _Record):
                await reject(raw, prepared, received_at)
                return JSONResponse({"errors": _errors(prepared)}, status_code=422)
            await publish_all([prepared])
            return JSONResponse(
                {"status": "accepted", "event_id": prepared.event_id}, status_code=202
            )

        return await answer(raw, received_at, handle)

    @app.post("/v1/events/batch", status_code=202)
    async def post_batch(request: Request) -> JSONResponse:
        """``{"sent_at": ..., "events": [...]}``: up to 500 events, accepted one by one."""
        received_at = clock()
        body = await request.body()
        raw = body.decode("utf-8", errors="replace")

        async def handle() -> JSONResponse:
            events, sent_at = _batch_shape(parse_json(request, body, MAX_BATCH_BODY_BYTES))
            records: list[_Record] = []
            rejected: list[dict[str, Any]] = []
            for index, event in enumerate(events):
                stamped = event
                if sent_at is not None and isinstance(event, dict) and "sent_at" not in event:
                    stamped = {**event, "sent_at": sent_at}
                prepared = prepare(stamped, received_at)
                if isinstance(prepared, _Record):
                    records.append(prepared)
                    continue
                event_id = event.get("event_id") if isinstance(event, dict) else None
                rejected.append({"index": index, "event_id": event_id, "errors": _errors(prepared)})
                await reject(json.dumps(event), prepared, received_at)  # as the client sent it
            await publish_all(records)
            return JSONResponse({"accepted": len(records), "rejected": rejected}, status_code=202)

        return await answer(raw, received_at, handle)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if await publisher.is_ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "kafka unreachable"}, status_code=503)

    return app


def _batch_shape(payload: Any) -> tuple[list[Any], str | None]:
    """The events list and batch-level sent_at, or a _BadRequest naming the problem."""
    if not isinstance(payload, dict):
        raise _BadRequest(422, (FieldError("(body)", "must be an object with 'events'"),))
    events = payload.get("events")
    if not isinstance(events, list):
        raise _BadRequest(422, (FieldError("events", "is required and must be an array"),))
    if len(events) > MAX_BATCH_EVENTS:
        raise _BadRequest(413, (FieldError("events", f"more than {MAX_BATCH_EVENTS} events"),))
    unknown = sorted(set(payload) - {"events", "sent_at"})
    if unknown:
        raise _BadRequest(422, tuple(FieldError(name, "unknown field") for name in unknown))
    sent_at = payload.get("sent_at")
    if sent_at is None:
        return events, None
    if not isinstance(sent_at, str):
        raise _BadRequest(422, (FieldError("sent_at", "must be an ISO 8601 string"),))
    try:
        parse_timestamp(sent_at)
    except ValueError as exc:
        message = f"is not a valid timestamp: {exc}"
        raise _BadRequest(422, (FieldError("sent_at", message),)) from None
    return events, sent_at
