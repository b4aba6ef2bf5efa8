"""Stream topics into their ClickHouse tables, each record exactly once.

Progress of record is what ClickHouse holds: before inserting, each partition's
messages at or below the highest offset already stored are dropped, so an insert
that landed before a crash (but whose Kafka commit did not) is never repeated. That
high-water mark is read once per partition assignment and advanced by our inserts.
Offsets are committed to
Kafka only after the insert succeeded; while ClickHouse is down the same planned
insert is retried with backoff, under the same deduplication token.

A record the sink cannot store because of its content (bytes that do not decode, a
value ClickHouse refuses) is a dead letter, not a retry: an insert refused for its
rows is split in halves until the refused rows are found; they go to
``events_invalid`` with ClickHouse's error and the rest is stored. A dead letter is
written under a token and key of its own source offset, so writing it again after a
crash changes nothing (see sinks.failures for how the two kinds are told apart).

A batch is decoded while the batch before it is being stored (chdb releases the GIL
while ClickHouse works), and stored only once that one is stored and committed: the
high-water marks, the "already stored?" lookup and the commits all see batches in
order. Rows stored but not committed when the sink (re)starts are where an insert may
have landed in ``events`` without its materialized views' parts (a SIGKILL between
the two): their view rows are recomputed from ``events`` (sinks.writer.recompute_views).

What it inserts, skips, dead-letters, retries and commits is told to a
``SinkObserver`` (sinks.metrics turns that into Prometheus metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from learnstream.erasure import ErasureRequest
from sinks.batching import PendingRow, PlannedInsert, halves, pending_row, plan_inserts
from sinks.erasure import Erasures
from sinks.failures import Fault, fault_of
from sinks.metrics import Operation, SinkObserver
from sinks.routes import Route
from sinks.rows import INVALID_COLUMNS, to_json
from sinks.writer import VIEWS_FED_BY, ClickHouseWriter

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 10.0
# /readyz turns unready once this many attempts in a row failed for infrastructure
UNREADY_AFTER_FAILURES = 3
INVALID_TABLE = "events_invalid"
PREPARE_SLICE = 1000  # records decoded between two turns of the event loop


@dataclass(frozen=True)
class DeadLetter:
    """A source record the sink will never store in its table, and why."""

    topic: str
    partition: int
    offset: int
    raw: str  # the row as JSON, or the record's bytes when they did not decode
    error: str

    @property
    def token(self) -> str:
        return f"dead-letter/{self.topic}/{self.partition}/{self.offset}"

    @property
    def source(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def row(self) -> list[Any]:
        errors = [{"field": "(record)", "message": self.error[:4000]}]
        return [
            datetime.now(UTC),
            "sink",
            "",
            self.raw,
            to_json(errors),
            ["(record)"],
            self.topic,
            self.partition,
            self.offset,
            self.token,  # its letter_id: one per source record
        ]


@dataclass
class Prepared:
    """A batch as fetched, and its records already turned into rows (or dead letters)."""

    batch: dict[TopicPartition, list[Any]]
    rows: dict[TopicPartition, list[PendingRow]]
    dead: list[DeadLetter]  # records whose row could not be built
    owned: set[TopicPartition] = field(default_factory=set)  # still ours when stored


@dataclass(frozen=True)
class Refused:
    """ClickHouse refused the rows themselves: retrying them can never succeed."""

    error: Exception

    @property
    def reason(self) -> str:
        """The error and what caused it (the client names the column, its cause why)."""
        cause = self.error.__cause__
        return f"{self.error} ({cause})" if cause is not None else str(self.error)


class _ForgetOnRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Whoever owned a partition before may have stored more: re-read it from ClickHouse."""

    def __init__(self, sink: EventSink) -> None:
        self._sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._sink.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._sink.forget(assigned)


class EventSink:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        writer: ClickHouseWriter,
        routes: dict[str, Route],
        max_rows: int,
        max_wait_s: float,
        erasure_topic: str | None = None,
        observer: SinkObserver | None = None,
    ) -> None:
        self._consumer = consumer
        self._observer = observer or SinkObserver()
        self._erasure_topic = erasure_topic
        self._erasures = Erasures(writer)
        self._writer = writer
        self._routes = routes
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._stopping = asyncio.Event()
        # highest source offset ClickHouse holds, per partition we own (None: nothing)
        self._stored: dict[TopicPartition, int | None] = {}
        self._generation = 0  # rebalances seen: a high-water read across one is stale
        self.rows_inserted = 0
        self.copies_skipped = 0  # events already stored, re-sent at a new offset
        self.redelivered_skipped = 0
        self.erased_skipped = 0  # events of erased learners that arrived after the erasure
        self.erasures_applied = 0
        self.dead_lettered = 0
        self.letters_skipped = 0  # dead letters already stored, refused and sent again
        self.views_repaired = 0  # partitions whose view rows were recomputed at start
        self._failures_in_a_row = 0
        self._last_failure = ""

    @classmethod
    def create(
        cls,
        bootstrap: str,
        routes: dict[str, Route],
        group_id: str,
        writer: ClickHouseWriter,
        max_rows: int,
        max_wait_s: float,
        erasure_topic: str | None = None,
        observer: SinkObserver | None = None,
    ) -> EventSink:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_rows,
        )
        sink = cls(consumer, writer, routes, max_rows, max_wait_s, erasure_topic, observer)
        topics = sorted({*routes, *([erasure_topic] if erasure_topic else [])})
        consumer.subscribe(topics, listener=_ForgetOnRebalance(sink))
        return sink

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """The sink's Kafka consumer, for observing it (e.g. its lag); not for driving it."""
        return self._consumer

    def forget(self, partitions: set[TopicPartition]) -> None:
        self._generation += 1
        for tp in partitions:
            self._stored.pop(tp, None)
        self._observer.rebalanced(partitions)

    async def _stored_up_to(self, tp: TopicPartition) -> int | None:
        while tp not in self._stored:
            # the whole assignment at once: one high-water query and one view repair
            # for all the partitions a (re)start or rebalance handed over
            owned = {p for p in self._consumer.assignment() if p.topic in self._routes}
            await self._load_high_waters(owned | {tp})
        return self._stored[tp]

    async def _load_high_waters(self, partitions: set[TopicPartition]) -> None:
        """Read what ClickHouse holds for each partition not known yet, per table, and
        repair the views of whatever of it was stored but not committed."""
        generation = self._generation
        by_table: dict[str, list[TopicPartition]] = defaultdict(list)
        for tp in partitions - self._stored.keys():
            by_table[self._routes[tp.topic].table].append(tp)
        for table, tps in by_table.items():
            sources = [(tp.topic, tp.partition) for tp in sorted(tps)]
            found = await self._writer.stored_high_waters(table, sources)
            stored = {tp: found.get((tp.topic, tp.partition)) for tp in tps}
            for tp, offset in sorted(stored.items()):
                if offset is not None:
                    log.info("%s: ClickHouse holds up to offset %d", tp, offset)
            await self._repair_views(table, stored)
            if self._generation != generation:
                # a rebalance meanwhile: another owner may have stored more since the
                # query, so nothing read before it is kept (the caller reads again)
                return
            self._stored.update(stored)

    async def _repair_views(self, table: str, stored: dict[TopicPartition, int | None]) -> None:
        """Rows stored but not committed in Kafka: the sink stopped between an insert and
        its commit, maybe (SIGKILL) between the insert's part of the table and its views'
        parts. Skipping those rows as stored would leave the views short for good, so
        their view rows are recomputed from the table (see recompute_views): for all
        such partitions at once, one statement per view."""
        if not VIEWS_FED_BY.get(table):
            return
        first_offsets: dict[tuple[str, int], int] = {}
        for tp, offset in sorted(stored.items()):
            if offset is None:
                continue
            first = await self._consumer.committed(tp) or 0
            if first > offset:  # everything stored was committed: the usual start
                continue
            log.warning(
                "%s: offsets %d-%d were stored but not committed; recomputing their views",
                tp,
                first,
                offset,
            )
            first_offsets[(tp.topic, tp.partition)] = first
        if first_offsets:
            await self._writer.recompute_views(table, first_offsets)
            self.views_repaired += len(first_offsets)

    def stop(self) -> None:
        self._stopping.set()

    def unready_reason(self) -> str | None:
        """Why the sink is not storing anything now, or None while it is."""
        if self._failures_in_a_row < UNREADY_AFTER_FAILURES:
            return None
        return f"{self._failures_in_a_row} attempts in a row failed: {self._last_failure}"

    async def run(self) -> None:
        """Collect, prepare, store and commit batch after batch. A batch is collected
        and decoded while the one before it is being stored (chdb works without the
        GIL), but stored and committed strictly after it: every lookup of a batch sees
        the rows of the batches before it, and offsets are committed in order."""
        if self._erasure_topic is not None:
            await self._erasures.load()
        await self._consumer.start()
        storing: asyncio.Task[bool] | None = None
        try:
            while not self._stopping.is_set():
                batch = await self._collect()
                prepared = await self._prepare(batch) if batch else None
                if storing is not None:
                    landed = await storing
                    storing = None
                    if not landed:
                        break
                if prepared is not None:
                    storing = asyncio.create_task(self._store_and_commit(prepared))
            if storing is not None:
                await storing
                storing = None
        finally:
            if storing is not None:  # the loop failed: the batch in flight is abandoned
                storing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await storing
            await self._consumer.stop()

    async def _store_and_commit(self, prepared: Prepared) -> bool:
        """Store a prepared batch, then commit its offsets; False if asked to stop first."""
        if not await self._store(prepared):
            return False
        held = self._consumer.assignment()  # a rebalance may have moved some meanwhile
        offsets = {
            tp: messages[-1].offset + 1
            for tp, messages in prepared.batch.items()
            if tp in prepared.owned and tp in held
        }
        if offsets:
            try:
                await self._consumer.commit(offsets)
            except (IllegalStateError, CommitFailedError) as exc:
                # the partitions moved while the rows were stored: the new owner skips
                # them by the highest offset stored per partition (exactly-once holds)
                log.info("not committing %s after a rebalance: %r", sorted(offsets), exc)
                return True
            self._observer.committed(offsets)
        return True

    async def _collect(self) -> dict[TopicPartition, list[Any]]:
        """Gather up to max_rows, waiting at most max_wait_s after the first message."""
        batch: dict[TopicPartition, list[Any]] = defaultdict(list)
        count = 0
        deadline: float | None = None
        while count < self._max_rows and not self._stopping.is_set():
            remaining = 0.2 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                break
            fetched = await self._consumer.getmany(
                timeout_ms=int(remaining * 1000), max_records=self._max_rows - count
            )
            for tp, messages in fetched.items():
                batch[tp].extend(messages)
                count += len(messages)
            if count and deadline is None:
                deadline = time.monotonic() + self._max_wait_s
            if not count and deadline is None:
                return {}
        return dict(batch)

    async def _prepare(self, batch: dict[TopicPartition, list[Any]]) -> Prepared:
        """Decode every record into its row: the CPU part of a batch, which needs
        nothing from ClickHouse. A record whose row cannot be built is a dead letter,
        even at or below the high-water mark: its dead letter may not have been written
        before a crash, and writing it again is harmless.

        It gives the event loop a turn every PREPARE_SLICE records, so the batch being
        stored meanwhile moves on as soon as ClickHouse answers (its lookup done, its
        insert starts) rather than after the whole batch is decoded."""
        rows: dict[TopicPartition, list[PendingRow]] = {}
        dead: list[DeadLetter] = []
        for tp, messages in batch.items():
            if tp.topic == self._erasure_topic:
                continue
            to_row = self._routes[tp.topic].to_row
            topic, partition = tp.topic, tp.partition
            built = rows[tp] = []
            for start in range(0, len(messages), PREPARE_SLICE):
                if start:
                    await asyncio.sleep(0)
                for message in messages[start : start + PREPARE_SLICE]:
                    try:
                        moment, row = to_row(message, topic, partition)
                    except Exception as exc:  # bytes that do not decode: its content, for good
                        raw = bytes(message.value or b"").hex()
                        dead.append(DeadLetter(topic, partition, message.offset, raw, repr(exc)))
                        continue
                    built.append(pending_row((message.offset, moment, row)))
        return Prepared(batch, rows, dead)

    async def _store(self, prepared: Prepared) -> bool:
        """Insert every planned run; False if asked to stop before all landed.

        Erasures go first, so events of a learner erased in this batch are dropped.
        Dead letters go last, after the rows before them landed (see DeadLetter)."""
        # a partition lost to a rebalance since the batch was fetched is its new owner's
        owned = self._consumer.assignment()
        prepared.owned = {tp for tp in prepared.batch if tp in owned}
        dead: list[DeadLetter] = []
        for tp, messages in prepared.batch.items():
            if tp.topic != self._erasure_topic or tp not in prepared.owned:
                continue
            for message in messages:
                if not await self._apply_erasure(tp, message, dead):
                    return False
        dead.extend(letter for letter in prepared.dead if letter.source in prepared.owned)
        by_table: dict[str, tuple[Route, dict[tuple[str, int], list[PendingRow]]]] = {}
        for tp, built in prepared.rows.items():
            if tp not in prepared.owned:
                continue
            route = self._routes[tp.topic]
            pending = await self._not_stored(tp, built)
            if route.unique_events:
                pending = self._not_erased(route, pending)
            by_table.setdefault(route.table, (route, {}))[1][(tp.topic, tp.partition)] = pending
        for route, pending_by_source in by_table.values():
            for plan, block in await self._plans_of_new_rows(route, pending_by_source):
                if not await self._insert_plan(route, plan, dead, block):
                    return False
        for letter in dead:
            if not await self._store_dead_letter(letter):
                return False
        return True

    async def _apply_erasure(
        self, tp: TopicPartition, message: Any, dead: list[DeadLetter]
    ) -> bool:
        try:
            request = ErasureRequest.from_json(message.value)
        except Exception as exc:  # its content: it can never be applied
            raw = bytes(message.value or b"").decode("utf-8", errors="replace")
            dead.append(DeadLetter(tp.topic, tp.partition, message.offset, raw, repr(exc)))
            return True
        outcome = await self._with_retry(
            functools.partial(self._erasures.apply, request), "erase", "erasure"
        )
        if outcome is False:
            return False
        if isinstance(outcome, Refused):
            dead.append(
                DeadLetter(
                    tp.topic,
                    tp.partition,
                    message.offset,
                    request.to_json().decode(),
                    outcome.reason,
                )
            )
        else:
            self.erasures_applied += 1
        return True

    async def _not_stored(self, tp: TopicPartition, built: list[PendingRow]) -> list[PendingRow]:
        """The rows above the partition's high-water mark: not stored yet."""
        stored = await self._stored_up_to(tp)
        if stored is None or not built or built[0].offset > stored:  # in offset order
            return built
        pending = [item for item in built if item.offset > stored]
        redelivered = len(built) - len(pending)
        self.redelivered_skipped += redelivered
        self._observer.skipped("redelivered", redelivered)
        return pending

    def _not_erased(self, route: Route, pending: list[PendingRow]) -> list[PendingRow]:
        if not self._erasures.erased_at_ms:  # the usual case: nobody to look up
            return pending
        kept = []
        for item in pending:
            _, user, moment, _ = route.event_key(item.row)
            if not self._erasures.drops(user, moment):
                kept.append(item)
        self.erased_skipped += len(pending) - len(kept)
        self._observer.skipped("erased", len(pending) - len(kept))
        return kept

    async def _first_letters(
        self, route: Route, pending: dict[tuple[str, int], list[PendingRow]]
    ) -> dict[tuple[str, int], list[PendingRow]]:
        """Drop dead letters whose letter_id is already stored or earlier in this batch:
        the same refusal, sent again (a batch re-posted after a 503). One lookup."""
        position = route.columns.index("letter_id")
        ids = [str(p.row[position]) for rows in pending.values() for p in rows]
        seen = set(await self._writer.stored_values(route.table, "letter_id", ids))
        kept: dict[tuple[str, int], list[PendingRow]] = {}
        for source, rows in pending.items():
            kept[source] = []
            for item in rows:
                if str(item.row[position]) not in seen:
                    kept[source].append(item)
                    seen.add(str(item.row[position]))
            self.letters_skipped += len(rows) - len(kept[source])
            self._observer.skipped("letter", len(rows) - len(kept[source]))
        return kept

    async def _first_copies(
        self, route: Route, pending: dict[tuple[str, int], list[PendingRow]]
    ) -> dict[tuple[str, int], list[PendingRow]]:
        """Drop rows whose event is already stored or earlier in this batch.

        The processors re-send an event after a crash when they cannot tell whether the
        first send got out; the copy comes at a new offset, which the high-water mark
        does not catch. Dropping it here keeps a plain count() exact, without waiting
        for ReplacingMergeTree merges or querying with FINAL. Copies share the event's
        partition (same key), so one sink sees them in order. One lookup per batch.

        The key columns are read by position, one column at a time, and the usual batch
        (no copy stored, none within it) keeps its rows without a loop over them: this
        runs for every row the sink stores (BENCHMARKS.md, session 8).
        """
        org, user, moment, event_id = map(itemgetter, route.key_positions)
        rows = [p.row for source_rows in pending.values() for p in source_rows]
        if not rows:
            return pending
        ids = list(map(event_id, rows))
        moments = list(map(moment, rows))
        stored = await self._writer.stored_event_ids(
            route.table,
            ids,
            set(map(org, rows)),
            set(map(user, rows)),
            min(moments),
            max(moments),
        )
        if not stored and len(set(ids)) == len(ids):
            return pending
        seen = set(stored)
        kept: dict[tuple[str, int], list[PendingRow]] = {}
        for source, source_rows in pending.items():
            kept[source] = []
            for item in source_rows:
                key = event_id(item.row)
                if key not in seen:
                    kept[source].append(item)
                    seen.add(key)
            self.copies_skipped += len(source_rows) - len(kept[source])
            self._observer.skipped("copy", len(source_rows) - len(kept[source]))
        return kept

    async def _plans_of_new_rows(
        self, route: Route, pending: dict[tuple[str, int], list[PendingRow]]
    ) -> list[tuple[PlannedInsert, bytes | None]]:
        """The inserts of the rows not stored yet, each with its Native block when built.

        The "already stored?" lookup runs in ClickHouse while the blocks of the inserts
        as planned without it are built here: the usual lookup finds nothing, and the
        blocks are ready when it answers, rather than built after it on the sink's
        critical path (BENCHMARKS.md, session 8). When it found copies, the inserts are
        planned again and their blocks built as they are inserted."""
        first: asyncio.Future[dict[tuple[str, int], list[PendingRow]]] | None = None
        if route.unique_events:
            first = asyncio.ensure_future(self._first_copies(route, pending))
        elif route.unique_letters:
            first = asyncio.ensure_future(self._first_letters(route, pending))
        if first is None:
            return [(plan, None) for plan in plan_inserts(pending)]
        try:
            await asyncio.sleep(0)  # the lookup's query is under way before the blocks
            plans = plan_inserts(pending)
            blocks = [await self._block_or_none(route, plan) for plan in plans]
        except BaseException:  # cancelled (the sink stops): the lookup goes too
            first.cancel()
            raise
        kept = await first
        if any(len(kept[source]) != len(rows) for source, rows in pending.items()):
            return [(plan, None) for plan in plan_inserts(kept)]
        return list(zip(plans, blocks, strict=True))

    async def _block_or_none(self, route: Route, plan: PlannedInsert) -> bytes | None:
        """The plan's Native block; None when it cannot be built (a value its column
        cannot hold: the insert meets that again, and finds the row by halving)."""
        try:
            return await self._writer.native(route.table, plan.rows, route.columns)
        except Exception:
            return None

    async def _insert_plan(
        self,
        route: Route,
        plan: PlannedInsert,
        dead: list[DeadLetter],
        block: bytes | None = None,
    ) -> bool:
        """Store ``plan`` (from ``block``, its rows' Native bytes, when given); rows
        ClickHouse refuses for their content are found by halving it and become dead
        letters. False if asked to stop first."""

        async def insert() -> None:
            nonlocal block
            started = time.monotonic()
            given, block = block, None  # a retry builds it again: the table may have changed
            await self._writer.insert(
                route.table, plan.rows, route.columns, plan.dedup_token, given
            )
            self._observer.inserted(route.table, len(plan.rows), time.monotonic() - started)

        outcome = await self._with_retry(insert, f"insert {plan.dedup_token}", "insert")
        if outcome is False:
            return False
        if outcome is True:
            self.rows_inserted += len(plan.rows)
        elif len(plan.rows) > 1:
            first, second = halves(plan)
            return await self._insert_plan(route, first, dead) and await self._insert_plan(
                route, second, dead
            )
        else:
            (run,) = plan.runs
            row = dict(zip(route.columns, plan.rows[0], strict=True))
            log.warning("ClickHouse refused the row of %s: %s", plan.dedup_token, outcome.error)
            dead.append(
                DeadLetter(run.topic, run.partition, run.first_offset, to_json(row), outcome.reason)
            )
        for run in plan.runs:
            self._stored[TopicPartition(run.topic, run.partition)] = run.last_offset
        return True

    async def _store_dead_letter(self, letter: DeadLetter) -> bool:
        async def insert() -> None:
            started = time.monotonic()
            await self._writer.insert(INVALID_TABLE, [letter.row()], INVALID_COLUMNS, letter.token)
            self._observer.inserted(INVALID_TABLE, 1, time.monotonic() - started)

        outcome = await self._with_retry(insert, letter.token, "dead_letter")
        if isinstance(outcome, Refused):  # built by us from strings: should never happen
            log.error("ClickHouse refused dead letter %s: %s", letter.token, outcome.error)
        elif outcome:
            self.dead_lettered += 1
            self._observer.dead_lettered(letter.topic)
        return outcome is not False

    async def _with_retry(
        self, attempt: Callable[[], Awaitable[None]], what: str, operation: Operation
    ) -> bool | Refused:
        """Run ``attempt`` until it succeeds (True), ClickHouse refuses it for its
        content (Refused: final), or the sink is asked to stop (False)."""
        backoff = 0.2
        while True:
            try:
                await attempt()
                self._failures_in_a_row = 0
                return True
            except Exception as exc:
                if await fault_of(exc, self._writer.answers) is Fault.DATA:
                    self._failures_in_a_row = 0
                    return Refused(exc)
                self._failures_in_a_row += 1
                self._last_failure = f"{what}: {exc!r}"[:1000]
                self._observer.retrying(operation)
                log.warning("%s failed (%r); retrying in %.1fs", what, exc, backoff)
            try:
                await asyncio.wait_for(self._stopping.wait(), backoff)
                return False
            except TimeoutError:
                backoff = min(backoff * 2, MAX_BACKOFF_S)
