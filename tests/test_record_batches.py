"""Record batches per topic-partition land where ``producer.send`` would put each
record, in order, on the real broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from processors.record_batches import RecordBatches, WholeBatchTooLarge


async def _roundtrip(bootstrap: str) -> None:
    batched, single = f"rb-{uuid.uuid4().hex[:8]}", f"rb-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 6, 1) for t in (batched, single)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, max_batch_size=4096
    )
    await producer.start()
    records = [(f"learner-{i % 37}".encode(), f"value-{i}".encode() * (i % 50)) for i in range(600)]
    try:
        out = RecordBatches(producer)
        for key, value in records:
            await out.add(batched, key, value)
        out.add_to(batched, b"tombstone", None, 2)
        sent = await out.send()
        assert len(sent) > 6  # 4 KB batches: several per partition
        await asyncio.gather(*(future for _, future in sent))
        singles = [await producer.send(single, value, key=key) for key, value in records]
        await asyncio.gather(*singles)
    finally:
        await producer.stop()

    async def read(topic: str, count: int) -> list[tuple[int, bytes | None, bytes | None]]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        got: list[tuple[int, bytes | None, bytes | None]] = []
        try:
            while len(got) < count:
                for tp, messages in (await consumer.getmany(timeout_ms=2000)).items():
                    got += [(tp.partition, m.key, m.value) for m in messages]
        finally:
            await consumer.stop()
        return got

    by_batches = await read(batched, len(records) + 1)
    by_send = await read(single, len(records))
    assert (2, b"tombstone", None) in by_batches
    by_batches.remove((2, b"tombstone", None))
    for partition in range(6):  # same partition per key, same order within it
        assert [r for r in by_batches if r[0] == partition] == [
            r for r in by_send if r[0] == partition
        ]
    assert sorted(r[1:] for r in by_batches) == sorted(records)


def test_record_batches_land_where_send_would_put_each_record_in_order(
    kafka_bootstrap: str,
) -> None:
    asyncio.run(_roundtrip(kafka_bootstrap))


async def _whole(bootstrap: str) -> None:
    topic = f"rb-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, max_batch_size=4096
    )
    await producer.start()
    try:
        out = RecordBatches(producer)
        records: list[tuple[bytes, bytes | None]] = [
            (f"k{i}".encode(), b"v" * 200) for i in range(500)
        ]  # ~100 KB: 25 x 4 KB
        out.add_whole(topic, 1, records[:300])
        out.add_whole(topic, 1, records[300:])  # the same whole batch
        sent = await out.send()
        # one future per record batch: the 500 records are one batch (4 KB ones: 25)
        assert [(name, (await future).partition) for name, future in sent] == [(topic, 1)]

        too_many = RecordBatches(producer)
        with pytest.raises(WholeBatchTooLarge):
            too_many.add_whole(topic, 2, [(b"k", b"v" * 1024)] * 1000)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 1)
        consumer.assign([tp])
        got: list[tuple[int, bytes | None]] = []
        while len(got) < 500:
            for messages in (await consumer.getmany(tp, timeout_ms=2000)).values():
                got += [(m.offset, m.key) for m in messages]
    finally:
        await consumer.stop()
    assert got[:500] == [(i, key) for i, (key, _) in enumerate(records)]


def test_a_whole_batch_goes_out_as_one_record_batch_and_refuses_to_split(
    kafka_bootstrap: str,
) -> None:
    asyncio.run(_whole(kafka_bootstrap))
