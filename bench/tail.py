"""Follow a topic from its end, handing each record and its arrival time to a callback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from learnstream.settings import Settings


async def follow(
    settings: Settings,
    topic: str,
    on_record: Callable[[Any, float], None],
    stop: asyncio.Event,
    clock: Callable[[], float],
) -> None:
    """Until ``stop``: every new record of ``topic`` (a full name), with ``clock()`` at
    the fetch that brought it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            now = clock()
            for records in batch.values():
                for record in records:
                    on_record(record, now)
    finally:
        await consumer.stop()
