"""The analysts' door to embedded ClickHouse.

chdb takes a lock on its data folder, so while the sink runs it is the only process
that can open it. The sink therefore serves read-only SQL over HTTP; against a
ClickHouse server analysts can equally use any ClickHouse client.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

from fastapi import Body, FastAPI, Query
from fastapi.responses import JSONResponse

from sinks.writer import ClickHouseWriter


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def create_query_app(writer: ClickHouseWriter) -> FastAPI:
    app = FastAPI(title="learnstream query", version="1")

    async def run(sql: str) -> JSONResponse:
        try:
            columns, rows = await writer.query(sql, readonly=True)
        except Exception as exc:  # a bad query is the caller's problem, reported as such
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"columns": columns, "rows": [_jsonable(r) for r in rows]})

    @app.get("/v1/query")
    async def query_get(sql: str = Query(..., description="read-only SQL")) -> JSONResponse:
        return await run(sql)

    @app.post("/v1/query")
    async def query_post(sql: str = Body(..., media_type="text/plain")) -> JSONResponse:
        return await run(sql)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
