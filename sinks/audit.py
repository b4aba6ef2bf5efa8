"""The audit log: one row per data-subject request (export, erase) and who made it."""

from __future__ import annotations

import json
from dataclasses import astuple, dataclass, fields
from datetime import datetime
from typing import Any

from sinks.writer import ClickHouseWriter


@dataclass(frozen=True)
class AuditEntry:
    audit_id: str  # the request's id: also the insert's deduplication token
    at: datetime
    action: str
    subject_user_id: str
    organization_id: str
    actor_user_id: str
    actor_role: str
    covers_until: datetime | None  # erase: events up to this time
    details: dict[str, Any]


AUDIT_COLUMNS = tuple(f.name for f in fields(AuditEntry))


async def record(writer: ClickHouseWriter, entry: AuditEntry) -> None:
    row = list(astuple(entry))
    row[-1] = json.dumps(entry.details, sort_keys=True)
    await writer.insert("audit_log", [row], AUDIT_COLUMNS, f"{entry.action}/{entry.audit_id}")
