"""What apps read about one learner (seed 003): session history, period stats, warmup,
blind spots and current state. Every query carries the caller's access condition.

Language-practice sessions are ``session_result`` events; their scores, topics,
vocabulary and areas to improve live in the properties JSON.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sinks import audit
from sinks.access import Principal, event_condition, learner_condition
from sinks.read_sessions import ReadPool
from sinks.writer import ClickHouseWriter

MAX_PAGE = 100
MAX_OFFSET = 1_000_000
PERIOD_DAYS = {"week": 7, "month": 30}
WARMUP_DAYS = 7
TOP = 5

_SESSION_COLUMNS = """
    toString(event_id) AS session_id,
    timestamp,
    JSONExtractString(properties, 'session_type') AS session_type,
    duration_seconds,
    JSONExtract(properties, 'words_spoken', 'Nullable(Int64)') AS words_spoken,
    JSONExtract(properties, 'pronunciation_score', 'Nullable(Float64)') AS pronunciation_score,
    JSONExtract(properties, 'fluency_score', 'Nullable(Float64)') AS fluency_score,
    JSONExtract(properties, 'grammar_score', 'Nullable(Float64)') AS grammar_score,
    JSONExtract(properties, 'topics', 'Array(String)') AS topics,
    JSONExtract(properties, 'vocabulary_learned', 'Array(String)') AS vocabulary_learned,
    JSONExtract(properties, 'areas_to_improve', 'Array(String)') AS areas_to_improve
"""


def jsonable(value: Any) -> Any:
    """A ClickHouse value as JSON can carry it: dates as ISO text; NaN and ±inf, which
    JSON has no numbers for (0/0 in an average of nothing), as null; UUIDs, IPs and
    decimals as text (a float would round a Decimal128)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):  # FixedString
        return value.decode("utf-8", "replace")
    return str(value)


def _days_up_to(as_of: date, days: int) -> tuple[datetime, datetime]:
    """[start, end) of the ``days`` UTC days that end with ``as_of``."""
    first = as_of - timedelta(days=days - 1)
    return (
        datetime.combine(first, datetime.min.time(), UTC),
        datetime.combine(as_of + timedelta(days=1), datetime.min.time(), UTC),
    )


def _result(client: Any, sql: str, parameters: dict[str, Any]) -> tuple[list[str], list[Any]]:
    result = client.query(sql, parameters=parameters)
    return list(result.column_names), [list(row) for row in result.result_rows]


@dataclass(frozen=True)
class LearnerReads:
    sessions: ReadPool  # read-only sessions of their own, never the ingest client
    database: str
    writer: ClickHouseWriter  # the audit log is written like any other insert

    @property
    def _db(self) -> str:
        return self.database

    async def _query(self, sql: str, parameters: dict[str, Any]) -> tuple[list[str], list[Any]]:
        return await self.sessions.run(lambda client: _result(client, sql, parameters))

    async def _rows(self, sql: str, **parameters: Any) -> list[dict[str, Any]]:
        columns, rows = await self._query(sql, parameters)
        return [{c: jsonable(v) for c, v in zip(columns, row, strict=True)} for row in rows]

    def _sessions_where(self, who: Principal) -> str:
        return (
            f"event_type = 'session_result' AND user_id = {{user:String}} "
            f"AND ({event_condition(who)})"
        )

    def _sessions_between(self, who: Principal) -> str:
        """The learner's sessions from {since} up to {until}, as a subquery."""
        return (
            f"(SELECT {_SESSION_COLUMNS} FROM {self._db}.events WHERE {self._sessions_where(who)} "
            "AND timestamp >= {since:DateTime64(3, 'UTC')} "
            "AND timestamp < {until:DateTime64(3, 'UTC')})"
        )

    async def visible(self, who: Principal, user_id: str) -> bool:
        """Whether ``who`` may see anything of this learner."""
        rows = await self._rows(
            f"SELECT count() > 0 AS seen FROM {self._db}.events "
            f"WHERE user_id = {{user:String}} AND ({event_condition(who)})",
            user=user_id,
        )
        return bool(rows[0]["seen"])

    async def history(
        self, who: Principal, user_id: str, limit: int, offset: int, session_type: str | None
    ) -> dict[str, Any]:
        where = self._sessions_where(who)
        if session_type is not None:
            where += " AND JSONExtractString(properties, 'session_type') = {type:String}"
        params: dict[str, Any] = {"user": user_id, "type": session_type or ""}
        total = await self._rows(
            f"SELECT count() AS n FROM {self._db}.events WHERE {where}", **params
        )
        sessions = await self._rows(
            f"SELECT {_SESSION_COLUMNS} FROM {self._db}.events WHERE {where} "
            "ORDER BY timestamp DESC, session_id LIMIT {limit:UInt32} OFFSET {offset:UInt64}",
            limit=limit,
            offset=offset,
            **params,
        )
        return {
            "user_id": user_id,
            "total": total[0]["n"],
            "limit": limit,
            "offset": offset,
            "sessions": sessions,
        }

    async def stats(self, who: Principal, user_id: str, period: str, as_of: date) -> dict[str, Any]:
        since, until = _days_up_to(as_of, PERIOD_DAYS[period])
        params = {"user": user_id, "since": since, "until": until}
        source = self._sessions_between(who)
        totals = await self._rows(
            "SELECT count() AS total_sessions, "
            "sum(duration_seconds) AS total_duration_seconds, "
            "sum(ifNull(words_spoken, 0)) AS total_words_spoken, "
            "round(avg(pronunciation_score), 1) AS avg_pronunciation_score, "
            "round(avg(fluency_score), 1) AS avg_fluency_score, "
            "round(avg(grammar_score), 1) AS avg_grammar_score "
            f"FROM {source}",
            **params,
        )
        by_type = await self._rows(
            "SELECT session_type, count() AS sessions, "
            "sum(duration_seconds) AS duration_seconds "
            f"FROM {source} GROUP BY session_type ORDER BY session_type",
            **params,
        )
        trend = await self._rows(
            "SELECT toDate(timestamp) AS date, count() AS sessions, "
            "round(avg(pronunciation_score), 1) AS avg_pronunciation_score, "
            "round(avg(fluency_score), 1) AS avg_fluency_score, "
            "round(avg(grammar_score), 1) AS avg_grammar_score "
            f"FROM {source} GROUP BY date ORDER BY date",
            **params,
        )
        summary = totals[0]
        return {
            "user_id": user_id,
            "period": period,
            "from": since.date().isoformat(),
            "to": as_of.isoformat(),
            **summary,
            "total_duration_seconds": summary["total_duration_seconds"] or 0,
            "sessions_by_type": by_type,
            "daily_trend": trend,
            "common_topics": await self._top(source, "topics", "topic", params),
            "weak_areas": await self._top(source, "areas_to_improve", "area", params),
        }

    async def _top(
        self, source: str, column: str, name: str, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return await self._rows(
            f"SELECT arrayJoin({column}) AS {name}, count() AS count FROM {source} "
            f"GROUP BY {name} ORDER BY count DESC, {name} LIMIT {TOP}",
            **params,
        )

    async def warmup(self, who: Principal, user_id: str, as_of: date) -> dict[str, Any]:
        since, until = _days_up_to(as_of, WARMUP_DAYS)
        recent = self._sessions_between(who)
        params = {"user": user_id, "since": since, "until": until}
        focus = await self._rows(
            f"SELECT arrayJoin(areas_to_improve) AS area, count() AS count FROM {recent} "
            "GROUP BY area ORDER BY count DESC, area LIMIT 3",
            **params,
        )
        vocabulary = await self._rows(
            f"SELECT word, max(timestamp) AS last_seen FROM {recent} "
            "ARRAY JOIN vocabulary_learned AS word GROUP BY word "
            "ORDER BY last_seen DESC, word LIMIT 10",
            **params,
        )
        last = await self._rows(
            f"SELECT {_SESSION_COLUMNS} FROM {self._db}.events WHERE {self._sessions_where(who)} "
            "AND timestamp < {until:DateTime64(3, 'UTC')} "
            "ORDER BY timestamp DESC, session_id LIMIT 1",
            user=user_id,
            until=until,
        )
        return {
            "user_id": user_id,
            "focus_areas": [row["area"] for row in focus],
            "vocabulary_to_review": [row["word"] for row in vocabulary],
            "last_session": last[0] if last else None,
        }

    async def _snapshots(self, who: Principal, table: str, user_id: str) -> list[dict[str, Any]]:
        rows = await self._rows(
            f"SELECT snapshot FROM {self._db}.{table} FINAL "
            f"WHERE user_id = {{user:String}} AND is_deleted = 0 "
            f"AND ({learner_condition(who, self._db)}) ORDER BY key",
            user=user_id,
        )
        return [json.loads(row["snapshot"]) for row in rows]

    async def blind_spots(self, who: Principal, user_id: str) -> dict[str, Any] | None:
        found = await self._snapshots(who, "blind_spots", user_id)
        return found[0] if found else None

    async def state(self, who: Principal, user_id: str) -> dict[str, Any] | None:
        progress = await self._snapshots(who, "user_progress", user_id)
        if not progress:
            return None
        return {
            "progress": progress[0],
            "topic_mastery": await self._snapshots(who, "topic_mastery", user_id),
            "mode_progress": await self._snapshots(who, "mode_progress", user_id),
        }

    async def export_events(self, who: Principal, user_id: str) -> tuple[list[str], list[Any]]:
        """Every column of every event of the learner that ``who`` may see, oldest first."""
        return await self._query(
            f"SELECT * EXCEPT (inserted_at) FROM {self._db}.events "
            f"WHERE user_id = {{user:String}} AND ({event_condition(who)}) "
            "ORDER BY timestamp, event_id",
            {"user": user_id},
        )

    async def audit(
        self, who: Principal, action: str, user_id: str, details: dict[str, Any]
    ) -> None:
        await audit.record(
            self.writer,
            audit.AuditEntry(
                audit_id=str(uuid.uuid4()),
                at=datetime.now(UTC),
                action=action,
                subject_user_id=user_id,
                organization_id=who.organization_id or "",
                actor_user_id=who.user_id,
                actor_role=str(who.role),
                covers_until=None,
                details=details,
            ),
        )
