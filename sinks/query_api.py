"""The read API, served by the sink process.

chdb takes a lock on its data folder, so while the sink runs it is the only process
that can open it; the apps' learner reads and the analysts' SQL therefore go through
this process. Against a ClickHouse server analysts can equally use any client, with
the row policies ``learnstream row-policies`` generates.

Every request names its reader with a reader token (see ``sinks.access``); each query
carries that reader's access condition. Raw SQL is for system administrators only, and
goes through the analysts' door (``sinks.analyst_sql``). Reads run on ClickHouse sessions
of their own (``sinks.read_sessions``), never on the sink's ingest client.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any

from clickhouse_connect.driver.exceptions import DatabaseError
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from learnstream.erasure import ErasureRequest
from schemas.registry_api import SCHEMA_REGISTRY_PATH, file_registry_router
from sinks.access import AccessError, Principal, Role, principal_from_token
from sinks.analyst_sql import QueryRefused
from sinks.dashboard_api import dashboard_router
from sinks.learner_reads import MAX_OFFSET, MAX_PAGE, PERIOD_DAYS, LearnerReads, jsonable
from sinks.read_sessions import Busy, ReadSessions
from sinks.writer import ClickHouseWriter


def _reader(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    """The reader a request's token names (see sinks.access)."""
    try:
        return principal_from_token(authorization, request.app.state.reader_token_secret)
    except AccessError as exc:
        raise HTTPException(exc.status, exc.message) from None


Reader = Annotated[Principal, Depends(_reader)]
# what ClickHouse's Date holds; the day windows are built from it
AsOf = Annotated[
    date | None,
    Query(
        ge=date(1970, 1, 1),
        le=date(2149, 6, 6),
        description="last day considered; today (UTC) if unset",
    ),
]
_SQL_BODY = {
    "requestBody": {
        "required": True,
        "content": {"text/plain": {"schema": {"type": "string", "description": "SQL"}}},
    }
}


def create_query_app(
    writer: ClickHouseWriter,
    sessions: ReadSessions,
    reader_token_secret: str | None = None,
    request_erasure: Callable[[ErasureRequest], Awaitable[None]] | None = None,
    unready_reason: Callable[[], str | None] | None = None,
    schema_registry: APIRouter | None = None,
) -> FastAPI:
    """``writer`` writes the audit log; ``sessions`` run every read.
    ``request_erasure`` publishes an erasure request (on requests.erasure).
    ``unready_reason`` says why the sink cannot store events right now, if it cannot."""
    app = FastAPI(title="learnstream read API", version="1")
    reads = LearnerReads(sessions.learner, sessions.database, writer)
    app.include_router(dashboard_router(sessions, _reader))  # /dashboard/, /v1/dashboard/*
    # the schema files as a Confluent registry, for consumers (schemas.registry_api);
    # the caller's router names the topics as deployed (with their prefix)
    app.include_router(schema_registry or file_registry_router(prefix=SCHEMA_REGISTRY_PATH))

    app.state.reader_token_secret = reader_token_secret

    async def learner(who: Principal, user_id: str) -> str:
        """The learner a path names (``me``: the reader), if the reader may see them."""
        target = who.user_id if user_id == "me" else user_id
        if who.role is Role.STUDENT and target != who.user_id:
            raise HTTPException(403, "a student may read only their own data")
        if not await reads.visible(who, target):
            raise HTTPException(404, f"no learner {target!r} in your scope")
        return target

    async def run_sql(who: Principal, sql: str) -> JSONResponse:
        if who.role is not Role.SYSTEM_ADMIN:
            raise HTTPException(403, "raw SQL is for system administrators; use the learner reads")
        try:
            columns, rows = await sessions.analyst_query(sql)
        except Busy as exc:
            message = f"too many analysts' queries at once ({exc}); try again shortly"
            return JSONResponse({"error": message}, status_code=429, headers={"Retry-After": "1"})
        except QueryRefused as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except DatabaseError as exc:  # ClickHouse did not answer
            return JSONResponse({"error": f"ClickHouse is unavailable: {exc}"}, status_code=503)
        return JSONResponse({"columns": columns, "rows": [jsonable(r) for r in rows]})

    @app.get("/v1/query")
    async def query_get(
        who: Reader, sql: str = Query(..., description="read-only SQL")
    ) -> JSONResponse:
        return await run_sql(who, sql)

    @app.post("/v1/query", openapi_extra=_SQL_BODY)
    async def query_post(who: Reader, request: Request) -> JSONResponse:
        """The SQL is the body, as UTF-8 text, whatever the content type says (curl
        --data-binary sends a form type)."""
        try:
            sql = (await request.body()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HTTPException(400, f"the SQL body is not UTF-8 text: {exc}") from None
        return await run_sql(who, sql)

    @app.get("/v1/learners/{user_id}/sessions/history", tags=["sessions"])
    async def session_history(
        who: Reader,
        user_id: str,
        limit: int = Query(20, ge=1, le=MAX_PAGE),
        offset: int = Query(0, ge=0, le=MAX_OFFSET),
        session_type: str | None = Query(None),
    ) -> dict[str, Any]:
        """A learner's sessions, newest first, a page at a time (at most 100)."""
        target = await learner(who, user_id)
        return await reads.history(who, target, limit, offset, session_type)

    @app.get("/v1/learners/{user_id}/sessions/stats", tags=["sessions"])
    async def session_stats(
        who: Reader,
        user_id: str,
        period: str = Query("week", pattern=f"^({'|'.join(PERIOD_DAYS)})$"),
        as_of: AsOf = None,
    ) -> dict[str, Any]:
        """Totals, averages, per-type breakdown, daily trend, common topics, weak areas."""
        target = await learner(who, user_id)
        return await reads.stats(who, target, period, as_of or datetime.now(UTC).date())

    @app.get("/v1/learners/{user_id}/sessions/warmup", tags=["sessions"])
    async def session_warmup(who: Reader, user_id: str, as_of: AsOf = None) -> dict[str, Any]:
        """Focus areas and vocabulary from the last 7 days, and the last session."""
        target = await learner(who, user_id)
        return await reads.warmup(who, target, as_of or datetime.now(UTC).date())

    @app.get("/v1/learners/{user_id}/blind-spots", tags=["learners"])
    async def learner_blind_spots(who: Reader, user_id: str) -> dict[str, Any]:
        target = await learner(who, user_id)
        found = await reads.blind_spots(who, target)
        return found or {"user_id": target, "blind_spots": []}

    @app.get("/v1/learners/{user_id}/state", tags=["learners"])
    async def learner_state(who: Reader, user_id: str) -> dict[str, Any]:
        """XP, level, streaks, study stats, topic mastery and practice-mode levels."""
        target = await learner(who, user_id)
        found = await reads.state(who, target)
        if found is None:
            raise HTTPException(404, f"no projection state for {target!r} yet")
        return found

    @app.get("/v1/learners/{user_id}/export", tags=["data subject"])
    async def export_learner(
        who: Reader,
        user_id: str,
        format: str = Query("json", pattern="^(json|csv)$"),
    ) -> Response:
        """Everything stored about a learner that the reader may see: events (JSON or
        CSV) and, in JSON, projection state. Recorded in the audit log."""
        target = await learner(who, user_id)
        columns, rows = await reads.export_events(who, target)
        await reads.audit(who, "export", target, {"events": len(rows), "format": format})
        if format == "csv":
            buffer = io.StringIO()
            out = csv.writer(buffer)
            out.writerow(columns)
            out.writerows([jsonable(v) for v in row] for row in rows)
            return Response(buffer.getvalue(), media_type="text/csv")
        return JSONResponse(
            {
                "user_id": target,
                "events": [dict(zip(columns, jsonable(row), strict=True)) for row in rows],
                "state": await reads.state(who, target),
                "blind_spots": await reads.blind_spots(who, target),
            }
        )

    @app.post("/v1/learners/{user_id}/erase", status_code=202, tags=["data subject"])
    async def erase_learner(who: Reader, user_id: str) -> dict[str, str]:
        """Erase a learner everywhere: processors state and projection topics
        (tombstones), ClickHouse rows, dedup state. Administrators only."""
        if who.role not in (Role.SYSTEM_ADMIN, Role.SUBSCRIBER_ADMIN):
            raise HTTPException(403, "erasing a learner is for administrators")
        if request_erasure is None:
            raise HTTPException(503, "this read API cannot publish erasure requests")
        target = await learner(who, user_id)
        request = ErasureRequest.new(target, who.organization_id, who.user_id, str(who.role))
        await request_erasure(request)
        return {"request_id": request.request_id, "user_id": target, "status": "accepted"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 while the sink stores events; 503 with the reason while it cannot."""
        reason = unready_reason() if unready_reason is not None else None
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "unready", "reason": reason}, status_code=503)

    return app
