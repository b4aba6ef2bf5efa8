"""A batch's output records, sent as one Kafka record batch per topic-partition.

``producer.send`` per record costs a metadata wait, a partitioner call over freshly built
partition lists, and one asyncio future per record (aiokafka's ``get_running_loop`` was
5 % of the processors' samples alone). The processors await all of a batch's records
together anyway, so they are grouped here by topic-partition into aiokafka's
``BatchBuilder`` (``create_batch``), and each builder is handed over with
``send_batch``: one future per record batch. Order within a partition is the order of
``add``; the producer's idempotence, compression and linger apply as for ``send``.

Keyed records go to the partition aiokafka's default partitioner gives their key
(murmur2, as the Java client), so a key lands where ``send`` would have put it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

# A whole batch's bound, uncompressed: well under the broker's default max.message.bytes
# (1 MiB per record batch, compressed), so the broker never refuses one for its size.
WHOLE_BATCH_BYTES = 768 * 1024


class WholeBatchTooLarge(ValueError):
    """Records that must land together do not fit in one record batch."""


class RecordBatches:
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._builders: dict[tuple[str, int], list[Any]] = {}
        self._whole: dict[tuple[str, int], Any] = {}  # one record batch each, all or nothing
        self._partitions: dict[str, tuple[list[int], list[int]]] = {}  # all, available
        self.records = 0

    @classmethod
    def of(cls, app: Any) -> RecordBatches:
        """For the aiokafka producer under a Faust app's producer (started with it)."""
        return cls(app.producer._ensure_producer())

    async def add(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Queue one record for the partition of its key (any, if it has none)."""
        self.add_to(topic, key, value, await self._partition_of(topic, key))

    def add_to(self, topic: str, key: bytes | None, value: bytes | None, partition: int) -> None:
        """Queue one record for ``partition``."""
        builders = self._builders.get((topic, partition))
        if builders is None:
            builders = self._builders[(topic, partition)] = [self._producer.create_batch()]
        if builders[-1].append(timestamp=None, key=key, value=value) is None:  # full
            builder = self._producer.create_batch()
            builder.append(timestamp=None, key=key, value=value)  # an empty one takes any
            builders.append(builder)
        self.records += 1

    def add_whole(
        self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]
    ) -> None:
        """Queue ``records`` into the one record batch of (topic, partition) that this
        send makes whole: the broker appends a record batch entirely or not at all.
        ``WholeBatchTooLarge`` if they do not fit (then discard this RecordBatches)."""
        builder = self._whole.get((topic, partition))
        if builder is None:
            compression = self._producer._message_accumulator._compression_type
            builder = BatchBuilder(WHOLE_BATCH_BYTES, compression, is_transactional=False)
            self._whole[(topic, partition)] = builder
        for key, value in records:
            if builder.append(timestamp=None, key=key, value=value) is None:
                raise WholeBatchTooLarge(
                    f"{len(records)} records for {topic} partition {partition} exceed "
                    f"{WHOLE_BATCH_BYTES} bytes"
                )
        self.records += len(records)

    async def _partition_of(self, topic: str, key: bytes | None) -> int:
        known = self._partitions.get(topic)
        if known is None:
            producer: Any = self._producer  # aiokafka's partitioner and metadata are untyped
            await producer.client._wait_on_metadata(topic)
            metadata = producer._metadata
            known = (
                sorted(metadata.partitions_for_topic(topic)),
                sorted(metadata.available_partitions_for_topic(topic)),
            )
            self._partitions[topic] = known
        partition: int = self._producer._partitioner(key, *known)
        return partition

    async def send(self) -> list[tuple[str, asyncio.Future[Any]]]:
        """Hand every record batch to the producer: (topic, delivery future) of each."""
        futures = []
        every = [(tp, b) for tp, builders in self._builders.items() for b in builders]
        every += list(self._whole.items())
        for (topic, partition), builder in every:
            future = await self._producer.send_batch(builder, topic, partition=partition)
            futures.append((topic, future))
        self._builders = {}
        self._whole = {}
        return futures
