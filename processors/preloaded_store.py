"""Faust's memory store, filled from its changelog in bulk when partitions are assigned.

A worker on the memory store rebuilds each state partition it is given from the
changelog. Faust's recovery reads the changelog one record per event-loop round trip
(a ``wait_for`` on its queue for every record): about 12,000 records/s on the 2-core
development machine, 20 s for 240,000 records (BENCHMARKS.md, session 7). The dedup
window's ids alone are a record per event, so a worker that was killed, or that took
over from one that left, took longer to start again the older the pipeline was.

This store reads the assigned changelog partitions itself, in bulk with a plain
aiokafka consumer, up to their end offsets, before Faust's recovery starts, and reports
the last offset it read as the partition's *persisted offset* (what RocksDB reports for
the state it holds on disk). Faust's recovery then only reads what came after that: in
practice nothing, or the few records an old owner was still flushing. What the store
holds is exactly what Faust's own recovery would have built: the same records, applied
in offset order, tombstones deleting.

While the worker runs, every acknowledged changelog write moves the persisted offset
on (Faust reports each through ``set_persisted_offset``), so a partition kept across a
rebalance is not read again. A partition revoked is forgotten; given back later, it is
read again from the start (Faust drops a revoked partition's keys from the store once
recovery completes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores.memory import Store as MemoryStore
from faust.types import TP

log = logging.getLogger(__name__)

_FETCH_MAX_BYTES = 64 * 1024 * 1024
# No record for this long (the broker gone meanwhile): fail the rebalance, so the worker
# exits and is restarted, rather than wait inside it for ever.
STALL_S = 60.0


class PreloadStalled(RuntimeError):
    pass


class PreloadedMemoryStore(MemoryStore[bytes, bytes]):
    bootstrap: str = ""  # set by ``preloaded_store``

    def __post_init__(self) -> None:
        super().__post_init__()
        # changelog partition -> the last offset whose record this store holds
        self._persisted: dict[TP, int] = {}

    def persisted_offset(self, tp: TP) -> int | None:
        return self._persisted.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        # acknowledged writes of this worker: already in the store (written before they
        # were sent). A record batch reports its first offset: recovery may read the
        # batch's later records again, which rewrites the same values.
        if tp in self._persisted:
            self._persisted[tp] = max(self._persisted[tp], offset)

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        topic = self.table.changelog_topic.get_topic_name()
        for tp in revoked:
            self._persisted.pop(tp, None)
        wanted = sorted(
            (tp for tp in assigned if tp.topic == topic and tp not in self._persisted),
            key=lambda tp: tp.partition,
        )
        if wanted:
            await self._preload(wanted)

    async def _preload(self, tps: list[TP]) -> None:
        started = time.monotonic()
        # left over from an earlier assignment of these partitions
        self._forget_partitions({tp.partition for tp in tps})
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_bytes=_FETCH_MAX_BYTES,
            max_partition_fetch_bytes=_FETCH_MAX_BYTES,
        )
        await consumer.start()
        try:
            partitions = [TopicPartition(tp.topic, tp.partition) for tp in tps]
            consumer.assign(partitions)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
            # an explicit seek: aiokafka's seek_to_beginning, right after end_offsets,
            # left the positions at the end (seen with aiokafka 0.14)
            starts: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
            for partition in partitions:
                consumer.seek(partition, starts[partition])
            remaining = {p for p in partitions if ends[p] > starts[p]}
            records = 0
            progressed = time.monotonic()
            while remaining:
                fetched = await consumer.getmany(*remaining, timeout_ms=1000)
                for partition, batch in fetched.items():
                    records += len(batch)
                    self._apply(partition.partition, batch)
                if fetched:
                    progressed = time.monotonic()
                elif time.monotonic() - progressed > STALL_S:
                    raise PreloadStalled(
                        f"no changelog record for {STALL_S:.0f} s while reading "
                        f"{sorted(p.partition for p in remaining)} of {tps[0].topic}"
                    )
                for partition in list(remaining):
                    if await consumer.position(partition) >= ends[partition]:
                        remaining.discard(partition)
            for partition in partitions:
                if ends[partition] > starts[partition]:
                    self._persisted[TP(partition.topic, partition.partition)] = ends[partition] - 1
        finally:
            await consumer.stop()
        log.info(
            "state: read %d changelog records of %d partitions in %.2f s",
            records,
            len(tps),
            time.monotonic() - started,
        )

    def write(self, partition: int, key: bytes, value: bytes | None) -> None:
        """A live write (None deletes), remembered with its partition so that the
        partition's keys can be dropped when it is read again."""
        if value is None:
            self.data.pop(key, None)
            self._key_partition.pop(key, None)
        else:
            self.data[key] = value
            self._key_partition[key] = partition

    def _apply(self, partition: int, records: Iterable[Any]) -> None:
        for record in records:
            self.write(partition, record.key, record.value)

    def _forget_partitions(self, partitions: set[int]) -> None:
        stale = [k for k, p in self._key_partition.items() if p in partitions]
        for key in stale:
            self.data.pop(key, None)
            self._key_partition.pop(key, None)


def preloaded_store(table: Any, bootstrap: str) -> PreloadedMemoryStore:
    """The store for ``table`` (built as Faust's ``Collection._new_store_by_url`` does)."""
    store = PreloadedMemoryStore(
        "memory://",
        table.app,
        table,
        table_name=table.name,
        key_type=table.key_type,
        key_serializer=table.key_serializer,
        value_serializer=table.value_serializer,
        value_type=table.value_type,
        loop=table.loop,
        options=table.options,
    )
    store.bootstrap = bootstrap
    return store
