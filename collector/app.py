"""The collector's HTTP API.

Accepted means durable: 202 is answered only after Kafka acknowledged the write.
Rejected means explained and kept: every failing field is named, and the raw input
with the reasons is published to the dead-letter topic before answering.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from collector import api_docs
from collector.auth import USER_TOKEN_HEADER, Authenticator, AuthError, Caller, bind_to_caller
from collector.body import (
    BodyError,
    JsonBody,
    check_media_type,
    gunzip_limited,
    is_gzipped,
    may_hold_surrogates,
    parse_json_sound,
    read_limited,
    shape_problem,
)
from collector.cors import install_cors
from collector.enrichment import (
    EnrichmentPolicy,
    Sender,
    enrich,
    parsed_user_agent,
    partition_key,
)
from collector.metrics import CONTENT_TYPE, CollectorMetrics
from collector.publisher import PublishUnavailable
from learnstream.dead_letters import bounded_errors, dead_letter
from learnstream.settings import Settings
from learnstream.topics import EVENTS_INVALID, EVENTS_RAW
from schemas.catalog import EventCatalog
from schemas.codec import compiled_writer, encode
from schemas.registry import SchemaRegistry
from schemas.validation import (
    Accepted,
    FieldError,
    compiled_validator,
    parse_timestamp,
    validate_event,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
MAX_BATCH_BODY_BYTES = 5_000_000
MAX_BATCH_EVENTS = 500
# One encoded event must fit in one Kafka record (1 MB by default) with room to spare.
MAX_EVENT_BYTES = 900_000
RETRY_AFTER_S = "5"
Clock = Callable[[], datetime]


class Publisher(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, topic: str, key: bytes | None, value: bytes) -> None: ...
    async def publish_all(
        self, topic: str, records: Sequence[tuple[bytes | None, bytes]]
    ) -> None: ...
    async def is_ready(self) -> bool: ...


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 3x, per event
class _Record:
    """An accepted event, encoded and ready for events.raw."""

    event_id: str
    key: bytes
    value: bytes


@dataclass(frozen=True)
class _Refusal:
    """Why one event was not accepted, and the status a single post answers with."""

    status: int
    reason: str  # the metrics label
    errors: tuple[FieldError, ...]


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str, errors: tuple[FieldError, ...]) -> None:
        super().__init__(errors)
        self.status = status
        self.reason = reason
        self.errors = errors


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _errors(errors: tuple[FieldError, ...] | list[FieldError]) -> list[dict[str, str]]:
    return [{"field": e.field, "message": e.message} for e in bounded_errors(errors)]


class _Json(JSONResponse):
    """JSON written by orjson, several times faster than the standard encoder Starlette
    uses; the standard one still writes what orjson refuses (a lone surrogate)."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except (orjson.JSONEncodeError, TypeError):
            return super().render(content)


def _direct(endpoint: Callable[[Request], Awaitable[Response]]) -> ASGIApp:
    """The endpoint as a bare ASGI app: the request goes straight to it, without the
    per-request work FastAPI's handler does for parameters, dependencies and response
    models, none of which the event endpoints use (they read the Request themselves).
    Routing, middleware and the OpenAPI document are FastAPI's as before."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


class _CollectorApp(FastAPI):
    """FastAPI, with the event endpoints reached directly while the app has no middleware
    of its own: ten framework layers (error and exception middleware, telemetry, body
    limit, exit stacks, routing) cost single-event posts 14 % of their CPU (py-spy,
    BENCHMARKS.md) and do nothing for them. With middleware added (CORS, say) every
    request takes the full stack again, so the middleware applies."""

    direct_routes: dict[str, ASGIApp]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not self.user_middleware:
            direct = self.direct_routes.get(scope["path"])
            if direct is not None:
                scope["app"] = self
                await direct(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _warm_up(catalog: EventCatalog) -> None:
    """Build what the first events would otherwise build while their requests wait: the
    user-agent parser (its rules take about a second to load) and each event type's
    compiled validator and Avro writer."""
    parsed_user_agent("Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0")
    for event_type in catalog.values():
        compiled_validator(event_type.schema)
        compiled_writer(event_type.parsed)


def _unavailable(reason: str) -> JSONResponse:
    return _Json(
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
    if settings.environment == "production" and not settings.write_keys:
        raise ValueError(
            "production needs LEARNSTREAM_WRITE_KEYS: an open collector accepts anyone"
        )
    raw_topic = settings.topic(EVENTS_RAW)
    invalid_topic = settings.topic(EVENTS_INVALID)
    authenticator = Authenticator(settings.write_keys, settings.user_token_secrets)
    policy = EnrichmentPolicy(ip_handling=settings.client_ip)
    clock_skew_tolerance = timedelta(seconds=settings.clock_skew_tolerance_s)
    metrics = CollectorMetrics()
    schema_ids: dict[str, int] = {}  # event type -> its schema's registry id

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # the user-agent rules and every event type's validator and writer are built on
        # first use: build them now, not while the first requests wait
        _warm_up(catalog)
        await publisher.start()
        try:
            yield
        finally:
            await publisher.stop()

    app = _CollectorApp(
        title="learnstream collector",
        version="1",
        description=api_docs.DESCRIPTION,
        lifespan=lifespan,
    )
    install_cors(app, settings)  # browsers on other origins (LEARNSTREAM_CORS_ALLOWED_ORIGINS)

    async def reject(
        raw: str,
        reason: str,
        errors: tuple[FieldError, ...],
        received_at: datetime,
        key: str | None,
        event_id: str | None = None,
    ) -> None:
        """Dead-letter a refusal; the same refusal sent again (a batch re-posted after a
        503) gets the same letter_id, by its event_id or else its exact input, and the
        sink keeps one."""
        metrics.rejected.labels(reason).inc()
        letter = dead_letter(raw, errors, received_at, key_id=key, event_id=event_id)
        await publisher.publish(invalid_topic, None, letter)

    def sender_of(request: Request) -> Sender:
        ip = request.client.host if request.client else None
        if settings.forwarded_for_header:
            forwarded = request.headers.get(settings.forwarded_for_header)
            ip = forwarded.split(",")[0].strip() if forwarded else ip
        return Sender(ip=ip, user_agent=request.headers.get("user-agent"))

    def caller_of(request: Request) -> Caller:
        return authenticator.caller(
            request.headers.get("authorization"), request.headers.get(USER_TOKEN_HEADER)
        )

    async def read_json(request: Request, limit: int) -> JsonBody:
        """The parsed body, or a BodyError that holds what was read: the body is read
        (bounded) before it is judged, so even a refused one is kept as sent."""
        headers = request.headers
        body = await read_limited(request.stream(), headers.get("content-length"), limit)
        try:
            check_media_type(headers.get("content-type"))
            if is_gzipped(headers.get("content-encoding")):
                body = gunzip_limited(body, limit)
            value, sound = parse_json_sound(body)
            return JsonBody(value, body, may_hold_surrogates(body), sound)
        except BodyError as refused:
            refused.raw = refused.raw or body
            raise

    def prepare(
        payload: Any,
        body: JsonBody,
        received_at: datetime,
        caller: Caller,
        sender: Sender,
        batch_sent_at: str | None = None,
    ) -> _Record | _Refusal:
        if not body.sound and (problem := shape_problem(payload, check_text=body.check_text)):
            return _Refusal(400, "malformed_json", (FieldError("(event)", problem),))
        if batch_sent_at is not None and isinstance(payload, dict) and "sent_at" not in payload:
            payload = {**payload, "sent_at": batch_sent_at}  # the event's own wins
        bound = bind_to_caller(caller, payload)
        if isinstance(bound, tuple):
            return _Refusal(403, "forbidden", bound)
        outcome = validate_event(catalog, bound, received_at, clock_skew_tolerance)
        if not isinstance(outcome, Accepted):
            return _Refusal(422, "invalid_event", outcome.errors)
        event_type = outcome.event_type
        datum = enrich(event_type, outcome.datum, received_at, sender, policy)
        schema_id = schema_ids.get(event_type.name)
        if schema_id is None:  # once per event type: the registry's memo costs 1 µs a call
            schema_id = schema_ids[event_type.name] = registry.id_for(
                event_type.subject, event_type.schema
            )
        value = encode(schema_id, event_type.parsed, datum)
        if len(value) > MAX_EVENT_BYTES:  # Kafka would refuse it, and every retry of it
            error = FieldError(
                "(event)", f"is {len(value)} bytes encoded; at most {MAX_EVENT_BYTES}"
            )
            return _Refusal(413, "too_large", (error,))
        return _Record(datum["event_id"], partition_key(datum), value)

    async def publish_all(records: list[_Record], received_at: datetime) -> None:
        # all in flight at once, answered after the last ack; any failure fails the
        # request, and the client's retry of the whole batch is safe because processors
        # drop repeated event_ids
        await publisher.publish_all(raw_topic, [(r.key, r.value) for r in records])
        metrics.accepted.inc(len(records))
        metrics.publish_seconds.observe((clock() - received_at).total_seconds())

    async def answer(
        request: Request,
        limit: int,
        handle: Callable[[JsonBody, datetime, Caller, Sender], Awaitable[JSONResponse]],
    ) -> JSONResponse:
        """Run one request's work: a refused request is explained and dead-lettered, and
        a Kafka that does not acknowledge becomes 503, never a 500 or a silent drop."""
        received_at = clock()
        key: str | None = None
        body: JsonBody | None = None
        try:
            try:
                # the body is read (bounded) even for an unknown caller: its dead letter
                # keeps what was sent
                refused_caller: AuthError | None = None
                try:
                    caller = caller_of(request)
                    key = caller.key_id
                except AuthError as refused:
                    refused_caller = refused
                body = await read_json(request, limit)
                if refused_caller is not None:
                    raise refused_caller
                return await handle(body, received_at, caller, sender_of(request))
            except AuthError as refused:
                error = FieldError("Authorization", refused.message)
                reason = "unauthenticated" if refused.status == 401 else "forbidden"
                await reject(body.text if body else "", reason, (error,), received_at, key)
                return _Json({"errors": _errors((error,))}, status_code=refused.status)
            except BodyError as bad:
                error = FieldError("(body)", bad.message)
                raw = bad.raw.decode("utf-8", errors="replace")  # what was read of it
                await reject(raw, bad.reason, (error,), received_at, key)
                return _Json({"errors": _errors((error,))}, status_code=bad.status)
            except _BadRequest as bad:
                await reject(body.text if body else "", bad.reason, bad.errors, received_at, key)
                return _Json({"errors": _errors(bad.errors)}, status_code=bad.status)
        except PublishUnavailable as exc:
            log.warning("publish failed: %s", exc)
            metrics.rejected.labels("unavailable").inc()
            return _unavailable(str(exc))

    @app.post("/v1/events", status_code=202, **api_docs.SINGLE)
    async def post_event(request: Request) -> JSONResponse:
        """Validate, enrich and durably store one event."""

        async def handle(
            body: JsonBody, received_at: datetime, caller: Caller, sender: Sender
        ) -> JSONResponse:
            prepared = prepare(body.value, body, received_at, caller, sender)
            if isinstance(prepared, _Refusal):
                await reject(
                    body.text, prepared.reason, prepared.errors, received_at, caller.key_id
                )
                return _Json({"errors": _errors(prepared.errors)}, prepared.status)
            await publish_all([prepared], received_at)
            return _Json({"status": "accepted", "event_id": prepared.event_id}, status_code=202)

        return await answer(request, MAX_BODY_BYTES, handle)

    @app.post("/v1/events/batch", status_code=202, **api_docs.BATCH)
    async def post_batch(request: Request) -> JSONResponse:
        """Up to 500 events, accepted or rejected one by one."""

        async def handle(
            body: JsonBody, received_at: datetime, caller: Caller, sender: Sender
        ) -> JSONResponse:
            events, sent_at = _batch_shape(body.value)
            metrics.batch_size.observe(len(events))
            records: list[_Record] = []
            rejected: list[dict[str, Any]] = []
            for index, event in enumerate(events):
                prepared = prepare(event, body, received_at, caller, sender, sent_at)
                if isinstance(prepared, _Record):
                    records.append(prepared)
                    continue
                event_id = event.get("event_id") if isinstance(event, dict) else None
                # echoed only if it can be an id: short ASCII text ("\ud800" cannot be
                # encoded as JSON's UTF-8, and [[Infinity]] not at all)
                if not isinstance(event_id, str) or len(event_id) > 64 or not event_id.isascii():
                    event_id = None
                errors = _errors(prepared.errors)
                rejected.append({"index": index, "event_id": event_id, "errors": errors})
                # the event as the client sent it
                await reject(
                    json.dumps(event, ensure_ascii=False),
                    prepared.reason,
                    prepared.errors,
                    received_at,
                    caller.key_id,
                    event_id,
                )
            await publish_all(records, received_at)
            return _Json({"accepted": len(records), "rejected": rejected}, status_code=202)

        return await answer(request, MAX_BATCH_BODY_BYTES, handle)

    app.direct_routes = {}
    for route in app.routes:
        if isinstance(route, APIRoute) and route.endpoint in (post_event, post_batch):
            # with middleware, the route still skips FastAPI's per-request parameter work
            route.app = app.direct_routes[route.path] = _direct(route.endpoint)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if await publisher.is_ready():
            return _Json({"status": "ready"})
        return _Json({"status": "kafka unreachable"}, status_code=503)

    @app.get("/metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus text format: accepted, rejected by reason, publish latency, batch sizes."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    return app


def _batch_shape(payload: Any) -> tuple[list[Any], str | None]:
    """The events list and batch-level sent_at, or a _BadRequest naming the problem."""
    if not isinstance(payload, dict):
        raise _BadRequest(
            422, "invalid_event", (FieldError("(body)", "must be an object with 'events'"),)
        )
    events = payload.get("events")
    if not isinstance(events, list):
        raise _BadRequest(
            422, "invalid_event", (FieldError("events", "is required and must be an array"),)
        )
    if len(events) > MAX_BATCH_EVENTS:
        raise _BadRequest(
            413, "too_large", (FieldError("events", f"more than {MAX_BATCH_EVENTS} events"),)
        )
    wrapper = {name: value for name, value in payload.items() if name != "events"}
    if (problem := shape_problem(wrapper)) is not None:  # the events: one by one, later
        raise _BadRequest(400, "malformed_json", (FieldError("(body)", problem),))
    if (duplicate := getattr(payload, "duplicate", None)) is not None:
        message = f"has the key {duplicate!r} more than once"
        raise _BadRequest(400, "malformed_json", (FieldError("(body)", message),))
    unknown = sorted(set(payload) - {"events", "sent_at"})
    if unknown:
        raise _BadRequest(
            422, "invalid_event", tuple(FieldError(name, "unknown field") for name in unknown)
        )
    sent_at = payload.get("sent_at")
    if sent_at is None:
        return events, None
    if not isinstance(sent_at, str):
        raise _BadRequest(
            422, "invalid_event", (FieldError("sent_at", "must be an ISO 8601 string"),)
        )
    try:
        parse_timestamp(sent_at)
    except ValueError as exc:
        message = f"is not a valid timestamp: {exc}"
        raise _BadRequest(422, "invalid_event", (FieldError("sent_at", message),)) from None
    return events, sent_at
