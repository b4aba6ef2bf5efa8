"""Concurrent requests share one record batch per partition (collector/partition_batches.py)
on the real broker: every record acknowledged is there once, on the partition
``producer.send`` would pick for its key, in the order it was published. (A broker
that does not answer: tests/test_collector.py, a 503 within the bound.)"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from aiokafka.partitioner import DefaultPartitioner

from collector.publisher import KafkaPublisher
from learnstream.settings import Settings
from learnstream.topics import EVENTS_RAW
from tests.kafka_read import _partition_ids, read_all

REQUESTS, PER_REQUEST, IN_FLIGHT, KEYS = 6, 120, 8, 13


async def _publish(settings: Settings) -> list[list[bytes]]:
    """IN_FLIGHT concurrent clients, each posting REQUESTS requests one after another;
    what each request published, in order."""
    topic = settings.topic(EVENTS_RAW)
    publisher = KafkaPublisher(settings.kafka_bootstrap, settings.publish_timeout_s)
    await publisher.start()
    published: list[list[bytes]] = []
    try:

        async def client(number: int) -> None:
            for request in range(REQUESTS):
                values = [
                    f"{number}/{request}/{i}/{'x' * (i * 37 % 900)}".encode()
                    for i in range(PER_REQUEST)
                ]
                records = [(f"learner-{i % KEYS}".encode(), v) for i, v in enumerate(values)]
                await publisher.publish_all(topic, records)
                published.append(values)  # acknowledged: it must be on the broker now

        await asyncio.gather(*(client(n) for n in range(IN_FLIGHT)))
    finally:
        await publisher.stop()
    return published


def test_concurrent_requests_land_once_each_on_their_keys_partition_in_order(
    settings: Settings,
) -> None:
    published = asyncio.run(_publish(settings))
    topic = settings.topic(EVENTS_RAW)
    stored = read_all(settings.kafka_bootstrap, topic)
    assert len(published) == REQUESTS * IN_FLIGHT
    assert sorted(m.value for m in stored) == sorted(v for values in published for v in values)

    partitions = asyncio.run(_partition_ids(settings.kafka_bootstrap, topic))
    by_key: dict[bytes, list[tuple[int, int, bytes]]] = defaultdict(list)
    for m in stored:
        by_key[m.key].append((m.partition, m.offset, m.value))
    assert len(by_key) == KEYS
    for key, records in by_key.items():
        # where aiokafka's send() (murmur2 of the key, as the Java client) puts it
        assert {p for p, _, _ in records} == {DefaultPartitioner()(key, partitions, partitions)}
        # each client's records of one key in the order it published them
        in_log_order = [value for _, _, value in sorted(records)]
        for number in range(IN_FLIGHT):
            mine = [v for v in in_log_order if v.startswith(f"{number}/".encode())]
            assert mine == sorted(mine, key=lambda v: tuple(map(int, v.split(b"/")[1:3])))
