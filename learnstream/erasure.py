"""A request to erase one learner everywhere, as it travels on ``requests.erasure``.

The processors drop the learner's state and publish tombstones for every projection
key; the sink deletes the learner's rows and records the erasure in ``audit_log``.
Both then ignore the learner's events stamped at or before ``requested_at``, which
copies redelivered from Kafka or retried from an app's outbox may still carry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from learnstream.topics import (
    PROJECTIONS_BLIND_SPOTS,
    PROJECTIONS_MODE_PROGRESS,
    PROJECTIONS_TOPIC_MASTERY,
    PROJECTIONS_USER_PROGRESS,
    PROJECTIONS_XP,
)


@dataclass(frozen=True)
class ErasureRequest:
    request_id: str
    user_id: str
    organization_id: str | None
    requested_by: str
    requester_role: str
    requested_at: datetime

    @classmethod
    def new(
        cls, user_id: str, organization_id: str | None, requested_by: str, role: str
    ) -> ErasureRequest:
        return cls(
            str(uuid.uuid4()), user_id, organization_id, requested_by, role, datetime.now(UTC)
        )

    @property
    def requested_at_ms(self) -> int:
        return round(self.requested_at.timestamp() * 1000)

    def to_json(self) -> bytes:
        record = asdict(self) | {"requested_at": self.requested_at.isoformat()}
        return json.dumps(record, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ErasureRequest:
        record = json.loads(data)
        return cls(
            request_id=str(record["request_id"]),
            user_id=str(record["user_id"]),
            organization_id=record.get("organization_id"),
            requested_by=str(record["requested_by"]),
            requester_role=str(record["requester_role"]),
            requested_at=datetime.fromisoformat(record["requested_at"]),
        )


def projection_keys(
    user_id: str, topics: Iterable[str], modes: Iterable[str]
) -> dict[str, list[str]]:
    """Every key a learner can have on each projection topic (unprefixed topic names)."""
    return {
        PROJECTIONS_XP: [user_id],
        PROJECTIONS_USER_PROGRESS: [user_id],
        PROJECTIONS_BLIND_SPOTS: [user_id],
        PROJECTIONS_TOPIC_MASTERY: [f"{user_id}:{t}" for t in sorted(topics)],
        PROJECTIONS_MODE_PROGRESS: [f"{user_id}:{m}" for m in sorted(modes)],
    }


def erased_before(erased_at_ms: int | None, event_time: datetime) -> bool:
    """Whether an event of an erased learner falls under the erasure."""
    return erased_at_ms is not None and round(event_time.timestamp() * 1000) <= erased_at_ms
