"""The rulebook's tables as Faust tables of msgpack bytes, written once per key per batch.

Each rulebook table (``projections.rulebook.TABLES``) is a Faust table keyed and valued
by raw bytes, co-partitioned with events.raw: a learner's pieces live on the partition
of the learner's events. A batch reads through ``load`` and, once decided, ``store``
writes every touched key once: into the local store and, as one changelog record, to
Kafka, returning the delivery futures so the caller can await them with the batch's
other sends before the source offsets are committed.

Faust's stores pick a key's local partition database from the "current event"; a
batch has many, so each read and write names the partition it belongs to.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Iterator
from contextlib import suppress
from typing import Any, cast

import faust
from faust.streams import _current_event  # Faust's own "current event" variable

from learnstream.topics import COMPACTED, TopicSpec
from projections.rulebook import TABLES, decode, encode

# rulebook table -> Faust table name; "state-" keeps them apart from the JSON tables of
# earlier releases (upgrade with ``python -m processors replay``)
FAUST_NAMES = {table: f"state-{table}" for table in TABLES}


def changelog_topics(app_id: str) -> list[TopicSpec]:
    """The state tables' changelog topics, as Faust names them, to create before any
    worker starts. A worker that creates them itself leads the first rebalance while
    their metadata is not out yet, and Faust's assignor then leaves the missing ones
    out of the assignment: their state would never move with its partitions."""
    return [
        TopicSpec(f"{app_id}-{name}-changelog", dict(COMPACTED)) for name in FAUST_NAMES.values()
    ]


class StateTables:
    def __init__(self, app: faust.App, partitions: int, per_partition: bool) -> None:
        self._app = app
        self._per_partition = per_partition
        self.tables: dict[str, Any] = {}
        for table, name in FAUST_NAMES.items():
            faust_table: Any = app.Table(name, default=None, partitions=partitions)
            # Bytes both ways: the pieces are msgpack already. Faust picks JSON for a
            # table without a model type and builds its changelog topic at once, so the
            # topic is built again (recovery reads through it when the worker starts).
            faust_table.key_serializer = faust_table.value_serializer = "raw"
            faust_table.changelog_topic = faust_table._new_changelog_topic()
            self.tables[table] = faust_table

    def use_partition_of(self, event: Any) -> None:
        """Reads and writes from here on go to ``event``'s partition (RocksDB keeps a
        database per partition; the memory store has one dict and needs nothing)."""
        if self._per_partition:
            _current_event.set(weakref.ref(event))

    def changelog_topic(self, table: str) -> str:
        name: str = self.tables[table].changelog_topic.get_topic_name()
        return name

    def load(self, table: str, key: str) -> Any:
        data = self.tables[table].data
        try:
            raw = data[key.encode()]
        except KeyError:
            return None
        return decode(table, raw)

    def items(self, table: str) -> Iterator[tuple[str, Any]]:
        """Every (key, piece) of ``table`` held by this worker (for housekeeping scans)."""
        for key, raw in self.tables[table].data.items():
            if raw is not None:
                yield key.decode(), decode(table, raw)

    async def store(
        self, writes: dict[tuple[str, str], tuple[Any, int]], events_by_partition: dict[int, Any]
    ) -> list[Awaitable[Any]]:
        """Write each (table, key) once; the futures of their changelog records."""
        producer = self._app.producer
        futures: list[Awaitable[Any]] = []
        current = None
        for (table, key), (value, partition) in writes.items():
            faust_table = self.tables[table]
            raw_key = key.encode()
            raw_value = None if value is None else encode(value)
            if partition != current:
                self.use_partition_of(events_by_partition[partition])
                current = partition
            if raw_value is None:
                with suppress(KeyError):
                    del faust_table.data[raw_key]
            else:
                faust_table.data[raw_key] = raw_value
            future = await producer.send(
                faust_table.changelog_topic.get_topic_name(),
                raw_key,
                raw_value,
                partition,
                None,
                None,
            )
            # RocksDB remembers the changelog offset it holds, so a restart recovers
            # only what came after it (what Faust's own table writes do)
            cast(asyncio.Future[Any], future).add_done_callback(faust_table._on_changelog_sent)
            futures.append(future)
        return futures
