"""Serialised access to one ClickHouse client from asyncio code.

chdb is in-process and its session is not meant for concurrent use, so every call
goes through one worker thread; that also keeps blocking I/O off the event loop. chdb
releases the GIL while ClickHouse works, so the event loop decodes the next batch
meanwhile (see sinks.event_sink). An insert's Python work (its rows into Native bytes)
is done by the caller, on the event loop, so the worker thread holds the GIL as little
as it can (sinks.native).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from clickhouse_connect.datatypes.base import ClickHouseType

from sinks.native import native_block

T = TypeVar("T")

# a UUID as ClickHouse prints one: safe to put in SQL as a literal, as it is
_UUID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_CANONICAL_UUID = re.compile(_UUID_PATTERN)
_CANONICAL_UUIDS = re.compile(f"{_UUID_PATTERN}(?:,{_UUID_PATTERN})*")  # comma-separated


def _millis(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


@dataclass(frozen=True)
class ViewSpec:
    """A materialized view the sink's inserts feed, and how its target is keyed."""

    view: str
    target: str
    key: tuple[str, ...]  # the target's key columns
    source_key: str  # the same key, computed from a row of the source table


# The views on each table the sink writes (migrations 0005, 0007): daily aggregates.
VIEWS_FED_BY: dict[str, tuple[ViewSpec, ...]] = {
    "events": (
        ViewSpec(
            "daily_user_stats_mv",
            "daily_user_stats",
            ("organization_id", "user_id", "day"),
            "organization_id, user_id, toDate(timestamp)",
        ),
        ViewSpec(
            "topic_daily_stats_mv",
            "topic_daily_stats",
            ("organization_id", "topic_id", "day"),
            "organization_id, topic_id, toDate(timestamp)",
        ),
    )
}


class _Verbatim:
    """A bound parameter's text as it is: clickhouse-connect formats a value of a type it
    does not know with ``str()``, without escaping. Only for text that needs none."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __str__(self) -> str:
        return self._text


# the characters clickhouse-connect escapes in a bound string (binding.must_escape)
_ESCAPED = re.compile(r"[\\'`\t\n]")


def _strings(values: Collection[str]) -> Any:
    """A bound ``Array(String)``: verbatim when no value has a character to escape (the
    usual ids), as clickhouse-connect would write it, without its Python loop over every
    character (58 ms for 20 000 UUID-like user ids); else the list, bound as usual."""
    ordered = sorted(values)
    if _ESCAPED.search("".join(ordered)):
        return ordered
    return _Verbatim("['" + "','".join(ordered) + "']")


class ClickHouseWriter:
    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._column_types: dict[tuple[str, tuple[str, ...]], list[ClickHouseType]] = {}

    async def run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def native(
        self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]
    ) -> bytes:
        """``rows`` as the Native block of an insert into ``table``, built here, on the
        caller's thread (sinks.native says why). The column types are asked once per
        table and columns; a failed insert forgets them (a migration may have changed
        them)."""
        key = (table, tuple(columns))
        types = self._column_types.get(key)
        if types is None:

            def describe() -> list[ClickHouseType]:
                context = self.client.create_insert_context(
                    f"{self.database}.{table}", column_names=list(columns)
                )
                return list(context.column_types)

            types = self._column_types[key] = await self.run(describe)
        # columns, not rows: clickhouse-connect would transpose rows in Python loops
        return native_block(
            self.client, f"{self.database}.{table}", columns, types, list(zip(*rows, strict=True))
        )

    async def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        token: str,
        block: bytes | None = None,
    ) -> None:
        """Insert ``rows`` (as ``block``, their Native bytes, when already built) under a
        deduplication token."""
        try:
            data = block if block is not None else await self.native(table, rows, columns)

            def call() -> None:
                self.client.raw_insert(
                    f"{self.database}.{table}",
                    column_names=list(columns),
                    insert_block=data,
                    settings={"insert_deduplication_token": token},
                    fmt="Native",
                )

            await self.run(call)
        except Exception:
            self._column_types.pop((table, tuple(columns)), None)
            raise

    async def answers(self) -> bool:
        """Whether ClickHouse answers a trivial query now."""

        def call() -> bool:
            self.client.query("SELECT 1")
            return True

        try:
            return await self.run(call)
        except Exception:
            return False

    async def stored_high_waters(
        self, table: str, sources: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        """Highest source offset already stored, per (topic, partition) of ``sources``
        that has any: one query for a whole assignment (each reads all of ``table``'s
        source columns, so one per partition cost a scan each)."""
        if not sources:
            return {}

        def call() -> dict[tuple[str, int], int]:
            result = self.client.query(
                f"SELECT source_topic, source_partition, max(source_offset) "
                f"FROM {self.database}.{table} "
                "WHERE source_topic IN {topics:Array(String)} "
                "AND source_partition IN {partitions:Array(UInt32)} "
                "GROUP BY source_topic, source_partition",
                parameters={
                    "topics": sorted({topic for topic, _ in sources}),
                    "partitions": sorted({partition for _, partition in sources}),
                },
            )
            wanted = set(sources)
            return {
                (str(topic), int(partition)): int(offset)
                for topic, partition, offset in result.result_rows
                if (str(topic), int(partition)) in wanted
            }

        return await self.run(call)

    async def recompute_views(
        self, table: str, first_offsets: Mapping[tuple[str, int], int]
    ) -> None:
        """Rebuild, from ``table`` itself, every view row whose key the rows of the given
        source partitions touch, each from its first offset in ``first_offsets`` on:
        delete those keys' rows in each view's target, then insert them again from the
        view's own query. One DELETE and one INSERT per view for all the partitions:
        each statement reads ``table`` whole (its sort key says nothing of sources) and
        each DELETE is a mutation, so statements per partition cost 0.5 s a partition
        (12-14 s for 24 partitions, against 0.2 s for these; BENCHMARKS.md, session 7).

        An insert writes its part of ``table`` and the views' parts one after the other,
        so a crash (SIGKILL) between them leaves the rows stored and the views short;
        the sink's restart then skips those rows as stored. The sink calls this for the
        rows it stored but did not commit in Kafka, which is where that can have
        happened. Recomputing is idempotent (a crash midway is repaired by the next
        start), and right whether the views' parts landed or not."""
        if not first_offsets:
            return
        db = self.database
        sources = sorted(first_offsets)
        params = {
            "topics": sorted({topic for topic, _ in sources}),
            "partitions": sorted({partition for _, partition in sources}),
            "sources": [f"{topic}/{partition}" for topic, partition in sources],
            "firsts": [first_offsets[source] for source in sources],
        }
        # a row is touched when its source is one of ours (position i > 0 in the list)
        # and its offset is at or past that source's first offset
        source_index = (
            "indexOf({sources:Array(String)}, "
            "concat(toString(source_topic), '/', toString(source_partition)))"
        )
        touched = (
            f"FROM {db}.{table} WHERE source_topic IN {{topics:Array(String)}} "
            "AND source_partition IN {partitions:Array(UInt32)} "
            f"AND {source_index} > 0 "
            f"AND source_offset >= arrayElement({{firsts:Array(UInt64)}}, {source_index})"
        )

        def call() -> None:
            for spec in VIEWS_FED_BY.get(table, ()):
                found = self.client.query(
                    "SELECT as_select FROM system.tables "
                    "WHERE database = {db:String} AND name = {view:String}",
                    parameters={"db": db, "view": spec.view},
                ).result_rows
                if not found:  # a database migrated before the view existed
                    continue
                columns = ", ".join(
                    str(row[0])
                    for row in self.client.query(
                        "SELECT name FROM system.columns WHERE database = {db:String} "
                        "AND table = {view:String} ORDER BY position",
                        parameters={"db": db, "view": spec.view},
                    ).result_rows
                )
                key = f"({', '.join(spec.key)})"
                keys = f"SELECT DISTINCT {spec.source_key} {touched}"
                self.client.command(
                    f"DELETE FROM {db}.{spec.target} WHERE {key} IN ({keys})", parameters=params
                )
                self.client.command(
                    f"INSERT INTO {db}.{spec.target} ({columns}) SELECT {columns} "
                    f"FROM ({found[0][0]}) WHERE {key} IN ({keys})",
                    parameters=params,
                )

        await self.run(call)

    async def stored_values(self, table: str, column: str, values: Sequence[str]) -> set[str]:
        """Which of ``values`` a String ``column`` of ``table`` already holds (a column
        with a skip index, or a small table: this reads where the index points)."""
        if not values:
            return set()

        def call() -> set[str]:
            result = self.client.query(
                f"SELECT DISTINCT {column} FROM {self.database}.{table} "
                f"WHERE {column} IN {{values:Array(String)}}",
                parameters={"values": sorted(set(values))},
            )
            return {str(row[0]) for row in result.result_rows}

        return await self.run(call)

    async def stored_event_ids(
        self,
        table: str,
        event_ids: Sequence[str],
        organizations: Collection[str],
        users: Collection[str],
        earliest: datetime,
        latest: datetime,
    ) -> set[str]:
        """Which of ``event_ids`` are stored, among rows of these organizations and users
        between ``earliest`` and ``latest``: bounded by the table's sort key prefix, so it
        reads a few granules, not the table.

        The ids go as one bound string, verbatim: "id,id,…", split and read as UUIDs by
        ClickHouse. clickhouse-connect escapes a bound string character by character
        in Python and formats a bound array element by element; either way, at 20 000
        ids a batch, that was 1.5-2 µs of the sink's GIL per row (BENCHMARKS.md,
        session 8). Only canonical UUIDs qualify (nothing else can be stored in the
        UUID column), which also makes the text safe verbatim: one match over all of
        them shows it for the usual batch."""
        text = ",".join(event_ids)
        if not _CANONICAL_UUIDS.fullmatch(text):
            text = ",".join(i for i in event_ids if _CANONICAL_UUID.fullmatch(i))
        if not text:
            return set()

        def call() -> set[str]:
            result = self.client.query(
                f"SELECT DISTINCT toString(event_id) FROM {self.database}.{table} "
                "WHERE organization_id IN {orgs:Array(String)} "
                "AND user_id IN {users:Array(String)} "
                "AND timestamp BETWEEN fromUnixTimestamp64Milli({lo:Int64}, 'UTC') "
                "AND fromUnixTimestamp64Milli({hi:Int64}, 'UTC') "
                # a subquery: the set is built once (an array expression here was
                # evaluated again and again: 15 s for 200 000 rows)
                "AND event_id IN (SELECT toUUID(arrayJoin(splitByChar(',', {ids:String}))))",
                parameters={
                    "orgs": _strings(organizations),
                    "users": _strings(users),
                    "lo": _millis(earliest),
                    "hi": _millis(latest),
                    "ids": _Verbatim(text),
                },
            )
            return {str(row[0]) for row in result.result_rows}

        return await self.run(call)

    async def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[Any]]:
        """The sink's own reads (erasure bookkeeping). No per-query settings: on chdb a
        per-query ``readonly`` outlived a refused statement and stopped every insert
        after it; analysts' and learners' reads have sessions of their own
        (sinks.read_sessions)."""

        def call() -> tuple[list[str], list[Any]]:
            result = self.client.query(sql, parameters=parameters)
            return list(result.column_names), [list(row) for row in result.result_rows]

        return await self.run(call)

    async def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        await self.run(lambda: self.client.command(sql, parameters=parameters))

    def release(self) -> None:
        """Stop the worker thread; the client stays open for whoever owns it."""
        self._thread.shutdown(wait=True)

    def close(self) -> None:
        self.release()
        self.client.close()
