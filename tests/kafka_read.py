"""Read a topic from the beginning to its current end (test helper)."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def _partition_ids(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for p in described["partitions"])


async def _read_all(bootstrap: str, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await _partition_ids(bootstrap, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        messages: list[Any] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                messages.extend(records)
        return messages
    finally:
        await consumer.stop()


def read_all(bootstrap: str, topic: str) -> list[Any]:
    return asyncio.run(_read_all(bootstrap, topic))


@cache
def _registry() -> Any:
    # built once: loading every current and released schema takes about a second, and
    # tests call latest_by_key in polling loops
    from schemas.registry import FileSchemaRegistry

    return FileSchemaRegistry.from_files()


def latest_by_key(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    """A compacted projection topic as its consumers see it: the newest value per key."""
    from schemas.codec import decode

    latest: dict[str, dict[str, Any]] = {}
    for m in read_all(bootstrap, topic):
        if m.value is None:  # a tombstone: the key is gone
            latest.pop(m.key.decode(), None)
        else:
            latest[m.key.decode()] = decode(_registry(), m.value)
    return latest
