"""Records of concurrent requests, gathered into one Kafka record batch per partition.

aiokafka's ``send()`` per record costs a metadata wait, a partitioner call over freshly
built partition sets, a coroutine and a future per record: py-spy had it at 14 % of a
batched event's CPU, more than the producer's own sending (BENCHMARKS.md, issue 14).
Here a record costs one ``BatchBuilder.append`` into the open record batch of its
topic-partition, shared by every request that publishes to that partition meanwhile,
and a request waits for the record batches its records went into.

Per partition, at most one of these record batches is in the producer at a time: the
next one is handed over (``send_batch``) once the previous one is acknowledged, and the
records that arrive meanwhile gather in it. So ``add_batch`` never has a batch of this
partition to wait for (it waits for the previous one to be drained, and with several
waiters shortens its own deadline by the time waited each round: session 6 saw
timeouts with 8 requests in flight), and a round trip carries one record batch per
partition, as aiokafka's own accumulator does. Order within a partition is the order of
``append``; the idempotent producer keeps it across retries.

A record batch whose requests have all given up (answered 503) by the time it would be
handed over is dropped: its records were not acknowledged to anyone, and their clients
send them again.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

# keys whose partition is remembered: a learner's events share their key, so a batch of
# 100 events holds a few dozen distinct keys (aiokafka's murmur2 is pure Python)
KEY_CACHE_SIZE = 65536


class Abandoned(Exception):
    """Every request waiting for the record batch gave up before it was handed over."""


class _Batch:
    """One record batch being filled, then handed over; ``delivered`` resolves with its ack."""

    __slots__ = ("builder", "delivered", "waiters")

    def __init__(self, builder: BatchBuilder, loop: asyncio.AbstractEventLoop) -> None:
        self.builder = builder
        self.delivered: asyncio.Future[None] = loop.create_future()
        self.waiters = 0  # requests that still wait for it (see PartitionBatches.give_up)


class _Partition:
    __slots__ = ("draining", "partition", "queued", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.queued: collections.deque[_Batch] = collections.deque()  # the last one is open
        self.draining: asyncio.Task[None] | None = None


class PartitionBatches:
    """Record batches per topic-partition for whichever producer ``producer()`` is now
    (the publisher replaces a broken one)."""

    def __init__(self, producer: Callable[[], AIOKafkaProducer], timeout_s: float) -> None:
        self._producer = producer
        self._timeout_s = timeout_s
        self._partitions: dict[tuple[str, int], _Partition] = {}
        # topic -> (its partitions, sorted; their partition of each key seen)
        self._keys: dict[str, tuple[list[int], dict[bytes, int]]] = {}

    async def partitioner(self, topic: str) -> Callable[[bytes | None], int]:
        """The partition of a key, as aiokafka's default partitioner picks it (murmur2 of
        the key, as the Java client; any available partition for no key)."""
        producer: Any = self._producer()  # aiokafka's metadata and partitioner are untyped
        metadata = producer.client.cluster
        partitions = metadata.partitions_for_topic(topic)
        if partitions is None:
            partitions = await producer.client._wait_on_metadata(topic)
        ordered = sorted(partitions)
        known = self._keys.get(topic)
        if known is None or known[0] != ordered or len(known[1]) >= KEY_CACHE_SIZE:
            known = self._keys[topic] = (ordered, {})
        by_key = known[1]
        partition_of = producer._partitioner

        def partition(key: bytes | None) -> int:
            if key is None:
                available = sorted(metadata.available_partitions_for_topic(topic) or ())
                return int(partition_of(None, ordered, available))
            found = by_key.get(key)
            if found is None:
                found = by_key[key] = int(partition_of(key, ordered, ordered))
            return found

        return partition

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes) -> _Batch:
        """Put one record in the open record batch of (topic, partition); the batch it
        went into, whose ``delivered`` tells its fate."""
        part = self._partitions.get((topic, partition))
        if part is None:
            part = self._partitions[(topic, partition)] = _Partition(topic, partition)
        queued = part.queued
        if queued:
            batch = queued[-1]
            if batch.builder.append(timestamp=None, key=key, value=value) is not None:
                return batch
        batch = _Batch(self._producer().create_batch(), asyncio.get_running_loop())
        batch.builder.append(timestamp=None, key=key, value=value)  # an empty one takes any
        queued.append(batch)
        if part.draining is None:
            # runs after the caller's other appends: its records go in the same batch
            part.draining = asyncio.ensure_future(self._drain(part))
        return batch

    async def _drain(self, part: _Partition) -> None:
        """Hand this partition's record batches over one at a time, each after the
        previous one's ack."""
        lingered = False  # the first batch lingers as the producer's linger_ms says
        try:
            while part.queued:
                batch = part.queued.popleft()
                if batch.waiters == 0:
                    _fail(batch, Abandoned("every request waiting for it gave up"))
                    continue
                if lingered:  # it gathered records for a whole round trip already
                    batch.builder.close()
                await self._hand_over(part, batch)
                lingered = True
        finally:
            part.draining = None
            while part.queued:  # only when cancelled: the loop leaves none otherwise
                _fail(part.queued.popleft(), Abandoned("the publisher stopped"))

    async def _hand_over(self, part: _Partition, batch: _Batch) -> None:
        producer = self._producer()
        try:
            delivery = await producer.send_batch(
                batch.builder, part.topic, partition=part.partition
            )
            # an idempotent producer retries until the broker answers; give up on it only
            # when it was replaced (after a fatal error its futures may never resolve)
            while not delivery.done():
                await asyncio.wait([delivery], timeout=self._timeout_s)
                if not delivery.done() and self._producer() is not producer:
                    raise Abandoned("the producer was replaced before it acknowledged")
            delivery.result()
        except asyncio.CancelledError:
            _fail(batch, Abandoned("the publisher stopped"))
            raise
        except Exception as exc:
            _fail(batch, exc)
        else:
            if not batch.delivered.done():
                batch.delivered.set_result(None)

    async def flush(self) -> None:
        """Wait until every record batch queued so far was handed over and answered."""
        waiting = [p.draining for p in self._partitions.values() if p.draining is not None]
        if waiting:
            await asyncio.wait(waiting)

    def cancel(self) -> None:
        for part in self._partitions.values():
            if part.draining is not None:
                part.draining.cancel()


def _fail(batch: _Batch, error: BaseException) -> None:
    if not batch.delivered.done():
        batch.delivered.set_exception(error)
        batch.delivered.exception()  # retrieved: a request that gave up never awaits it
