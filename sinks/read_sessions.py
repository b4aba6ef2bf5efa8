"""ClickHouse sessions for reads, apart from the sink's ingest client.

Each session is a clickhouse-connect client of its own (on chdb: its own handle on the
process's one engine, with its own SET and USE state; on a server: its own HTTP session),
used by one thread of its own. So a slow read never holds up an insert or another read,
and nothing a read does to its session can reach the ingest client: a per-query setting
that chdb leaves behind after a failed query once made every later insert fail.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from learnstream.settings import Settings
from sinks import analyst_sql
from sinks.analyst_sql import AnalystLimits
from sinks.clickhouse import connect

T = TypeVar("T")

# Learner reads are short, indexed lookups; four at once keep an app's page loads from
# queueing behind one export without giving the process many idle engine handles.
LEARNER_SESSIONS = 4


class Busy(Exception):
    """Every session of a pool is running a query."""


def open_client(settings: Settings, session_settings: Sequence[tuple[str, Any]]) -> Any:
    """A client on the sink's ClickHouse and database, with these session settings in
    order. Migrations are the sink's business; this only opens."""
    client = connect(settings)
    try:
        for name, value in session_settings:
            client.set_client_setting(name, value)
    except Exception:
        client.close()
        raise
    return client


class ReadPool:
    """Sessions, each used by one worker thread of its own.

    A session whose query failed is replaced by a fresh one before its next query: on
    chdb a query that failed while streaming its result (a result over the row limit)
    leaves the rest of that stream on the handle, and the next query on it reads that
    instead of its own answer (seen: IndexError, "unrecognized data found in stream")."""

    def __init__(self, open_session: Callable[[], Any], size: int, name: str) -> None:
        self._open_session = open_session
        self._size = size
        self._clients: list[Any] = []  # every session opened and not yet closed
        self._lock = threading.Lock()
        self._own = threading.local()
        self._threads = ThreadPoolExecutor(size, thread_name_prefix=name)
        self._admitted = threading.BoundedSemaphore(size)

    def _client(self) -> Any:
        client = getattr(self._own, "client", None)
        if client is None:
            client = self._open_session()
            with self._lock:
                self._clients.append(client)
            self._own.client = client
        return client

    def _renew(self) -> None:
        client = self._own.client
        self._own.client = None
        with self._lock:
            self._clients.remove(client)
        client.close()

    def _in_session(self, call: Callable[[Any], T]) -> T:
        try:
            return call(self._client())
        except BaseException:
            if getattr(self._own, "client", None) is not None:
                self._renew()
            raise

    def _submit(self, call: Callable[[Any], T]) -> Future[T]:
        return self._threads.submit(self._in_session, call)

    async def run(self, call: Callable[[Any], T]) -> T:
        """``call(client)`` on the next free session, waiting for one if all are busy."""
        return await asyncio.wrap_future(self._submit(call))

    async def run_now(self, call: Callable[[Any], T]) -> T:
        """``call(client)`` on a free session, or ``Busy`` at once."""
        if not self._admitted.acquire(blocking=False):
            raise Busy(f"all {self._size} sessions are running a query")
        try:
            running = self._submit(call)
        except BaseException:
            self._admitted.release()
            raise
        # released when the query ends, not when its caller stops waiting: a request
        # that goes away does not stop the query its session is running
        running.add_done_callback(lambda _: self._admitted.release())
        return await asyncio.wrap_future(running)

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()


@dataclass(frozen=True)
class ReadSessions:
    """The read API's sessions: apps' learner reads, and analysts' SQL with its limits."""

    database: str
    learner: ReadPool
    analyst: ReadPool
    limits: AnalystLimits
    table_functions: frozenset[str]

    @classmethod
    def open(cls, settings: Settings) -> ReadSessions:
        """Sessions open on first use, in their own threads; one is opened now to learn
        the table functions this ClickHouse has, which also shows it can be reached."""
        limits = AnalystLimits.from_settings(settings)
        probe = open_client(settings, limits.session_settings())
        try:
            functions = analyst_sql.table_function_names(probe)
        finally:
            probe.close()
        return cls(
            settings.clickhouse_database,
            ReadPool(
                functools.partial(open_client, settings, [("readonly", 1)]),
                LEARNER_SESSIONS,
                "learner-reads",
            ),
            ReadPool(
                functools.partial(open_client, settings, limits.session_settings()),
                settings.analyst_max_concurrent_queries,
                "analyst-sql",
            ),
            limits,
            functions,
        )

    async def analyst_query(self, sql: str) -> tuple[list[str], list[list[Any]]]:
        """An analyst's SQL on a session of its own; ``Busy`` when all are in use."""
        return await self.analyst.run_now(
            lambda client: analyst_sql.run(client, sql, self.limits, self.table_functions)
        )

    def close(self) -> None:
        self.analyst.close()
        self.learner.close()
