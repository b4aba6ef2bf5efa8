"""Shapes what the fold produced into records for Kafka: derived events and snapshots.

Derived events get a deterministic event_id (UUIDv5 of source event and kind), so a
redelivery that sends them again is a duplicate downstream, not a second award.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from projections.blind_spots import blind_spots
from projections.events import zone
from projections.learner import Derived, LearnerState
from projections.streaks import current_streak
from projections.study import RECENT_DAYS, StudyStats
from schemas.catalog import EventCatalog

DERIVED_NAMESPACE = uuid.UUID("6f1c7a52-52a1-4b7e-9d0c-3c1f9a3f0a11")


def derived_event_id(derived: Derived) -> str:
    return str(uuid.uuid5(DERIVED_NAMESPACE, f"{derived.source_event_id}/{derived.kind}"))


def derived_datum(
    catalog: EventCatalog, derived: Derived, source: dict[str, Any]
) -> dict[str, Any]:
    """A full envelope for the derived event, in the derived type's own schema."""
    (slot,) = [f for f in catalog[derived.kind].schema["fields"] if f["name"] == "properties"]
    properties = {
        f["name"]: derived.properties.get(f["name"], f.get("default"))
        for f in slot["type"]["fields"]
    }
    if "source_event_id" in properties:
        properties["source_event_id"] = derived.source_event_id
    return {
        "event_id": derived_event_id(derived),
        "event_type": derived.kind,
        "timestamp": derived.timestamp,
        "sent_at": None,
        "received_at": source.get("received_at"),
        "user_id": derived.user_id,
        "session_id": source.get("session_id"),
        "organization_id": source.get("organization_id"),
        "device_info": source.get("device_info"),
        "context": source.get("context"),
        "properties": properties,
        "privacy_level": source.get("privacy_level", "standard"),
        "retention_days": source.get("retention_days"),
        "schema_version": 1,
        "sample_rate": 1.0,
    }


def derived_to_json(derived: Derived) -> dict[str, Any]:
    return {
        "kind": derived.kind,
        "user": derived.user_id,
        "source": derived.source_event_id,
        "at": derived.timestamp.isoformat(),
        "props": dict(derived.properties),
    }


def derived_from_json(data: dict[str, Any]) -> Derived:
    return Derived(
        data["kind"],
        data["user"],
        data["source"],
        datetime.fromisoformat(data["at"]),
        data["props"],
    )


def user_progress(user_id: str, state: LearnerState) -> dict[str, Any]:
    assert state.latest is not None
    local_today = state.latest.timestamp.astimezone(zone(state.latest.timezone)).date()
    last_active = max(state.active_days) if state.active_days else None
    return {
        "user_id": user_id,
        "xp": state.xp,
        "level": state.level,
        "current_streak": current_streak(state.active_days, local_today),
        "longest_streak": state.longest_streak,
        "last_active_date": None if last_active is None else date.fromordinal(last_active),
        "latest_event_at": state.latest.timestamp,
        "events_applied": state.events_applied,
        **_study(state.study, local_today),
    }


def _study(study: StudyStats, local_today: date) -> dict[str, Any]:
    horizon = local_today.toordinal() - RECENT_DAYS
    return {
        "sessions_started": study.sessions_started,
        "sessions_completed": study.sessions_completed,
        "completion_rate": study.completion_rate,
        "study_seconds": study.study_seconds,
        "pauses": study.pauses,
        "materials_opened": study.materials_opened,
        "questions_answered": study.questions_answered,
        "questions_correct": study.questions_correct,
        "courses": [
            {"course_id": course, "completed_content": len(done)}
            for course, done in sorted(study.courses.items())
        ],
        "recent_days": [
            {"date": date.fromordinal(day), **vars(stats)}
            for day, stats in sorted(study.days.items())
            if day > horizon
        ],
    }


def topic_mastery(user_id: str, topic_id: str, state: LearnerState) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "topic_id": topic_id,
        "p_mastery": state.mastery[topic_id],
        "mastered": topic_id in state.mastered,
        "events_applied": state.events_applied,
    }


def mode_progress(user_id: str, mode: str, state: LearnerState) -> dict[str, Any]:
    p = state.modes[mode]
    return {
        "user_id": user_id,
        "practice_mode_id": mode,
        "current_level": p.current_level,
        "total_sessions": p.total_sessions,
        "total_drills_completed": p.total_drills_completed,
        "sessions_at_current_level": p.sessions_at_current_level,
        "events_applied": state.events_applied,
    }


def learner_blind_spots(user_id: str, state: LearnerState) -> dict[str, Any]:
    assert state.latest is not None
    spots = blind_spots(state.drill_attempts, state.latest.timestamp)
    return {
        "user_id": user_id,
        "as_of": state.latest.timestamp,
        "blind_spots": [
            {
                **s,
                "drill_id": str(s["drill_id"]),
                "drill_name": None if s["drill_name"] is None else str(s["drill_name"]),
            }
            for s in spots
        ],
        "events_applied": state.events_applied,
    }
