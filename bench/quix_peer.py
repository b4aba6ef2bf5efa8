"""The peer reference: issue 11's minimal equivalent job, written in quix-streams.

Dedup by event_id, XP/level fold per learner (the rules of ``projections.xp``), two
output records per event (the event to a clean topic, the learner's XP and level as
JSON to an xp topic), durable state (quix-streams' RocksDB store with its changelog
topics), at-least-once, acks=all with an idempotent producer. Input: the same
Confluent-framed Avro records as events.raw, decoded with learnstream's own codec.

Runs from the bench's peer virtualenv (``bench.peer_env``), which has quixstreams;
``python -m bench`` starts it as a process of its own and stops it with SIGTERM
(quix-streams then commits a last checkpoint).
"""

from __future__ import annotations

import argparse
import importlib
import logging
from typing import Any

from projections.events import Event
from projections.xp import level_for, xp_for
from schemas.codec import decode
from schemas.registry import FileSchemaRegistry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quix_peer")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--clean", required=True)
    parser.add_argument("--xp", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args(argv)
    qs: Any = importlib.import_module("quixstreams")  # only in the peer virtualenv
    registry = FileSchemaRegistry.from_files()

    app = qs.Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        processing_guarantee="at-least-once",
        producer_extra_config={"enable.idempotence": True, "acks": "all"},
        loglevel=logging.WARNING,
    )
    source = app.topic(args.input, key_deserializer="bytes", value_deserializer="bytes")
    clean = app.topic(args.clean, key_serializer="bytes", value_serializer="bytes")
    xp_topic = app.topic(args.xp, key_serializer="bytes", value_serializer="json")

    def fold(value: bytes, state: Any) -> dict[str, Any] | None:
        event = Event.from_envelope(decode(registry, value))
        seen_key = "seen:" + event.event_id
        if state.get(seen_key) is not None:
            return None  # a duplicate event_id
        state.set(seen_key, 1)
        learner = state.get("learner") or {"xp": 0, "level": 1, "events": 0}
        total = learner["xp"] + xp_for(event)
        learner = {"xp": total, "level": level_for(total), "events": learner["events"] + 1}
        state.set("learner", learner)
        return {"raw": value, "xp": {"user_id": event.user_id, **learner}}

    sdf = app.dataframe(source)
    sdf = sdf.apply(fold, stateful=True).filter(lambda out: out is not None)
    sdf.apply(lambda out: out["raw"]).to_topic(clean)
    sdf.apply(lambda out: out["xp"]).to_topic(xp_topic)
    app.run()


if __name__ == "__main__":
    main()
