"""A producer that an error left unusable is replaced; other errors keep it.

After a broker restart aiokafka's idempotent producer can answer every send with
OutOfOrderSequenceNumber for good (aio-libs/aiokafka#1017). The collector then replaces
it, says it is not ready meanwhile, and publishes again with the new one."""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaTimeoutError, OutOfOrderSequenceNumber

from collector.publisher import KafkaPublisher
from learnstream.settings import Settings
from learnstream.topics import EVENTS_RAW, ensure_topics
from tests.kafka_read import read_all


async def _replaced(settings: Settings) -> None:
    await ensure_topics(settings)
    topic = settings.topic(EVENTS_RAW)
    publisher = KafkaPublisher(settings.kafka_bootstrap, settings.publish_timeout_s)
    await publisher.start()
    try:
        first = publisher._producer
        await publisher.publish(topic, b"k", b"before")
        publisher._replace_after(KafkaTimeoutError())  # infrastructure, not the producer
        assert publisher._replacing is None and publisher._producer is first

        publisher._replace_after(OutOfOrderSequenceNumber())
        assert not await publisher.is_ready()  # while it is being replaced
        replacing = publisher._replacing
        assert replacing is not None
        await replacing
        assert publisher.replaced == 1 and publisher._producer is not first
        assert await publisher.is_ready()
        await publisher.publish(topic, b"k", b"after")
    finally:
        await publisher.stop()


def test_a_producer_left_unusable_is_replaced_and_publishing_goes_on(settings: Settings) -> None:
    asyncio.run(_replaced(settings))
    values = [
        record.value for record in read_all(settings.kafka_bootstrap, settings.topic(EVENTS_RAW))
    ]
    assert values == [b"before", b"after"]
