"""Erasing a learner from ClickHouse, and keeping them erased.

Applying a request deletes the learner's rows (events up to the request time, daily
stats, projection rows, dead letters naming them) and records it in ``audit_log``.
Applying it twice is harmless: deletes are repeated, the audit row is written once.
The sink then drops any of the learner's events stamped at or before the request that
still arrive: events.clean is another topic than requests.erasure, so copies the
processors sent before the erasure can reach the sink after it.
"""

from __future__ import annotations

import logging
from datetime import datetime

from learnstream.erasure import ErasureRequest, erased_before
from sinks import audit
from sinks.writer import ClickHouseWriter

log = logging.getLogger(__name__)

# table -> which of its rows are the learner's, as of the request
_ERASABLE = {
    "events": "user_id = {user:String} AND timestamp <= {until:DateTime64(3, 'UTC')}",
    "daily_user_stats": "user_id = {user:String} AND day <= toDate({until:DateTime64(3, 'UTC')})",
    "user_progress": "user_id = {user:String} AND is_deleted = 0",
    "topic_mastery": "user_id = {user:String} AND is_deleted = 0",
    "mode_progress": "user_id = {user:String} AND is_deleted = 0",
    "blind_spots": "user_id = {user:String} AND is_deleted = 0",
    "events_invalid": "JSONExtractString(raw, 'user_id') = {user:String}",
}


class Erasures:
    def __init__(self, writer: ClickHouseWriter) -> None:
        self._writer = writer
        self.erased_at_ms: dict[str, int] = {}

    async def load(self) -> None:
        """Learners erased before this run, from the audit log."""
        _, rows = await self._writer.query(
            "SELECT subject_user_id, toUnixTimestamp64Milli(max(covers_until)) "
            f"FROM {self._writer.database}.audit_log WHERE action = 'erase' "
            "GROUP BY subject_user_id"
        )
        self.erased_at_ms = {str(user): int(ms) for user, ms in rows if ms is not None}

    def drops(self, user_id: str, timestamp: datetime) -> bool:
        return erased_before(self.erased_at_ms.get(user_id), timestamp)

    async def apply(self, request: ErasureRequest) -> None:
        db = self._writer.database
        params = {"user": request.user_id, "until": request.requested_at}
        counts = {}
        for table, where in _ERASABLE.items():
            _, rows = await self._writer.query(
                f"SELECT count() FROM {db}.{table} WHERE {where}", parameters=params
            )
            counts[table] = int(rows[0][0])
            if counts[table]:
                await self._writer.command(f"DELETE FROM {db}.{table} WHERE {where}", params)
        _, done = await self._writer.query(
            f"SELECT count() FROM {db}.audit_log WHERE audit_id = {{id:UUID}}",
            parameters={"id": request.request_id},
        )
        if not done[0][0]:
            await audit.record(
                self._writer,
                audit.AuditEntry(
                    audit_id=request.request_id,
                    at=datetime.now(request.requested_at.tzinfo),
                    action="erase",
                    subject_user_id=request.user_id,
                    organization_id=request.organization_id or "",
                    actor_user_id=request.requested_by,
                    actor_role=request.requester_role,
                    covers_until=request.requested_at,
                    details={"rows_deleted": counts},
                ),
            )
        previous = self.erased_at_ms.get(request.user_id, 0)
        self.erased_at_ms[request.user_id] = max(previous, request.requested_at_ms)
        log.info("erased learner %s: %s", request.user_id, counts)
