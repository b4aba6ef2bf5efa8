"""Generations of the processors: how projection state is rebuilt from the raw log.

Each generation is its own consumer group with its own tables (Faust names changelog
topics after the app id), so generation N+1 starts from the earliest raw record with
empty state and folds the whole log again. The records the previous generation already
turned into ``events.clean``, ``events.derived`` and dead letters must not be written
twice, so the new generation writes those only past the *handover*: the offsets the
previous generation committed, read once at start. Below the handover it rebuilds
state and republishes the projection snapshots (compacted topics: the same snapshot
again is harmless). Once caught up, it simply is the live pipeline.

The previous generation must be stopped first, or the handover would move under the
new one; ``replay`` refuses to start while that group has members.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from learnstream.settings import Settings
from learnstream.topics import EVENTS_RAW

Handover = dict[int, int]  # events.raw partition -> first offset the new generation emits


def group_id(settings: Settings, generation: int) -> str:
    """Generation 1 keeps the original name, so existing deployments carry on as they are."""
    suffix = "" if generation == 1 else f"-g{generation}"
    return settings.topic(f"learnstream-processors{suffix}")


class PreviousGenerationRunning(RuntimeError):
    pass


# A stopped worker that is a static member (LEARNSTREAM_PROCESSORS_INSTANCE_ID) does not
# leave its group: it is listed until its session times out (10 s, processors.app).
SETTLE_S = 20.0


async def _members_once_settled(admin: AIOKafkaAdminClient, group: str) -> list[Any]:
    """The group's members, waiting up to SETTLE_S for stopped static members to go."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        (description,) = await admin.describe_consumer_groups([group])
        members: list[Any] = description.groups[0][5] if description.groups else []
        if not members or time.monotonic() >= deadline:
            return members
        await asyncio.sleep(1.0)


async def handover(settings: Settings, generation: int) -> Handover:
    """Where the previous generation stopped on each events.raw partition (empty for 1)."""
    if generation == 1:
        return {}
    previous = group_id(settings, generation - 1)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        members = await _members_once_settled(admin, previous)
        if members:
            raise PreviousGenerationRunning(
                f"consumer group {previous} still has {len(members)} member(s); stop "
                f"generation {generation - 1} before replaying into generation {generation}"
            )
        raw = settings.topic(EVENTS_RAW)
        partitions = [TopicPartition(raw, p) for p in range(settings.topic_partitions)]
        committed = await admin.list_consumer_group_offsets(previous, partitions=partitions)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
