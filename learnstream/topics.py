"""Every Kafka topic learnstream owns, with the configuration it is created with.

Topics are provisioned explicitly (the devstack broker has auto-creation off) so
partition counts match across co-partitioned topics and compaction is never an
accident of defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from learnstream.settings import Settings

log = logging.getLogger(__name__)

EVENTS_RAW = "events.raw"
EVENTS_CLEAN = "events.clean"
EVENTS_INVALID = "events.invalid"
EVENTS_DERIVED = "events.derived"
PROJECTIONS_XP = "projections.xp"
PROJECTIONS_USER_PROGRESS = "projections.user_progress"
PROJECTIONS_TOPIC_MASTERY = "projections.topic_mastery"
PROJECTIONS_MODE_PROGRESS = "projections.mode_progress"
PROJECTIONS_BLIND_SPOTS = "projections.blind_spots"
# unprefixed projection topic -> the schema file (schemas/avro) of its records: what the
# processors write, and what the registry API serves as the topic's value subject
PROJECTION_SCHEMAS = {
    PROJECTIONS_XP: "projections/user_xp.avsc",
    PROJECTIONS_USER_PROGRESS: "projections/user_progress.avsc",
    PROJECTIONS_TOPIC_MASTERY: "projections/topic_mastery.avsc",
    PROJECTIONS_MODE_PROGRESS: "projections/mode_progress.avsc",
    PROJECTIONS_BLIND_SPOTS: "projections/blind_spots.avsc",
}
# Requests to erase a learner (data-subject rights), keyed by user_id like events.raw
# so each lands in the partition holding that learner's state. Kept forever: it is
# the audit trail, and a replay must erase again.
REQUESTS_ERASURE = "requests.erasure"

COMPACTED = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
_KEEP_FOREVER = {"retention.ms": "-1"}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    config: dict[str, str] = field(default_factory=dict)


# The raw log is kept forever: it is the source that projections are replayed from.
TOPIC_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(EVENTS_RAW, _KEEP_FOREVER),
    TopicSpec(EVENTS_CLEAN),
    TopicSpec(EVENTS_INVALID, _KEEP_FOREVER),
    TopicSpec(EVENTS_DERIVED, _KEEP_FOREVER),
    TopicSpec(PROJECTIONS_XP, COMPACTED),
    TopicSpec(PROJECTIONS_USER_PROGRESS, COMPACTED),
    TopicSpec(PROJECTIONS_TOPIC_MASTERY, COMPACTED),
    TopicSpec(PROJECTIONS_MODE_PROGRESS, COMPACTED),
    TopicSpec(PROJECTIONS_BLIND_SPOTS, COMPACTED),
    TopicSpec(REQUESTS_ERASURE, _KEEP_FOREVER),
)


def min_insync_replicas(replication: int) -> int:
    """Copies a write needs before it is acknowledged (the collector's acks=all): a
    majority from replication 3 up, so an acknowledged write survives the loss of any
    one broker, and with one of 3 brokers down writes still succeed. Below 3, Kafka's
    default of 1: with 2 copies, requiring both would refuse every write while either
    broker is down."""
    return replication // 2 + 1 if replication >= 3 else 1


def topic_config(spec: TopicSpec, replication: int) -> dict[str, str]:
    """The configuration a topic is created with: its own plus, when replicated 3 or more
    ways, the ``min.insync.replicas`` that makes acks=all mean a majority of copies."""
    config = dict(spec.config)
    if replication >= 3:
        config["min.insync.replicas"] = str(min_insync_replicas(replication))
    return config


async def _started_admin(settings: Settings, wait_s: float) -> AIOKafkaAdminClient:
    """An admin client on the broker, waiting for it up to ``wait_s``: a service started
    while Kafka is down (or restarting) waits for it rather than exiting at once. Each
    failed attempt is logged once, with growing pauses, so an outage is not a log flood."""
    deadline = time.monotonic() + wait_s
    pause = 0.5
    attempt = 1
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        try:
            await asyncio.wait_for(admin.start(), max(1.0, min(30.0, wait_s)))
            return admin
        except (KafkaError, TimeoutError, OSError) as exc:
            await admin.close()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaUnreachable(
                    f"Kafka at {settings.kafka_bootstrap} did not answer within {wait_s:g} s: "
                    f"{exc!r}"
                ) from exc
            log.warning(
                "Kafka at %s not reachable yet (attempt %d: %r); retrying in %.1f s",
                settings.kafka_bootstrap,
                attempt,
                exc,
                min(pause, remaining),
            )
            await asyncio.sleep(min(pause, remaining))  # one last attempt at the deadline
            pause, attempt = min(pause * 2, 10.0), attempt + 1


class KafkaUnreachable(RuntimeError):
    """The broker did not answer at start-up within the wait: try again later."""


async def ensure_topics(
    settings: Settings, wait_s: float | None = None, extra: Sequence[TopicSpec] = ()
) -> None:
    """Create any missing topic; existing ones are left as they are. Waits for Kafka up
    to ``wait_s`` (``settings.kafka_startup_wait_s`` by default). ``extra`` names a
    service's own topics in full (prefix included), such as a Faust app's changelogs."""
    admin = await _started_admin(
        settings, settings.kafka_startup_wait_s if wait_s is None else wait_s
    )
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                settings.topic(spec.name),
                settings.topic_partitions,
                settings.topic_replication,
                topic_configs=topic_config(spec, settings.topic_replication),
            )
            for spec in TOPIC_SPECS
            if settings.topic(spec.name) not in existing
        ] + [
            NewTopic(
                spec.name,
                settings.topic_partitions,
                settings.topic_replication,
                topic_configs=topic_config(spec, settings.topic_replication),
            )
            for spec in extra
            if spec.name not in existing
        ]
        if missing:
            # another process may win the race; the topic is there either way
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("created topics %s", [t.name for t in missing])
    finally:
        await admin.close()


EX_TEMPFAIL = 75  # sysexits.h: "try again later", which supervisors restart


def ensure_topics_or_exit(settings: Settings, extra: Sequence[TopicSpec] = ()) -> None:
    """For entry points: the topics, once Kafka answers; if it never does within the
    wait, exit with 75 so a supervisor (``make run``, systemd, Kubernetes) starts the
    service again later, rather than with a traceback and 1."""
    try:
        asyncio.run(ensure_topics(settings, extra=extra))
    except KafkaUnreachable as exc:
        log.error("%s; exiting with %d so a supervisor starts this again later", exc, EX_TEMPFAIL)
        raise SystemExit(EX_TEMPFAIL) from None
