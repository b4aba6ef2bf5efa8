"""One batch of events.raw, processed: decide every record, then carry it all out.

1. Decide each record in order (``processors.decide``) against one ``Ledger``: later
   records of a learner see the state earlier ones left, nothing is written yet.
2. Build one snapshot per touched projection key, from the batch's final state.
3. Write each touched state key once, and send every output (events.clean,
   events.derived, dead letters, snapshots) as one record batch per topic-partition
   (``processors.record_batches``).
4. Await every delivery. Only then does the batch return, and only then does Faust
   ack its records, so no source offset is committed past an unprocessed record.

Below the handover of a replay (``processors.generations``) records rebuild state and
snapshots but re-send nothing the previous generation already sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust

from learnstream.dead_letters import dead_letter
from processors import decide
from processors.dedup_window import ExpiryQueue
from processors.generations import Handover
from processors.metrics import ProcessorMetrics
from processors.record_batches import RecordBatches, WholeBatchTooLarge
from processors.state_tables import StateTables
from projections.delivery import Position
from projections.rulebook import SEEN, FirstSeen, Ledger
from schemas.validation import FieldError

log = logging.getLogger(__name__)

Send = tuple[str, bytes | None, bytes | None]  # (topic, key, value)


@dataclass(frozen=True)
class OutputTopics:
    """Full topic names (prefix included)."""

    clean: str
    derived: str
    invalid: str
    projections: Mapping[str, str]  # unprefixed projection name -> full topic name


def dead_letter_source(here: Position, topic: str | None = None) -> str:
    where = f"partition {here.partition} offset {here.offset}"
    return f"processors at {where}" if topic is None else f"processors at {topic} {where}"


def arrival_ms(message: Any) -> int:
    seconds: float = message.timestamp  # Faust gives seconds
    return round(seconds * 1000)


# A delivery not acknowledged in this long is an infrastructure failure: the batch is
# retried from its committed offsets by a restart rather than waited on for ever.
DELIVERY_TIMEOUT_S = 30.0


async def delivered(futures: Sequence[Awaitable[Any]]) -> None:
    """Every send acknowledged by the broker, or an exception naming what was not."""

    async def every() -> None:
        for future in futures:  # in order: most are done by the time the first is
            await future

    try:
        await asyncio.wait_for(every(), DELIVERY_TIMEOUT_S)
    except TimeoutError:
        waiting = sum(1 for f in futures if not asyncio.ensure_future(f).done())
        raise TimeoutError(
            f"{waiting} of {len(futures)} sends not acknowledged in {DELIVERY_TIMEOUT_S:g} s"
        ) from None


class BatchProcessor:
    def __init__(
        self,
        app: faust.App,
        state: StateTables,
        setup: decide.Setup,
        topics: OutputTopics,
        expiry: ExpiryQueue,
        handover: Handover,
        counters: Counter[str],
        metrics: ProcessorMetrics,
    ) -> None:
        self._app = app
        self._state = state
        self._setup = setup
        self._topics = topics
        self._expiry = expiry
        self._handover = handover
        self.counters = counters
        self._metrics = metrics
        self._verdicts: Counter[str] = Counter()  # this batch's

    async def __call__(self, events: Sequence[Any]) -> None:
        started = time.monotonic()
        self._verdicts = Counter()
        ledger = Ledger(self._state.load)
        touched = decide.Touched()
        sends: list[Send] = []
        by_partition: dict[int, Any] = {}
        current = None
        for event in events:
            partition = event.message.partition
            by_partition[partition] = event
            if partition != current:
                self._state.use_partition_of(event)
                current = partition
            self._one(event.message, ledger, touched, sends)
        for built in decide.snapshots(ledger, touched, self._setup):
            if isinstance(built, decide.Rejected):
                self._dead_letter(built, "processors snapshot", datetime.now(UTC), sends)
            else:
                topic = self._topics.projections[built.projection]
                sends.append((topic, built.key.encode(), built.value))
        out = RecordBatches.of(self._app)
        try:
            self._state.store(ledger.writes, by_partition, out)
        except WholeBatchTooLarge:  # nothing was written or sent: two smaller batches
            if len(events) < 2:
                raise
            log.info("a batch's state writes exceed one record batch; splitting it")
            await self(events[: len(events) // 2])
            await self(events[len(events) // 2 :])
            return
        for topic, key, value in sends:
            await out.add(topic, key, value)
        futures = await out.send()
        self._state.on_sent(futures)
        await delivered([future for _, future in futures])
        self.counters.update(self._verdicts)
        sent = Counter(topic for topic, _, _ in sends)
        sent[self._state.changelog_topic] += len(ledger.writes)
        self._metrics.batch(len(events), time.monotonic() - started, self._verdicts, sent)

    def _one(
        self, message: Any, ledger: Ledger, touched: decide.Touched, sends: list[Send]
    ) -> None:
        here = Position(message.partition, message.offset)
        replaying = here.offset < self._handover.get(here.partition, 0)
        arrived = arrival_ms(message)
        self._forget_expired(ledger, here.partition, arrived)
        parsed = decide.parse(message.value if message.value is not None else b"", self._setup)
        decision = (
            parsed
            if isinstance(parsed, decide.Rejected)
            else decide.decide(parsed, ledger, here, arrived, self._setup)
        )
        if isinstance(decision, decide.Rejected):
            self._verdicts["dead_lettered"] += 1
            if not replaying:  # else the previous generation dead-lettered it
                when = datetime.fromtimestamp(message.timestamp, UTC)
                self._dead_letter(decision, dead_letter_source(here), when, sends)
            return
        assert isinstance(parsed, decide.Parsed)
        event, outcome = parsed.event, decision.outcome
        self._verdicts[outcome.verdict.value] += 1
        remembered: FirstSeen | None = ledger.writes.get((SEEN, event.event_id), (None, 0))[0]
        if remembered is not None and remembered.offset == here.offset:
            self._expiry.remember(here.partition, event.event_id, arrived)
        if outcome.touched is not None:
            touched.add(event, outcome.touched)
        if replaying:
            return
        if decision.clean is not None:
            sends.append((self._topics.clean, message.key, decision.clean))
        user_key = None if event.user_id is None else event.user_id.encode()
        sends.extend((self._topics.derived, user_key, value) for value in decision.derived)

    def _forget_expired(self, ledger: Ledger, partition: int, now_ms: int) -> None:
        """Ids past the dedup window leave the table (housekeeping, not a decision)."""
        if not self._expiry.knows(partition):  # first record since (re)assignment
            held = (
                (event_id, seen.arrived_ms)
                for event_id, seen in self._state.items(SEEN)
                if seen.partition == partition
            )
            self._expiry.rebuild(partition, held)
        for event_id, arrived in self._expiry.expired(partition, now_ms):
            seen: FirstSeen | None = ledger.get(SEEN, event_id)
            if seen is not None and seen.arrived_ms == arrived:
                ledger.put(SEEN, event_id, None, partition)

    def _dead_letter(
        self, rejected: decide.Rejected, source: str, when: datetime, sends: list[Send]
    ) -> None:
        log.error("dead-lettering the record at %s: %s", source, rejected.reason)
        letter = dead_letter(
            rejected.raw, [FieldError("(message)", rejected.reason)], when, source=source
        )
        sends.append((self._topics.invalid, None, letter))
