"""The dashboard: a page served at ``/dashboard/`` and the JSON it draws, at
``/v1/dashboard/*``.

The page (``dashboard/``, built with npm into ``dashboard/dist``, Chart.js bundled in)
holds no data: every number comes from these endpoints, which take the same reader
token as the other reads and show only what that reader may see. Their SQL is the
named queries ``sinks/queries/dashboard_*.sql``, so ``learnstream query
dashboard_retention`` gives an analyst the same numbers. For a reader who may not see
everything, each table a query reads is replaced by a WITH clause of the same name (in
ClickHouse a WITH name hides the table) holding only that reader's rows, by the
condition ``sinks.access`` gives that table. The queries aggregate over many learners, so
they run on the analysts' sessions, with the analysts' limits, never on the ingest
client or the apps' learner reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from clickhouse_connect.driver.exceptions import DatabaseError
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, RedirectResponse

from sinks import query_library
from sinks.access import Principal, table_conditions
from sinks.learner_reads import jsonable
from sinks.read_sessions import ReadSessions

DIST = Path(__file__).resolve().parent.parent / "dashboard" / "dist"
# What the page may load: only its own files and the sink's JSON, so a build that
# pulled a script or font from another host would show up as a blocked request.
PAGE_POLICY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"

# every table the dashboard queries read, and the table whose access condition it takes
# (a *_current view shows the rows of its projection table)
SCOPED_TABLES = {
    "user_progress_current": "user_progress",
    "topic_mastery_current": "topic_mastery",
    "blind_spots_current": "blind_spots",
    "daily_user_stats": "daily_user_stats",
}
# a name after FROM or JOIN that is not a function call (ARRAY JOIN f(...))
_READS_FROM = re.compile(r"\b(?:FROM|JOIN)\s+([A-Za-z_][\w.]*)\b(?!\s*\()", re.IGNORECASE)
AsOf = Annotated[
    date | None,
    Query(ge=date(1970, 1, 1), le=date(2149, 6, 6), description="last day; today (UTC) if unset"),
]


def dashboard_queries() -> dict[str, query_library.NamedQuery]:
    """The dashboard's named queries, keyed without the ``dashboard_`` prefix. A query
    reading a table the scoping does not know is refused here, at start, rather than
    shown unscoped."""
    queries = {
        name.removeprefix("dashboard_"): query
        for name, query in query_library.load().items()
        if name.startswith("dashboard_")
    }
    for name, query in queries.items():
        unknown = set(_READS_FROM.findall(query.sql)) - set(SCOPED_TABLES)
        if unknown:
            raise query_library.QueryError(
                f"dashboard_{name}.sql reads {sorted(unknown)}, which have no access scope"
            )
    return queries


def scoped(sql: str, who: Principal, database: str) -> str:
    """``sql`` reading only ``who``'s rows of each table it names."""
    conditions = table_conditions(who, database)
    narrowed = [
        f"{table} AS (SELECT * FROM {database}.{table} WHERE {conditions[base]})"
        for table, base in SCOPED_TABLES.items()
        if conditions[base] != "1" and re.search(rf"\b{table}\b", sql)
    ]
    return f"WITH {', '.join(narrowed)}\n{sql}" if narrowed else sql


def _rows(client: Any, sql: str) -> list[dict[str, Any]]:
    result = client.query(sql)
    names = result.column_names
    return [{n: jsonable(v) for n, v in zip(names, row, strict=True)} for row in result.result_rows]


def _asset(dist: Path, name: str) -> FileResponse:
    if not dist.is_dir():
        raise HTTPException(503, "the dashboard is not built: run `make dashboard`")
    # only files that are in dist/ by name: a path parameter cannot leave the folder
    if name not in {p.name for p in dist.iterdir() if p.is_file()}:
        raise HTTPException(404, f"no dashboard file {name!r}")
    headers = {"content-security-policy": PAGE_POLICY} if name.endswith(".html") else {}
    return FileResponse(dist / name, headers=headers)


def dashboard_router(
    sessions: ReadSessions, reader: Callable[..., Principal], dist: Path = DIST
) -> APIRouter:
    """The page and its endpoints. ``reader`` is the read API's dependency naming the
    caller from their token."""
    router = APIRouter()
    queries = dashboard_queries()
    # a default, not an Annotated alias: annotations are strings here, and FastAPI
    # resolves them in the module, where a local alias does not exist
    who_reads = Depends(reader)

    async def run(who: Principal, name: str, **params: Any) -> list[dict[str, Any]]:
        given = {k: v.isoformat() if isinstance(v, date) else str(v) for k, v in params.items()}
        sql = scoped(queries[name].render(given), who, sessions.database)
        try:
            return await sessions.analyst.run(lambda client: _rows(client, sql))
        except DatabaseError as exc:  # ClickHouse did not answer, or a limit stopped it
            raise HTTPException(503, f"ClickHouse could not answer: {exc}") from None

    @router.get("/v1/dashboard/learners", tags=["dashboard"])
    async def learners(
        who: Principal = who_reads, limit: int = Query(50, ge=1, le=500)
    ) -> dict[str, Any]:
        """Each learner's XP, level and current and longest streak, most XP first."""
        return {
            "reader": {"role": str(who.role), "user_id": who.user_id},
            "rows": await run(who, "learners", limit=limit),
        }

    @router.get("/v1/dashboard/daily-active", tags=["dashboard"])
    async def daily_active(
        who: Principal = who_reads, days: int = Query(30, ge=1, le=366), as_of: AsOf = None
    ) -> dict[str, Any]:
        """Learners active on each UTC day of the ``days`` that end with ``as_of``."""
        rows = await run(who, "daily_active", days=days, as_of=as_of or "today")
        return {
            "from": rows[0]["day"] if rows else None,
            "to": rows[-1]["day"] if rows else None,
            "rows": rows,
        }

    @router.get("/v1/dashboard/retention", tags=["dashboard"])
    async def retention(
        who: Principal = who_reads, weeks: int = Query(8, ge=1, le=104), as_of: AsOf = None
    ) -> dict[str, Any]:
        """Weekly cohorts by first active week: learners active in each week since."""
        return {"rows": await run(who, "retention", weeks=weeks, as_of=as_of or "today")}

    @router.get("/v1/dashboard/mastery", tags=["dashboard"])
    async def mastery(
        who: Principal = who_reads,
        learners: int = Query(20, ge=1, le=100),
        topics: int = Query(20, ge=1, le=100),
    ) -> dict[str, Any]:
        """P(mastered) per learner and topic, for a heatmap."""
        return {"rows": await run(who, "mastery", learners=learners, topics=topics)}

    @router.get("/v1/dashboard/blind-spots", tags=["dashboard"])
    async def blind_spots(
        who: Principal = who_reads, drills: int = Query(10, ge=1, le=100)
    ) -> dict[str, Any]:
        """The drills most often among learners' three weakest."""
        return {"rows": await run(who, "blind_spots", drills=drills)}

    @router.get("/dashboard", include_in_schema=False)
    async def page_folder() -> RedirectResponse:
        # the page fetches ../v1/dashboard/..., relative to the folder
        return RedirectResponse("dashboard/", status_code=308)

    @router.get("/dashboard/", include_in_schema=False)
    async def page() -> FileResponse:
        return _asset(dist, "index.html")

    @router.get("/dashboard/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        return _asset(dist, name)

    return router
