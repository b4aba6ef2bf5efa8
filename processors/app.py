"""The Faust application: events.raw -> dedup -> events.clean, and XP per learner.

Agents stay thin: decisions live in ``processors.delivery`` and business rules in
``projections``. Table values are small JSON dicts (Faust's default table codec).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import faust
import mode
from fastavro import parse_schema

from learnstream.settings import Settings
from learnstream.topics import EVENTS_CLEAN, EVENTS_INVALID, EVENTS_RAW, PROJECTIONS_XP
from processors.delivery import Position, Seen, already_applied, classify
from projections.events import Event
from projections.xp import XpState, apply_xp
from schemas.catalog import load_named_schema
from schemas.codec import decode, encode
from schemas.registry import SchemaRegistry

log = logging.getLogger(__name__)

USER_XP_SCHEMA = load_named_schema("projections/user_xp.avsc")
USER_XP_SUBJECT = "learnstream.projections.UserXp"


def _raw_topic(app: faust.App, name: str) -> Any:
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def create_app(settings: Settings, registry: SchemaRegistry) -> faust.App:
    app = faust.App(
        settings.topic("learnstream-processors"),
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
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
    xp_topic = _raw_topic(app, settings.topic(PROJECTIONS_XP))

    # event_id -> position of the message that first carried it
    first_seen = app.Table("dedup-first-seen", default=None, partitions=settings.topic_partitions)
    # user_id -> {"xp", "n", "applied": position of the last applied message}
    user_xp = app.Table("user-xp", default=None, partitions=settings.topic_partitions)
    xp_schema_id = registry.id_for(USER_XP_SUBJECT, USER_XP_SCHEMA)
    xp_parsed = parse_schema(dict(USER_XP_SCHEMA))

    async def publish_xp(user_id: str, state: XpState) -> None:
        value = encode(
            xp_schema_id,
            xp_parsed,
            {"user_id": user_id, "xp": state.xp, "events_applied": state.events_applied},
        )
        await xp_topic.send(key=user_id.encode(), value=value)

    async def fold_xp(event: Event, here: Position) -> None:
        if event.user_id is None:
            return
        stored = user_xp.get(event.user_id)
        state = XpState(stored["xp"], stored["n"]) if stored else XpState()
        applied = Position.from_json(stored["applied"]) if stored else None
        if not already_applied(applied, here):
            state, _ = apply_xp(state, event)
            user_xp[event.user_id] = {
                "xp": state.xp,
                "n": state.events_applied,
                "applied": here.as_json(),
            }
        # Re-sent on redelivery too: the snapshot may not have gone out before the crash,
        # and a compacted topic of snapshots makes sending it twice harmless.
        await publish_xp(event.user_id, state)

    @app.agent(raw_topic)
    async def process_raw(stream: faust.StreamT[bytes]) -> None:
        async for message in stream.events():
            here = Position(message.message.partition, message.message.offset)
            data: bytes = message.value
            try:
                datum = decode(registry, data)
                event = Event.from_envelope(datum)
            except Exception as exc:  # undecodable bytes must not stop the partition
                log.error("undecodable message at %s: %r", here, exc)
                await invalid_topic.send(value=_undecodable(data, here, exc))
                continue
            seen_at = first_seen.get(event.event_id)
            verdict = classify(Position.from_json(seen_at) if seen_at else None, here)
            if verdict is Seen.DUPLICATE:
                log.info("duplicate event_id %s at %s dropped", event.event_id, here)
                continue
            if verdict is Seen.FIRST_TIME:
                first_seen[event.event_id] = here.as_json()
            await clean_topic.send(key=message.key, value=data)
            await fold_xp(event, here)

    return app


def _undecodable(data: bytes, here: Position, exc: Exception) -> bytes:
    return json.dumps(
        {
            "raw": data.hex(),
            "errors": [{"field": "(message)", "message": f"cannot decode: {exc!r}"}],
            "source": f"processors at partition {here.partition} offset {here.offset}",
        }
    ).encode()
