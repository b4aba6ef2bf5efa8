"""The Faust application: events.raw -> dedup, consent, sampling -> events.clean, and the
learner folds -> events.derived + compacted projection topics.

Agents stay thin: what a record does is decided in ``processors.decide`` (pure: from the
record and the state read for it), business rules live in ``projections``, record shapes
in ``processors.outputs``; this module reads the tables, then carries the decision out.
Table values are small JSON dicts (Faust's default table codec).

Two kinds of failure, told apart by where they happen: deciding fails only because of
the record's content, which no retry can fix, so the record is dead-lettered and the
partition moves on; carrying out (table writes, sends) fails because of infrastructure,
so the worker exits and its restart retries from the committed offset.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import mode
from fastavro import parse_schema
from faust.types import TP

from learnstream.dead_letters import dead_letter
from learnstream.erasure import ErasureRequest, projection_keys
from learnstream.settings import Settings
from learnstream.topics import (
    EVENTS_CLEAN,
    EVENTS_DERIVED,
    EVENTS_INVALID,
    EVENTS_RAW,
    PROJECTIONS_BLIND_SPOTS,
    PROJECTIONS_MODE_PROGRESS,
    PROJECTIONS_TOPIC_MASTERY,
    PROJECTIONS_USER_PROGRESS,
    PROJECTIONS_XP,
    REQUESTS_ERASURE,
)
from processors import decide
from processors.dedup_window import ExpiryQueue, arrival_ms
from processors.delivery import Position
from processors.generations import Handover, group_id
from processors.health import serve_health
from processors.offsets import OffsetProbe
from processors.watchdog import StallWatch, WatchdogThread, exit_for_restart
from projections.events import Event
from projections.learner import LearnerState, from_json
from schemas.catalog import EventCatalog, load_named_schema
from schemas.registry import SchemaRegistry
from schemas.validation import FieldError

log = logging.getLogger(__name__)

# unprefixed projection topic -> the schema of its records
PROJECTION_SCHEMAS = {
    PROJECTIONS_XP: "projections/user_xp.avsc",
    PROJECTIONS_USER_PROGRESS: "projections/user_progress.avsc",
    PROJECTIONS_TOPIC_MASTERY: "projections/topic_mastery.avsc",
    PROJECTIONS_MODE_PROGRESS: "projections/mode_progress.avsc",
    PROJECTIONS_BLIND_SPOTS: "projections/blind_spots.avsc",
}


class _Projection:
    """One Avro-encoded projection record type and the topic it is published on."""

    def __init__(
        self, app: faust.App, topic: str, schema_file: str, registry: SchemaRegistry
    ) -> None:
        schema = load_named_schema(schema_file)
        self.topic = _raw_topic(app, topic)
        self.codec = decide.Codec(
            registry.id_for(f"{schema['namespace']}.{schema['name']}", schema),
            parse_schema(dict(schema)),
        )

    async def publish(self, key: str, value: bytes) -> None:
        await self.topic.send(key=key.encode(), value=value)

    async def tombstone(self, key: str) -> None:
        """No value: compaction removes the key, and the sink marks its row deleted."""
        await self.topic.send(key=key.encode(), value=None)


def _raw_topic(app: faust.App, name: str) -> Any:
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def log_tasks() -> None:
    """Every asyncio task of this loop and where it waits: for diagnosing a hang."""
    for task in asyncio.all_tasks():
        # the await chain, outermost first: get_stack shows only the top frame
        chain: list[str] = []
        awaited: Any = task.get_coro()
        while awaited is not None and len(chain) < 20:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is not None:
                chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        log.warning("task %s: %s", task.get_name(), " -> ".join(chain) or "(not started)")


def _inject_stall_once(
    app: faust.App, marker: Path | None, topic: str, partitions: set[int]
) -> None:
    """Tests only: stop fetching one partition once per marker file, as Faust does when
    it stalls, so the watchdog's way out can be shown end to end."""
    if marker is None or marker.exists() or not partitions:
        return
    marker.touch()
    stalled = TP(topic, min(partitions))
    log.warning("fault injection: no longer fetching %s", stalled)
    app.consumer.pause_partitions([stalled])


def _dead_letter_source(here: Position, topic: str | None = None) -> str:
    where = f"partition {here.partition} offset {here.offset}"
    return f"processors at {where}" if topic is None else f"processors at {topic} {where}"


def create_app(
    settings: Settings,
    registry: SchemaRegistry,
    catalog: EventCatalog,
    handover: Handover | None = None,
) -> faust.App:
    """The processors app of ``settings.processors_generation``; below ``handover`` (see
    processors.generations) it rebuilds state without re-emitting events."""
    emits_from = handover or {}
    app = faust.App(
        group_id(settings, settings.processors_generation),
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=settings.faust_store,
        datadir=str(settings.faust_data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=True,
        web_enabled=False,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        # An agent that raises must take the worker down (and restart from committed
        # offsets), never be restarted in place past the message that broke it.
        agent_supervisor=mode.CrashingSupervisor,
    )
    raw_topic = _raw_topic(app, settings.topic(EVENTS_RAW))
    clean_topic = _raw_topic(app, settings.topic(EVENTS_CLEAN))
    invalid_topic = _raw_topic(app, settings.topic(EVENTS_INVALID))
    derived_topic = _raw_topic(app, settings.topic(EVENTS_DERIVED))
    projection_topics = {
        name: _Projection(app, settings.topic(name), schema_file, registry)
        for name, schema_file in PROJECTION_SCHEMAS.items()
    }
    erasure_topic = _raw_topic(app, settings.topic(REQUESTS_ERASURE))
    setup = decide.Setup(
        catalog=catalog,
        registry=registry,
        projections={name: p.codec for name, p in projection_topics.items()},
        environment=settings.environment,
        sample_rate_overrides=settings.sample_rate_overrides,
    )
    partitions = settings.topic_partitions
    # event_id -> {"p", "o": position of the message that first carried it, "t": its arrival}
    first_seen = app.Table("dedup-first-seen", default=None, partitions=partitions)
    expiry = ExpiryQueue(window_ms=int(settings.dedup_window_hours * 3600 * 1000))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: Any = (), **kwargs: Any) -> None:
        for tp in revoked:
            expiry.forget_partition(tp.partition)

    watch = StallWatch(timeout_s=settings.processor_stall_timeout_s)

    def make_probe() -> OffsetProbe:
        return OffsetProbe(
            settings.kafka_bootstrap,
            raw_topic.get_topic_name(),
            group_id(settings, settings.processors_generation),
        )

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: Any = (), **kwargs: Any) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == raw_topic.get_topic_name()}
        watch.assigned(mine, time.monotonic())

    @app.task  # type: ignore[untyped-decorator]
    async def start_watchdog() -> None:
        WatchdogThread(watch, make_probe, lambda: bool(app.in_recovery or app.rebalancing)).start()
        # beside the worker, not in it: /readyz answers from what the watchdog last saw
        serve_health(settings.processors_health_port, watch)

    @app.task  # type: ignore[untyped-decorator]
    async def dump_tasks_on_sigusr1() -> None:
        """``kill -USR1 <worker>`` logs what every asyncio task is waiting on."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, log_tasks)

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]
    async def inject_stall() -> None:  # tests only: LEARNSTREAM_FAULT_STALL_MARKER
        if not (app.in_recovery or app.rebalancing):
            _inject_stall_once(
                app, settings.fault_stall_marker, raw_topic.get_topic_name(), watch.partitions
            )

    def forget_expired(partition: int, now_ms: int) -> None:
        if not expiry.knows(partition):  # first record since (re)assignment: what's held?
            held_here = (
                (eid, arrival_ms(v, now_ms))
                for eid, v in first_seen.items()
                if v and v["p"] == partition
            )
            expiry.rebuild(partition, held_here)
        for event_id, arrived in expiry.expired(partition, now_ms):
            held = first_seen.get(event_id)
            if held is not None and arrival_ms(held, arrived) == arrived:
                del first_seen[event_id]  # in-stream: the changelog gets a tombstone

    # user_id -> {"state", "applied": position, "derived": outputs of that message}
    learners = app.Table("learners", default=None, partitions=partitions)
    # user_id -> {category: granted}
    consents = app.Table("consent", default=None, partitions=partitions)
    # user_id -> {"at": requested_at (ms) of their latest erasure, "topics", "modes": the
    # projection keys it tombstoned}: older events of theirs are dropped
    erased = app.Table("erased", default=None, partitions=partitions)
    counters = {
        "duplicates": 0,
        "sampled_out": 0,
        "consent_filtered": 0,
        "erased": 0,
        "dead_lettered": 0,
    }

    def fail_once_if_asked() -> None:
        """Tests only: an infrastructure failure while processing, once."""
        marker = settings.fault_fail_marker
        if marker is not None and not marker.exists():
            marker.touch()
            raise RuntimeError("fault injection: processing this record fails once")

    def exit_if_skipped(here: Position) -> None:
        skipped_from = watch.skipped_before(here.partition, here.offset)
        if skipped_from is not None:
            # events.raw is written by idempotent, non-transactional producers and never
            # compacted, so its offsets have no holes: a jump means the consumer dropped
            # records (seen in CI: Faust skipped a whole fetched batch). Exit before this
            # one, so nothing past the hole is folded and the restart reads the hole.
            exit_for_restart(
                "partition %d: offsets %d..%d were skipped by the consumer; exiting so a "
                "restart reads them",
                here.partition,
                skipped_from,
                here.offset - 1,
            )

    def arrival(message: Any) -> int:
        seconds: float = message.message.timestamp  # Faust gives seconds
        return round(seconds * 1000)

    def read_known(event: Event) -> decide.Known:
        """What the tables hold that bears on ``event``."""
        user = event.user_id
        erasure = erased.get(user) if user is not None else None
        seen_at = first_seen.get(event.event_id)
        return decide.Known(
            erased_at_ms=None if erasure is None else erasure["at"],
            first_seen=Position.from_json(seen_at) if seen_at else None,
            consent=(consents.get(user) if user is not None else None) or {},
            learner=learners.get(user) if user is not None else None,
        )

    def decide_record(message: Any, here: Position) -> decide.Outcome | decide.Rejected:
        """No await in here or before the table writes that follow: nothing else (the
        erasure agent) runs between reading a learner's state and writing it back."""
        data: bytes = message.value if message.value is not None else b""
        parsed = decide.parse(data, setup)
        if isinstance(parsed, decide.Rejected):
            return parsed
        # housekeeping, not a decision: ids past the window go before the table is read
        forget_expired(here.partition, arrival(message))
        return decide.decide(parsed, read_known(parsed.event), here, setup)

    async def send_dead_letter(
        rejected: decide.Rejected, message: Any, source: str, replaying: bool = False
    ) -> None:
        counters["dead_lettered"] += 1
        if replaying:  # dead-lettered by the previous generation
            return
        log.error("dead-lettering the record at %s: %s", source, rejected.reason)
        letter = dead_letter(
            rejected.raw,
            [FieldError("(message)", rejected.reason)],
            datetime.fromtimestamp(message.message.timestamp, UTC),  # Faust: seconds
            source=source,
        )
        await invalid_topic.send(value=letter)

    def write_tables(outcome: decide.Outcome, here: Position, arrived_ms: int) -> None:
        event = outcome.event
        if outcome.dropped is not None:
            counters[outcome.dropped] += 1
        if outcome.first_time:
            first_seen[event.event_id] = {**here.as_json(), "t": arrived_ms, "u": event.user_id}
            expiry.remember(here.partition, event.event_id, arrived_ms)
        if outcome.consent is not None:
            consents[event.user_id] = outcome.consent
        learner = outcome.learner
        if learner is not None and learner.stored is not None:
            learners[learner.user_id] = learner.stored

    async def publish_learner(learner: decide.LearnerOutcome, replaying: bool) -> None:
        key = learner.user_id.encode()
        if not replaying:  # replaying: the previous generation already wrote these
            for value in learner.derived:
                await derived_topic.send(key=key, value=value)
        for snapshot in learner.snapshots:
            await projection_topics[snapshot.projection].publish(snapshot.key, snapshot.value)

    async def carry_out(
        outcome: decide.Outcome, message: Any, here: Position, replaying: bool
    ) -> None:
        write_tables(outcome, here, arrival(message))
        if outcome.clean is not None and not replaying:
            await clean_topic.send(key=message.key, value=outcome.clean)
        if outcome.learner is not None:
            await publish_learner(outcome.learner, replaying)

    async def handle(message: Any) -> None:
        fail_once_if_asked()
        here = Position(message.message.partition, message.message.offset)
        exit_if_skipped(here)
        watch.processed(here.partition, here.offset, time.monotonic())
        replaying = here.offset < emits_from.get(here.partition, 0)
        decision = decide_record(message, here)
        if isinstance(decision, decide.Rejected):
            await send_dead_letter(decision, message, _dead_letter_source(here), replaying)
        else:
            await carry_out(decision, message, here, replaying)

    @app.agent(raw_topic)
    async def process_raw(stream: faust.StreamT[bytes]) -> None:
        async for message in stream.events():
            try:
                await handle(message)
            except Exception:
                # Not the record's fault (those are dead-lettered above): infrastructure.
                # Exit at once: Faust would ack the failing message while unwinding and
                # commit it on shutdown, skipping it for good. Exiting without a commit
                # makes the restart retry it, as after a SIGKILL.
                exit_for_restart(
                    "processing failed; exiting so a restart retries it", exc_info=True
                )

    async def erase(request: ErasureRequest) -> None:
        """Forget at once, then send tombstones.

        The forgetting has no await in it, so the events agent cannot fold this learner
        in between: any snapshot published after it holds only later events. The keys
        to tombstone are kept in ``erased``, so a crash before the tombstones are out
        repeats them when the request is redelivered, even though the state is gone."""
        user = request.user_id
        stored = learners.get(user)
        state = from_json(stored["state"]) if stored else LearnerState()
        before = erased.get(user) or {}
        topics = sorted(set(state.mastery) | set(before.get("topics", ())))
        modes = sorted(set(state.modes) | set(before.get("modes", ())))
        for table in (learners, consents):
            if table.get(user) is not None:
                del table[user]
        for event_id in [eid for eid, v in first_seen.items() if v and v.get("u") == user]:
            del first_seen[event_id]
        erased[user] = {
            "at": max(before.get("at", 0), request.requested_at_ms),
            "topics": topics,
            "modes": modes,
        }
        for topic, keys in projection_keys(user, topics, modes).items():
            for key in keys:
                await projection_topics[topic].tombstone(key)
        log.info("erased learner %s (request %s)", user, request.request_id)

    async def handle_erasure(message: Any) -> None:
        request = decide.parse_erasure(message.value)
        if isinstance(request, decide.Rejected):
            here = Position(message.message.partition, message.message.offset)
            source = _dead_letter_source(here, erasure_topic.get_topic_name())
            await send_dead_letter(request, message, source)
        else:
            await erase(request)

    @app.agent(erasure_topic)
    async def process_erasures(stream: faust.StreamT[bytes]) -> None:
        async for message in stream.events():
            try:
                await handle_erasure(message)
            except Exception:  # as for events: never skip a request by committing past it
                exit_for_restart("erasure failed; exiting so a restart retries it", exc_info=True)

    @app.timer(interval=60.0)  # type: ignore[untyped-decorator]
    async def report_counters() -> None:
        log.info("processor counters: %s", counters)

    return app
