"""The memory store filled from its changelog in bulk holds what Faust's own recovery
would build: each key's latest value in offset order, tombstones deleting, and only the
assigned partitions; Faust is then told to read nothing more of what it holds."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from aiokafka import AIOKafkaProducer
from faust.types import TP

from learnstream.settings import Settings
from learnstream.topics import ensure_topics
from processors.app import create_app
from processors.generations import group_id
from processors.preloaded_store import PreloadedMemoryStore
from processors.state_tables import changelog_topics
from schemas.catalog import default_catalog
from schemas.registry import FileSchemaRegistry

PARTITIONS = 4


async def _fill(
    settings: Settings, topic: str, rng: random.Random
) -> tuple[dict[int, dict[bytes, bytes]], dict[int, int]]:
    """Writes, overwrites and tombstones on every partition: the expected state, and the
    records written per partition."""
    expected: dict[int, dict[bytes, bytes]] = {p: {} for p in range(PARTITIONS)}
    written = dict.fromkeys(range(PARTITIONS), 0)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i in range(3000):
            user = rng.randrange(300)
            partition = user % PARTITIONS  # a key lives on one partition
            key = f"learner\x1eu{user}".encode()
            written[partition] += 1
            if rng.random() < 0.2:
                await producer.send(topic, None, key=key, partition=partition)
                expected[partition].pop(key, None)
            else:
                value = f"v{i}".encode()
                await producer.send(topic, value, key=key, partition=partition)
                expected[partition][key] = value
        await producer.flush()
    finally:
        await producer.stop()
    return expected, written


async def _scenario(settings: Settings) -> None:
    settings = settings.model_copy(update={"topic_partitions": PARTITIONS})
    catalog = default_catalog()
    changelogs = changelog_topics(group_id(settings, settings.processors_generation))
    await ensure_topics(settings, extra=changelogs)
    topic = changelogs[0].name
    expected, written = await _fill(settings, topic, random.Random(7))
    app = create_app(settings, FileSchemaRegistry.from_files(catalog), catalog)
    table: Any = app.tables["learner-state"]  # its store is Faust's private attribute
    store = table._data
    assert isinstance(store, PreloadedMemoryStore)
    mine = {TP(topic, 0), TP(topic, 2)}
    source = {TP(settings.topic("events.raw"), 0)}  # not the store's: left alone

    await store.on_rebalance(mine | source, set(), mine | source)
    assert dict(store.data) == {**expected[0], **expected[2]}
    last = {tp: written[tp.partition] - 1 for tp in mine}  # Faust reads on from there
    assert {tp: store.persisted_offset(tp) for tp in mine} == last
    assert store.persisted_offset(TP(topic, 1)) is None  # not assigned: Faust reads it all

    # kept across a rebalance: not read again; a live write moves its offset on
    store.write(0, b"learner\x1elive", b"mine")
    store.set_persisted_offset(TP(topic, 0), 10**6)
    await store.on_rebalance(mine | {TP(topic, 1)}, set(), {TP(topic, 1)})
    assert store.persisted_offset(TP(topic, 0)) == 10**6
    assert dict(store.data) == {
        **expected[0],
        **expected[1],
        **expected[2],
        b"learner\x1elive": b"mine",
    }

    # revoked, then given back: read again from the start, the live write gone with it
    await store.on_rebalance({TP(topic, 1), TP(topic, 2)}, {TP(topic, 0)}, set())
    assert store.persisted_offset(TP(topic, 0)) is None
    await store.on_rebalance({TP(topic, 0), TP(topic, 1), TP(topic, 2)}, set(), {TP(topic, 0)})
    assert store.persisted_offset(TP(topic, 0)) == last[TP(topic, 0)]
    assert dict(store.data) == {**expected[0], **expected[1], **expected[2]}


def test_the_store_holds_what_the_changelog_says(settings: Settings) -> None:
    asyncio.run(_scenario(settings))
