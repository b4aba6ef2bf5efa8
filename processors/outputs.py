"""Shapes what the fold produced into records for Kafka: derived events and snapshots.

Derived events get a deterministic event_id (UUIDv5 of source event and kind), so a
redelivery that sends them again is a duplicate downstream, not a second award.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import msgspec

from projections.blind_spots import DrillAttempt, blind_spots
from projections.learner import Derived, Summary, TopicMastery
from projections.streaks import current_streak, last_active
from projections.study import RECENT_DAYS, StudyStats
from schemas.catalog import EventCatalog

DERIVED_NAMESPACE = uuid.UUID("6f1c7a52-52a1-4b7e-9d0c-3c1f9a3f0a11")


def derived_event_id(derived: Derived) -> str:
    return str(uuid.uuid5(DERIVED_NAMESPACE, f"{derived.source_event_id}/{derived.kind}"))


# (id of the catalogue, derived type) -> its properties' (name, default), in schema order;
# a catalogue lives as long as the process, and a mapping is not hashable
_PROPERTY_DEFAULTS: dict[tuple[int, str], tuple[tuple[str, Any], ...]] = {}


def _property_defaults(catalog: EventCatalog, kind: str) -> tuple[tuple[str, Any], ...]:
    known = _PROPERTY_DEFAULTS.get((id(catalog), kind))
    if known is None:
        (slot,) = [f for f in catalog[kind].schema["fields"] if f["name"] == "properties"]
        known = tuple((f["name"], f.get("default")) for f in slot["type"]["fields"])
        _PROPERTY_DEFAULTS[(id(catalog), kind)] = known
    return known


def derived_datum(
    catalog: EventCatalog, derived: Derived, source: dict[str, Any]
) -> dict[str, Any]:
    """A full envelope for the derived event, in the derived type's own schema."""
    properties = {
        name: derived.properties.get(name, default)
        for name, default in _property_defaults(catalog, derived.kind)
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


def user_progress(user_id: str, summary: Summary) -> dict[str, Any]:
    assert summary.latest is not None
    local_today = summary.latest.local_date
    return {
        "user_id": user_id,
        "xp": summary.xp,
        "level": summary.level,
        "current_streak": current_streak(summary.streak, local_today),
        "longest_streak": summary.streak.longest,
        "last_active_date": last_active(summary.streak),
        "latest_event_at": summary.latest.timestamp,
        "events_applied": summary.events_applied,
        **_study(summary.study, summary.courses, local_today),
    }


def _study(study: StudyStats, courses: dict[str, int], local_today: date) -> dict[str, Any]:
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
            {"course_id": course, "completed_content": done}
            for course, done in sorted(courses.items())
        ],
        "recent_days": [
            {"date": date.fromordinal(day), **msgspec.structs.asdict(stats)}
            for day, stats in sorted(study.days.items())
            if day > horizon
        ],
    }


def topic_mastery(
    user_id: str, topic_id: str, mastery: TopicMastery, summary: Summary
) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "topic_id": topic_id,
        "p_mastery": mastery.p,
        "mastered": mastery.mastered,
        "events_applied": summary.events_applied,
    }


def mode_progress(user_id: str, mode: str, summary: Summary) -> dict[str, Any]:
    p = summary.modes[mode]
    return {
        "user_id": user_id,
        "practice_mode_id": mode,
        "current_level": p.current_level,
        "total_sessions": p.total_sessions,
        "total_drills_completed": p.total_drills_completed,
        "sessions_at_current_level": p.sessions_at_current_level,
        "events_applied": summary.events_applied,
    }


def learner_blind_spots(
    user_id: str, summary: Summary, drills: tuple[DrillAttempt, ...]
) -> dict[str, Any]:
    assert summary.latest is not None
    spots = blind_spots(drills, summary.latest.timestamp)
    return {
        "user_id": user_id,
        "as_of": summary.latest.timestamp,
        "blind_spots": [
            {
                **s,
                "drill_id": str(s["drill_id"]),
                "drill_name": None if s["drill_name"] is None else str(s["drill_name"]),
            }
            for s in spots
        ],
        "events_applied": summary.events_applied,
    }
