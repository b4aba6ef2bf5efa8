"""The Faust application: events.raw -> dedup, consent, sampling -> events.clean, and the
learner folds -> events.derived + compacted projection topics.

Agents stay thin: decisions live in ``processors.delivery`` / ``sampling`` / ``consent``,
business rules in ``projections``, record shapes in ``processors.outputs``.
Table values are small JSON dicts (Faust's default table codec).
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
from learnstream.erasure import ErasureRequest, erased_before, projection_keys
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
from processors import outputs
from processors.consent import CONSENT_EVENT, allowed, updated_consent
from processors.dedup_window import ExpiryQueue, arrival_ms
from processors.delivery import Position, Seen, already_applied, classify
from processors.generations import Handover, group_id
from processors.offsets import OffsetProbe
from processors.sampling import keeps, sample_rate
from processors.watchdog import StallWatch, WatchdogThread, exit_for_restart
from projections.events import Event
from projections.learner import LearnerState, apply, from_json, to_json
from schemas.catalog import EventCatalog, load_named_schema
from schemas.codec import decode, encode
from schemas.registry import SchemaRegistry
from schemas.validation import FieldError

log = logging.getLogger(__name__)


class _Projection:
    """One Avro-encoded projection record type and the topic it is published on."""

    def __init__(
        self, app: faust.App, topic: str, schema_file: str, registry: SchemaRegistry
    ) -> None:
        schema = load_named_schema(schema_file)
        self.topic = _raw_topic(app, topic)
        self.schema_id = registry.id_for(f"{schema['namespace']}.{schema['name']}", schema)
        self.parsed = parse_schema(dict(schema))

    async def publish(self, key: str, record: dict[str, Any]) -> None:
        await self.topic.send(key=key.encode(), value=encode(self.schema_id, self.parsed, record))

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
    xp = _Projection(app, settings.topic(PROJECTIONS_XP), "projections/user_xp.avsc", registry)
    progress = _Projection(
        app, settings.topic(PROJECTIONS_USER_PROGRESS), "projections/user_progress.avsc", registry
    )
    mastery = _Projection(
        app, settings.topic(PROJECTIONS_TOPIC_MASTERY), "projections/topic_mastery.avsc", registry
    )
    modes = _Projection(
        app, settings.topic(PROJECTIONS_MODE_PROGRESS), "projections/mode_progress.avsc", registry
    )
    spots = _Projection(
        app, settings.topic(PROJECTIONS_BLIND_SPOTS), "projections/blind_spots.avsc", registry
    )

    erasure_topic = _raw_topic(app, settings.topic(REQUESTS_ERASURE))
    projection_topics = {
        PROJECTIONS_XP: xp,
        PROJECTIONS_USER_PROGRESS: progress,
        PROJECTIONS_TOPIC_MASTERY: mastery,
        PROJECTIONS_MODE_PROGRESS: modes,
        PROJECTIONS_BLIND_SPOTS: spots,
    }
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
    counters = {"duplicates": 0, "sampled_out": 0, "consent_filtered": 0, "erased": 0}

    async def publish_learner(
        event: Event, datum: dict[str, Any], state: LearnerState, derived: list[dict[str, Any]]
    ) -> None:
        user = event.user_id
        assert user is not None
        for item in derived:
            d = outputs.derived_from_json(item)
            record = outputs.derived_datum(catalog, d, datum)
            kind = catalog[d.kind]
            await derived_topic.send(
                key=user.encode(),
                value=encode(registry.id_for(kind.subject, kind.schema), kind.parsed, record),
            )
        # Snapshots are re-sent on redelivery too: they may not have gone out before a
        # crash, and on a compacted topic sending the same snapshot twice is harmless.
        await xp.publish(
            user, {"user_id": user, "xp": state.xp, "events_applied": state.events_applied}
        )
        await progress.publish(user, outputs.user_progress(user, state))
        topic = event.properties.get("topic_id")
        if (
            event.event_type == "question_submit"
            and topic is not None
            and str(topic) in state.mastery
        ):
            await mastery.publish(f"{user}:{topic}", outputs.topic_mastery(user, str(topic), state))
        if event.event_type == "session_completed":
            mode_id = event.properties.get("practice_mode_id")
            if mode_id is not None:
                await modes.publish(
                    f"{user}:{mode_id}", outputs.mode_progress(user, str(mode_id), state)
                )
            await spots.publish(user, outputs.learner_blind_spots(user, state))

    async def fold_learner(
        event: Event, datum: dict[str, Any], here: Position, replaying: bool
    ) -> None:
        assert event.user_id is not None
        stored = learners.get(event.user_id)
        state = from_json(stored["state"]) if stored else LearnerState()
        applied = Position.from_json(stored["applied"]) if stored else None
        if stored and already_applied(applied, here):
            derived = stored["derived"]  # the same outputs again: ids make them idempotent
        else:
            state, produced = apply(state, event)
            derived = [outputs.derived_to_json(d) for d in produced]
            learners[event.user_id] = {
                "state": to_json(state),
                "applied": here.as_json(),
                "derived": derived,
            }
        # replaying: the previous generation already wrote these derived events
        await publish_learner(event, datum, state, [] if replaying else derived)

    def consent_allows(event: Event, category: str) -> bool:
        if event.user_id is None:
            return True
        consent = consents.get(event.user_id) or {}
        if event.event_type == CONSENT_EVENT:
            consents[event.user_id] = updated_consent(consent, event.properties)
        return allowed(consent, event.event_type, category)

    async def handle(message: Any) -> None:
        marker = settings.fault_fail_marker
        if marker is not None and not marker.exists():  # tests only: fail once, here
            marker.touch()
            raise RuntimeError("fault injection: processing this record fails once")
        here = Position(message.message.partition, message.message.offset)
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
        watch.processed(here.partition, here.offset, time.monotonic())
        replaying = here.offset < emits_from.get(here.partition, 0)
        data: bytes = message.value
        try:
            datum = decode(registry, data)
            event = Event.from_envelope(datum)
            event_type = catalog[event.event_type]
        except Exception as exc:  # undecodable bytes must not stop the partition
            if replaying:  # dead-lettered by the previous generation
                return
            log.error("undecodable message at %s: %r", here, exc)
            letter = dead_letter(
                data.hex(),
                [FieldError("(message)", f"cannot decode: {exc!r}")],
                datetime.fromtimestamp(message.message.timestamp, UTC),  # Faust: seconds
                source=f"processors at partition {here.partition} offset {here.offset}",
            )
            await invalid_topic.send(value=letter)
            return
        erasure = erased.get(event.user_id) if event.user_id is not None else None
        if erasure is not None and erased_before(erasure["at"], event.timestamp):
            counters["erased"] += 1  # a late copy of an erased learner's event
            return
        arrived_ms = round(message.message.timestamp * 1000)  # Faust gives seconds
        forget_expired(here.partition, arrived_ms)
        seen_at = first_seen.get(event.event_id)
        verdict = classify(Position.from_json(seen_at) if seen_at else None, here)
        if verdict is Seen.DUPLICATE:
            counters["duplicates"] += 1
            return
        if verdict is Seen.FIRST_TIME:
            first_seen[event.event_id] = {**here.as_json(), "t": arrived_ms, "u": event.user_id}
            expiry.remember(here.partition, event.event_id, arrived_ms)
        rate = sample_rate(event_type, settings.environment, settings.sample_rate_overrides)
        if not keeps(event.event_id, rate):
            counters["sampled_out"] += 1
            return
        if not consent_allows(event, event_type.category):
            counters["consent_filtered"] += 1
            return
        if rate < 1.0:
            datum["sample_rate"] = rate
            data = encode(
                registry.id_for(event_type.subject, event_type.schema), event_type.parsed, datum
            )
        if not replaying:
            await clean_topic.send(key=message.key, value=data)
        if event.user_id is not None:
            await fold_learner(event, datum, here, replaying)

    @app.agent(raw_topic)
    async def process_raw(stream: faust.StreamT[bytes]) -> None:
        async for message in stream.events():
            try:
                await handle(message)
            except Exception:
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

    @app.agent(erasure_topic)
    async def process_erasures(stream: faust.StreamT[bytes]) -> None:
        async for message in stream.events():
            try:
                await erase(ErasureRequest.from_json(message.value))
            except Exception:  # as for events: never skip a request by committing past it
                exit_for_restart("erasure failed; exiting so a restart retries it", exc_info=True)

    @app.timer(interval=60.0)  # type: ignore[untyped-decorator]
    async def report_counters() -> None:
        log.info("processor counters: %s", counters)

    return app
