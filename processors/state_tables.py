"""The rulebook's tables in one Faust table of msgpack bytes, written once per key per
batch, each batch's writes of a partition landing in Kafka whole or not at all.

Every rulebook table (``projections.rulebook.TABLES``) lives in the one Faust table
``learner-state``, its keys prefixed by the rulebook table's name, co-partitioned with
events.raw: a learner's pieces live on the partition of the learner's events. A batch
reads through ``load`` and, once decided, ``store`` writes every touched key once: into
the local store and into the batch's records (``processors.record_batches``), whose
delivery the caller awaits with the batch's other sends before the source offsets are
committed.

Why one table: a batch's state writes must be all-or-nothing. They are the dedup table's
"seen at this offset", the learner summary with the offset it has applied, and the
learner's topic, course and drill pieces. With a changelog topic per table, a worker
killed while sending could leave the topic piece in Kafka and not the summary; its
restart would then apply the event to the topic piece a second time (the soak saw one
mastery value off by 2e-8). In one changelog topic, the writes of a partition go out as
one Kafka record batch (``RecordBatches.add_whole``), which the broker appends whole:
a restart recovers the state after some batches, never after part of one.

Faust's stores pick a key's local partition database from the "current event"; a
batch has many, so each read and write names the partition it belongs to.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import faust
from faust.streams import _current_event  # Faust's own "current event" variable

from learnstream.topics import COMPACTED, TopicSpec
from processors.preloaded_store import PreloadedMemoryStore, preloaded_store
from processors.record_batches import RecordBatches
from projections.rulebook import decode, encode

# The Faust table; earlier releases kept a table per piece ("state-*", before that a
# JSON document per learner): upgrade with ``python -m processors replay``.
TABLE_NAME = "learner-state"
_PREFIX = "\x1e"  # ASCII record separator, between the rulebook table and the key


def changelog_topics(app_id: str) -> list[TopicSpec]:
    """The state table's changelog topic, as Faust names it, to create before any
    worker starts. A worker that creates it itself leads the first rebalance while its
    metadata is not out yet, and Faust's assignor then leaves it out of the assignment:
    the state would never move with its partitions."""
    return [TopicSpec(changelog_topic_name(app_id), dict(CHANGELOG_CONFIG))]


# Compaction never touches a log's active segment (1 GB or 7 days by default), so a
# changelog read in full at every reassignment (the memory store) or first start grew with
# the pipeline's age: the 30-minute soak's recoveries got slower as it went on. Rolling a
# segment every minute lets compaction keep each key's latest value only: a learner's
# summary is rewritten by nearly every batch that touches the learner, so most of an
# uncompacted segment is values already superseded.
CHANGELOG_CONFIG = {**COMPACTED, "segment.ms": "60000", "min.cleanable.dirty.ratio": "0.1"}


def changelog_topic_name(app_id: str) -> str:
    return f"{app_id}-{TABLE_NAME}-changelog"


def _raw_key(table: str, key: str) -> bytes:
    return f"{table}{_PREFIX}{key}".encode()


class StateTables:
    def __init__(
        self, app: faust.App, partitions: int, per_partition: bool, bootstrap: str
    ) -> None:
        """``per_partition``: RocksDB, a database per partition; otherwise the memory
        store, filled in bulk from the changelog (processors.preloaded_store)."""
        self._app = app
        self._per_partition = per_partition
        table: Any = app.Table(TABLE_NAME, default=None, partitions=partitions)
        # Bytes both ways: the pieces are msgpack already. Faust picks JSON for a
        # table without a model type and builds its changelog topic at once, so the
        # topic is built again (recovery reads through it when the worker starts).
        table.key_serializer = table.value_serializer = "raw"
        table.changelog_topic = table._new_changelog_topic()
        self._memory: PreloadedMemoryStore | None = None
        if not per_partition:
            self._memory = preloaded_store(table, bootstrap)
            table._data = self._memory  # what Faust's lazy ``table.data`` would build
        self._table = table
        self.changelog_topic: str = table.changelog_topic.get_topic_name()

    def use_partition_of(self, event: Any) -> None:
        """Reads and writes from here on go to ``event``'s partition (RocksDB keeps a
        database per partition; the memory store has one dict and needs nothing)."""
        if self._per_partition:
            _current_event.set(weakref.ref(event))

    def load(self, table: str, key: str) -> Any:
        try:
            raw = self._table.data[_raw_key(table, key)]
        except KeyError:
            return None
        return decode(table, raw)

    def items(self, table: str) -> Iterator[tuple[str, Any]]:
        """Every (key, piece) of ``table`` held by this worker (for housekeeping scans)."""
        prefix = f"{table}{_PREFIX}".encode()
        for raw_key, raw in self._table.data.items():
            if raw is not None and raw_key.startswith(prefix):
                yield raw_key[len(prefix) :].decode(), decode(table, raw)

    def store(
        self,
        writes: dict[tuple[str, str], tuple[Any, int]],
        events_by_partition: dict[int, Any],
        out: RecordBatches,
        whole: bool = True,
    ) -> None:
        """Write each (table, key) once: into ``out``, one whole record batch per
        partition (``WholeBatchTooLarge`` before anything is written if one would not
        fit), then into the local store. ``whole=False``: in as many record batches as
        it takes, for writes that may land in part because repeating them is harmless
        (an erasure's tombstones: its request is processed again after a crash)."""
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = defaultdict(list)
        for (table, key), (value, partition) in writes.items():
            raw_value = None if value is None else encode(value)
            by_partition[partition].append((_raw_key(table, key), raw_value))
        for partition, records in by_partition.items():
            if whole:
                out.add_whole(self.changelog_topic, partition, records)
            else:
                for raw_key, raw_value in records:
                    out.add_to(self.changelog_topic, raw_key, raw_value, partition)
        if self._memory is not None:
            for partition, records in by_partition.items():
                for raw_key, raw_value in records:
                    self._memory.write(partition, raw_key, raw_value)
            return
        data = self._table.data
        for partition, records in by_partition.items():
            self.use_partition_of(events_by_partition[partition])
            for raw_key, raw_value in records:
                if raw_value is None:
                    with suppress(KeyError):
                        del data[raw_key]
                else:
                    data[raw_key] = raw_value

    def on_sent(self, futures: list[tuple[str, asyncio.Future[Any]]]) -> None:
        """RocksDB remembers the changelog offset it holds, so a restart recovers only
        what came after it (what Faust's own table writes do). A record batch reports
        its first offset: recovery may read a few records again, never miss one."""
        for topic, future in futures:
            if topic == self.changelog_topic:
                future.add_done_callback(self._table._on_changelog_sent)
