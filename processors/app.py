"""The Faust application: events.raw -> dedup, consent, sampling -> events.clean, and the
learner folds -> events.derived + compacted projection topics.

This module only assembles the parts: the agent takes events in batches and hands each
batch to a chain of steps (``processors.steps``: guards) ending in the batch processor
(``processors.batch``), which decides every record with the rulebook
(``projections.rulebook``, via ``processors.decide``) and then carries the batch out.
State is the rulebook's keyed pieces, in Faust tables of msgpack bytes
(``processors.state_tables``).

Two kinds of failure, told apart by where they happen: deciding fails only because of
the record's content, which no retry can fix, so the record is dead-lettered and the
partition moves on; carrying out (table writes, sends) fails because of infrastructure,
so the worker exits and its restart retries from the committed offset.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
from collections import Counter
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import mode
from fastavro import parse_schema
from faust.types import TP

from learnstream.dead_letters import dead_letter
from learnstream.settings import Settings
from learnstream.topics import (
    EVENTS_CLEAN,
    EVENTS_DERIVED,
    EVENTS_INVALID,
    EVENTS_RAW,
    PROJECTION_SCHEMAS,
    REQUESTS_ERASURE,
)
from processors import decide
from processors.batch import BatchProcessor, OutputTopics, dead_letter_source
from processors.commits import guard_commits
from processors.dedup_window import ExpiryQueue
from processors.erasure import Eraser
from processors.generations import Handover, group_id
from processors.health import serve_health
from processors.leave import leave_after_stop
from processors.metrics import ProcessorMetrics
from processors.offsets import OffsetProbe
from processors.positions import Positions
from processors.state_tables import StateTables
from processors.steps import ExitOnFailure, FailOnce, GuardOffsets
from processors.watchdog import StallWatch, WatchdogThread, exit_for_restart
from projections.delivery import Position
from schemas.catalog import EventCatalog, load_named_schema
from schemas.registry import SchemaRegistry
from schemas.validation import FieldError

log = logging.getLogger(__name__)


def _codec(registry: SchemaRegistry, schema_file: str) -> decide.Codec:
    schema = load_named_schema(schema_file)
    subject = f"{schema['namespace']}.{schema['name']}"
    return decide.Codec(registry.id_for(subject, schema), parse_schema(dict(schema)))


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


def _recovery_remaining(app: faust.App) -> int:
    """Changelog records the table recovery still has to read (0 when not recovering)."""
    tables: Any = app.tables  # Faust's TableManager; its type does not name .recovery
    remaining: int = tables.recovery.active_remaining_total()
    return remaining


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


# Batches: up to this many records, or what arrived within this many seconds. Measured
# in BENCHMARKS.md (processors): larger batches write fewer state and snapshot records
# per event; the wait bounds the latency it adds at low rates.
BATCH_MAX = 2000
BATCH_WITHIN_S = 0.05


async def finished_even_if_cancelled(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even when the agent is cancelled meanwhile (a graceful
    shutdown, a rebalance): Faust acks the batch's records as soon as the agent unwinds
    and commits them on shutdown, so the batch's deliveries must all be done by then.
    The cancellation is passed on once they are."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def create_app(
    settings: Settings,
    registry: SchemaRegistry,
    catalog: EventCatalog,
    handover: Handover | None = None,
) -> faust.App:
    """The processors app of ``settings.processors_generation``; below ``handover`` (see
    processors.generations) it rebuilds state without re-emitting events."""
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
        # a batch's sends go out together: let them share requests, compressed
        producer_linger_ms=5,
        producer_compression_type="lz4",
        producer_max_batch_size=256 * 1024,
        # Faust's default (4,096) stalls the stream for ~0.9 s whenever it fills
        stream_buffer_maxsize=50_000,
        consumer_auto_offset_reset="earliest",
        # A worker that dies (SIGKILL, or exit_for_restart's os._exit) never leaves the
        # group: its partitions wait this long for it before they are assigned again, and
        # so does its own restart. Faust's 60 s made every restart take a minute; batches
        # take well under a second of loop time, and heartbeats run every 3 s.
        broker_session_timeout=10.0,
        # Workers learn of a rebalance (a member that left or came back) from their
        # next heartbeat: every second rather than Faust's 3 s.
        broker_heartbeat_interval=1.0,
        # static membership (when named): a restart rejoins as the same member, at once
        consumer_group_instance_id=settings.processors_instance_id,
        # No standby replicas. Faust's assignor can keep assigning a partition's changelog
        # as a standby to the worker that now holds it as active (seen when a second
        # worker died and the first took every partition); its recovery then never got a
        # changelog record for those partitions and hung (the two-worker SIGKILL test).
        # Standbys also make every worker read the others' changelogs all the time. A
        # partition that moves is recovered from its changelog instead.
        table_standby_replicas=0,
        # An agent that raises must take the worker down (and restart from committed
        # offsets), never be restarted in place past the message that broke it.
        agent_supervisor=mode.CrashingSupervisor,
    )
    # before anything creates the consumer: commits of events.raw only up to what the
    # guard proved delivered (processors.positions)
    positions = Positions()
    instance_id = settings.processors_instance_id
    leave = (
        None  # a dynamic member leaves the group by itself when its consumer stops
        if instance_id is None
        else functools.partial(
            leave_after_stop,
            settings.kafka_bootstrap,
            group_id(settings, settings.processors_generation),
            instance_id,
        )
    )
    guard_commits(app, settings.topic(EVENTS_RAW), positions, after_final_commit=leave)
    raw_topic = _raw_topic(app, settings.topic(EVENTS_RAW))
    erasure_topic = _raw_topic(app, settings.topic(REQUESTS_ERASURE))
    for name in (EVENTS_CLEAN, EVENTS_INVALID, EVENTS_DERIVED, *PROJECTION_SCHEMAS):
        _raw_topic(app, settings.topic(name))  # declared, so Faust creates them
    topics = OutputTopics(
        clean=settings.topic(EVENTS_CLEAN),
        derived=settings.topic(EVENTS_DERIVED),
        invalid=settings.topic(EVENTS_INVALID),
        projections={name: settings.topic(name) for name in PROJECTION_SCHEMAS},
    )
    setup = decide.Setup(
        catalog=catalog,
        registry=registry,
        projections={name: _codec(registry, f) for name, f in PROJECTION_SCHEMAS.items()},
        environment=settings.environment,
        sample_rate_overrides=settings.sample_rate_overrides,
    )
    state = StateTables(
        app,
        settings.topic_partitions,
        settings.faust_store.startswith("rocksdb"),
        settings.kafka_bootstrap,
    )
    expiry = ExpiryQueue(window_ms=int(settings.dedup_window_hours * 3600 * 1000))
    counters: Counter[str] = Counter()
    watch = StallWatch(timeout_s=settings.processor_stall_timeout_s)
    # a batch and an erasure never interleave (see processors.erasure)
    one_at_a_time = asyncio.Lock()
    metrics = ProcessorMetrics(raw_topic.get_topic_name())
    process = BatchProcessor(app, state, setup, topics, expiry, handover or {}, counters, metrics)
    starts = OffsetProbe(
        settings.kafka_bootstrap,
        raw_topic.get_topic_name(),
        group_id(settings, settings.processors_generation),
    )

    async def resume_offsets(partitions: set[int]) -> dict[int, int]:
        # an unanswered broker is infrastructure: ExitOnFailure restarts the worker
        return await asyncio.wait_for(starts.resume_offsets(partitions), timeout=30.0)

    def assignment() -> set[int]:
        """The raw topic's partitions the consumer holds now (Faust's signal of a new
        assignment can come after its first records)."""
        name = raw_topic.get_topic_name()
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == name}

    class Rewinder:
        """Fetch an events.raw partition again (``processors.commits``)."""

        async def rewind(self, partition: int, offset: int) -> None:
            consumer: Any = app.consumer
            await consumer.rewind(TP(raw_topic.get_topic_name(), partition), offset)

        def rewound(self, partition: int) -> None:
            consumer: Any = app.consumer
            consumer.rewound(TP(raw_topic.get_topic_name(), partition))

    guarded = ExitOnFailure(
        GuardOffsets(
            watch,
            positions,
            assignment,
            resume_offsets,
            Rewinder(),
            FailOnce(settings.fault_fail_marker, process),
        )
    )
    eraser = Eraser(app, state, topics.projections)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: Any = (), **kwargs: Any) -> None:
        for tp in revoked:
            expiry.forget_partition(tp.partition)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: Any = (), **kwargs: Any) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == raw_topic.get_topic_name()}
        watch.assigned(mine, time.monotonic())
        positions.assigned(mine)

    def make_probe() -> OffsetProbe:
        return OffsetProbe(
            settings.kafka_bootstrap,
            raw_topic.get_topic_name(),
            group_id(settings, settings.processors_generation),
        )

    @app.task  # type: ignore[untyped-decorator]
    async def start_watchdog() -> None:
        WatchdogThread(
            watch,
            make_probe,
            lambda: bool(app.in_recovery or app.rebalancing),
            on_offsets=metrics.offsets,
            recovery_remaining=lambda: _recovery_remaining(app),
        ).start()
        # beside the worker, not in it: /readyz answers from what the watchdog last saw
        serve_health(settings.processors_health_port, watch, metrics)

    @app.task  # type: ignore[untyped-decorator]
    async def quiet_root_logger() -> None:
        """Faust's worker sets the root logger to DEBUG for its spinner, even at ``-l
        warn`` without a terminal, so every debug call in the send path built a record
        (16 % of the samples in the profile): back to the level asked for."""
        logging.getLogger().setLevel(settings.log_level.upper())

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

    @app.agent(raw_topic)
    async def process_raw(stream: faust.StreamT[bytes]) -> None:
        # take_events: Faust's batching with the events, not just their values
        async for batch in stream.take_events(BATCH_MAX, BATCH_WITHIN_S):  # type: ignore[attr-defined]
            async with one_at_a_time:
                await finished_even_if_cancelled(guarded(batch))

    async def handle_erasure(event: Any) -> None:
        request = decide.parse_erasure(event.value)
        if not isinstance(request, decide.Rejected):
            await eraser.erase(request, event)
            return
        here = Position(event.message.partition, event.message.offset)
        source = dead_letter_source(here, erasure_topic.get_topic_name())
        log.error("dead-lettering the record at %s: %s", source, request.reason)
        letter = dead_letter(
            request.raw,
            [FieldError("(message)", request.reason)],
            datetime.fromtimestamp(event.message.timestamp, UTC),
            source=source,
        )
        future = await app.producer.send(topics.invalid, None, letter, None, None, None)
        await future

    @app.agent(erasure_topic)
    async def process_erasures(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            async with one_at_a_time:
                await finished_even_if_cancelled(erase_or_exit(event))

    async def erase_or_exit(event: Any) -> None:
        try:
            await handle_erasure(event)
        except Exception:  # as for events: never skip a request by committing past it
            exit_for_restart("erasure failed; exiting so a restart retries it", exc_info=True)

    @app.timer(interval=60.0)  # type: ignore[untyped-decorator]
    async def report_counters() -> None:
        log.info("processor counters: %s", dict(counters))

    return app
