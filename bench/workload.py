"""A reproducible stream of accepted learning events, encoded as the collector would."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.catalog import default_catalog
from schemas.codec import encode
from schemas.registry import FileSchemaRegistry
from schemas.validation import Accepted, validate_event

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CATALOG = default_catalog()
REGISTRY = FileSchemaRegistry.from_files(CATALOG)


def events(
    count: int,
    users: int = 500,
    seed: int = 1,
    days: int = 30,
    zones: tuple[str, ...] = ("Europe/Paris",),
    drills: tuple[str, ...] = ("d1",),
) -> list[dict[str, Any]]:
    """Learning events of every folded kind, for ``users`` learners over ``days`` days."""
    rng = random.Random(seed)
    made = []
    for _ in range(count):
        kind = rng.choice(
            [
                "lesson_completed",
                "quiz_completed",
                "question_submit",
                "material_complete",
                "session_completed",
            ]
        )
        by_kind: dict[str, dict[str, Any]] = {
            "lesson_completed": {"content_id": "l"},
            "quiz_completed": {"content_id": "q", "score": rng.randint(0, 100)},
            "question_submit": {
                "question_id": "x",
                "topic_id": rng.choice(["a", "b", "c"]),
                "is_correct": rng.random() < 0.6,
            },
            "material_complete": {"material_id": "m"},
            "session_completed": {
                "practice_mode_id": "m1",
                "drills_completed": 2,
                "total_duration": 30,
                "scores": [
                    {
                        "drill_id": rng.choice(drills),
                        "drill_name": "D",
                        "score": rng.randint(0, 100),
                    }
                ],
            },
        }
        props = by_kind[kind]
        made.append(
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "event_type": kind,
                "timestamp": (NOW - timedelta(minutes=rng.randint(0, 60 * 24 * days))).isoformat(),
                "user_id": f"u{rng.randrange(users)}",
                "device_info": {"timezone": rng.choice(zones)},
                "properties": props,
            }
        )
    return made


def encoded(event: dict[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) exactly as the collector publishes the event."""
    outcome = validate_event(CATALOG, event, NOW)
    assert isinstance(outcome, Accepted)
    kind = outcome.event_type
    value = encode(REGISTRY.id_for(kind.subject, kind.schema), kind.parsed, outcome.datum)
    return event["user_id"].encode(), value


def lesson(user: str, at: datetime) -> dict[str, Any]:
    """A fresh lesson_completed: never dropped by dedup or sampling, one fold step each."""
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "lesson_completed",
        "timestamp": at.isoformat(),
        "user_id": user,
        "properties": {"content_id": "bench-lesson"},
    }
