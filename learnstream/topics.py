"""Every Kafka topic learnstream owns, with the configuration it is created with.

Topics are provisioned explicitly (the devstack broker has auto-creation off) so
partition counts match across co-partitioned topics and compaction is never an
accident of defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from learnstream.settings import Settings

log = logging.getLogger(__name__)

EVENTS_RAW = "events.raw"
EVENTS_CLEAN = "events.clean"
EVENTS_INVALID = "events.invalid"
EVENTS_DERIVED = "events.derived"
PROJECTIONS_XP = "projections.xp"
PROJECTIONS_USER_PROGRESS = "projections.user_progress"
PROJECTIONS_TOPIC_MASTERY = "projections.topic_mastery"
PROJECTIONS_MODE_PROGRESS = "projections.mode_progress"
PROJECTIONS_BLIND_SPOTS = "projections.blind_spots"
# Requests to erase a learner (data-subject rights), keyed by user_id like events.raw
# so each lands in the partition holding that learner's state. Kept forever: it is
# the audit trail, and a replay must erase again.
REQUESTS_ERASURE = "requests.erasure"

_COMPACTED = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
_KEEP_FOREVER = {"retention.ms": "-1"}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    config: dict[str, str] = field(default_factory=dict)


# The raw log is kept forever: it is the source that projections are replayed from.
TOPIC_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(EVENTS_RAW, _KEEP_FOREVER),
    TopicSpec(EVENTS_CLEAN),
    TopicSpec(EVENTS_INVALID, _KEEP_FOREVER),
    TopicSpec(EVENTS_DERIVED, _KEEP_FOREVER),
    TopicSpec(PROJECTIONS_XP, _COMPACTED),
    TopicSpec(PROJECTIONS_USER_PROGRESS, _COMPACTED),
    TopicSpec(PROJECTIONS_TOPIC_MASTERY, _COMPACTED),
    TopicSpec(PROJECTIONS_MODE_PROGRESS, _COMPACTED),
    TopicSpec(PROJECTIONS_BLIND_SPOTS, _COMPACTED),
    TopicSpec(REQUESTS_ERASURE, _KEEP_FOREVER),
)


async def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create any missing topic; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                settings.topic(spec.name),
                settings.topic_partitions,
                settings.topic_replication,
                topic_configs=dict(spec.config),
            )
            for spec in TOPIC_SPECS
            if settings.topic(spec.name) not in existing
        ]
        if missing:
            # another process may win the race; the topic is there either way
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("created topics %s", [t.name for t in missing])
    finally:
        await admin.close()
