"""Where a consumer group stands on a topic, asked of the broker directly.

The stall watchdog must not ask Faust's own consumer: when that consumer is the part
that is stuck, its answers (positions, highwaters) can hang with it.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition


class OffsetProbe:
    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._group = group
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    async def _started(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        if self._consumer is None or self._admin is None:
            # no group_id: it reads offsets only, it never joins the group it watches
            self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap)
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
            await self._consumer.start()
            await self._admin.start()
        return self._consumer, self._admin

    async def snapshot(self, partitions: set[int]) -> tuple[dict[int, int], dict[int, int | None]]:
        """(end offsets, where the group resumes) of ``partitions``: its committed offset,
        or the log's first offset where it has committed nothing (it reads from earliest)."""
        consumer, admin = await self._started()
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        committed = await admin.list_consumer_group_offsets(self._group, partitions=tps)
        resumes: dict[int, int | None] = {}
        for tp in tps:
            meta = committed.get(tp)
            resumes[tp.partition] = (
                meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
            )
        return {tp.partition: offset for tp, offset in ends.items()}, resumes

    async def resume_offsets(self, partitions: set[int]) -> dict[int, int]:
        """Where the group resumes each of ``partitions``: its committed offset, moved up
        to the log's first offset where retention deleted what it points at (the consumer
        resets there too), or the first offset where the group has committed nothing."""
        consumer, admin = await self._started()
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        starts = await consumer.beginning_offsets(tps)
        committed = await admin.list_consumer_group_offsets(self._group, partitions=tps)
        resumes = {}
        for tp in tps:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
            resumes[tp.partition] = max(offset, starts[tp])
        return resumes

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()
