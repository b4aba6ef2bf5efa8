"""Serialised access to one ClickHouse client from asyncio code.

chdb is in-process and its session is not meant for concurrent use, so every call
goes through one worker thread; that also keeps blocking I/O off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")


def _millis(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


class ClickHouseWriter:
    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")

    async def run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def insert(
        self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], token: str
    ) -> None:
        def call() -> None:
            self.client.insert(
                f"{self.database}.{table}",
                list(rows),
                column_names=list(columns),
                settings={"insert_deduplication_token": token},
            )

        await self.run(call)

    async def answers(self) -> bool:
        """Whether ClickHouse answers a trivial query now."""

        def call() -> bool:
            self.client.query("SELECT 1")
            return True

        try:
            return await self.run(call)
        except Exception:
            return False

    async def stored_high_water(self, table: str, topic: str, partition: int) -> int | None:
        """Highest source offset already stored for a partition, if any."""

        def call() -> int | None:
            result = self.client.query(
                f"SELECT maxOrNull(source_offset) FROM {self.database}.{table} "
                "WHERE source_topic = {topic:String} AND source_partition = {partition:UInt32}",
                parameters={"topic": topic, "partition": partition},
            )
            value = result.result_rows[0][0]
            return None if value is None else int(value)

        return await self.run(call)

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
        self, table: str, keys: Sequence[tuple[str, str, datetime, str]]
    ) -> set[str]:
        """Which of these (organization_id, user_id, timestamp, event_id) are stored.
        Bounded by the table's sort key prefix, so it reads a few granules, not the table."""
        if not keys:
            return set()

        def call() -> set[str]:
            result = self.client.query(
                f"SELECT DISTINCT toString(event_id) FROM {self.database}.{table} "
                "WHERE organization_id IN {orgs:Array(String)} "
                "AND user_id IN {users:Array(String)} "
                "AND timestamp BETWEEN fromUnixTimestamp64Milli({lo:Int64}, 'UTC') "
                "AND fromUnixTimestamp64Milli({hi:Int64}, 'UTC') "
                "AND toString(event_id) IN {ids:Array(String)}",
                parameters={
                    "orgs": sorted({k[0] for k in keys}),
                    "users": sorted({k[1] for k in keys}),
                    "lo": min(_millis(k[2]) for k in keys),
                    "hi": max(_millis(k[2]) for k in keys),
                    "ids": sorted({k[3] for k in keys}),
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
