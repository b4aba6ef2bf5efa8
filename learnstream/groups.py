"""Where the pipeline's consumer groups stand, as the broker sees them: who owns which
partitions, and how many records each group has not committed yet.

For operators (is anything behind?), the chaos soak (did it drain?) and tests that prove
an absence: "nothing more arrives" is shown by every group having committed up to the
end offsets read before, not by sleeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from learnstream.settings import Settings
from learnstream.topics import (
    EVENTS_CLEAN,
    EVENTS_DERIVED,
    EVENTS_INVALID,
    EVENTS_RAW,
    REQUESTS_ERASURE,
)
from processors.generations import group_id
from sinks.projection_rows import PROJECTION_TABLES


def processors_group(settings: Settings, generation: int | None = None) -> str:
    return group_id(settings, generation or settings.processors_generation)


def sink_group(settings: Settings) -> str:
    return settings.topic("learnstream-sink")


def sink_topics(settings: Settings) -> list[str]:
    """Every topic the sink stores."""
    names = (EVENTS_CLEAN, EVENTS_DERIVED, EVENTS_INVALID, REQUESTS_ERASURE, *PROJECTION_TABLES)
    return [settings.topic(name) for name in names]


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    partitions: frozenset[int]  # of the topic asked about


async def group_members(bootstrap: str, group: str, topic: str) -> list[Member] | None:
    """The group's members and their partitions of ``topic``; None unless the group is
    Stable (a rebalance in progress has no settled owners)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    described = response.groups[0]
    state, members = described[2], described[5]
    if state != "Stable":
        return None
    found = []
    for member in members:  # (member_id, client_id, client_host, metadata, assignment)
        assignment = ConsumerProtocolMemberAssignment.decode(member[-1])
        owned = frozenset(p for t, ps in assignment.assignment if t == topic for p in ps)
        found.append(Member(member[0], member[1], owned))
    return found


async def uncommitted(bootstrap: str, group: str, topics: Sequence[str]) -> int:
    """Records on ``topics`` past what ``group`` committed (all of them where it has
    committed nothing)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        tps = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in await _partitions(consumer, topic)
        ]
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await consumer.stop()
        await admin.close()
    total = 0
    for tp, end in ends.items():
        meta = committed.get(tp)
        at = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
        total += max(0, end - at)
    return total


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    known: set[int] | None = consumer.partitions_for_topic(topic)
    if known is None:  # not in this client's metadata yet
        await consumer._client._wait_on_metadata(topic)
        known = consumer.partitions_for_topic(topic)
    return known or set()


async def pipeline_lag(settings: Settings) -> dict[str, int]:
    """Uncommitted records of the processors' group (events.raw) and the sink's group
    (every topic it stores). In that order: the processors commit only after their
    outputs are written, so when both are 0 the sink has stored everything the
    processors made of what events.raw held when this was asked."""
    bootstrap = settings.kafka_bootstrap
    processors = await uncommitted(
        bootstrap, processors_group(settings), [settings.topic(EVENTS_RAW)]
    )
    sink = await uncommitted(bootstrap, sink_group(settings), sink_topics(settings))
    return {"processors": processors, "sink": sink}
