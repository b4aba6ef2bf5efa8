"""The event catalogue covers every event type named in the seeds, each valid as exemplified."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.catalog import CATEGORIES, default_catalog
from schemas.examples import example_event
from schemas.validation import Accepted, Rejected, validate_event

CATALOG = default_catalog()
NOW = datetime(2026, 2, 1, tzinfo=UTC)

SEED_EVENT_TYPES = {
    # seed 004: the four categories of its taxonomy
    "user_login",
    "user_logout",
    "session_timeout",
    "password_reset",
    "page_view",
    "page_exit",
    "menu_click",
    "breadcrumb_click",
    "game_launch",
    "sequence_view",
    "assignment_open",
    "resource_download",
    "message_sent",
    "message_read",
    "notification_received",
    "game_stage_start",
    "game_stage_complete",
    "game_stage_quit",
    "target_met",
    "assignment_started",
    "assignment_completed",
    "assignment_overdue",
    "concept_mastered",
    "review_scheduled",
    "retention_check",
    "challenge_joined",
    "challenge_completed",
    "leaderboard_update",
    "page_load_time",
    "api_response_time",
    "asset_load_time",
    "javascript_error",
    "api_error",
    "game_error",
    "network_error",
    "service_health_check",
    "database_connection",
    "cdn_status",
    "subscription_created",
    "subscription_updated",
    "payment_processed",
    "seat_utilization",
    "feature_adoption",
    "retention_metrics",
    "support_ticket_created",
    "support_ticket_resolved",
    # seed 001: study events
    "session_start",
    "session_end",
    "session_pause",
    "session_resume",
    "material_open",
    "material_read",
    "material_complete",
    "material_highlight",
    "material_note",
    "material_bookmark",
    "question_view",
    "question_submit",
    "quiz_start",
    "quiz_complete",
    "ai_question_asked",
    "ai_response_received",
    "ai_feedback_positive",
    "ai_feedback_negative",
    "ai_hint_requested",
    "ai_explanation_requested",
    "xp_earned",
    "level_up",
    "achievement_unlocked",
    "streak_continued",
    "streak_broken",
    "search_performed",
    "topic_explored",
    # seed 002, seed 000, seed 003
    "session_started",
    "lesson_completed",
    "quiz_completed",
    "session_ended",
    "session_completed",
    "session_result",
    # seed 004 rules: mouse movements (1 % sampling), debug events, consent per category
    "mouse_movement",
    "debug_log",
    "consent_updated",
}


def test_every_seed_event_type_has_a_schema() -> None:
    assert set(CATALOG) == SEED_EVENT_TYPES


def test_every_type_has_one_known_category() -> None:
    assert {t.category for t in CATALOG.values()} <= CATEGORIES


def test_sampling_classes_follow_seed_004() -> None:
    performance = {n for n, t in CATALOG.items() if t.sampling == "performance"}
    assert performance == {
        "page_load_time",
        "api_response_time",
        "asset_load_time",
        "service_health_check",
        "database_connection",
        "cdn_status",
    }
    assert {n for n, t in CATALOG.items() if t.sampling == "high_volume"} == {
        "page_view",
        "mouse_movement",
    }
    assert {n for n, t in CATALOG.items() if t.sampling == "debug"} == {"debug_log"}
    never = {
        t.sampling
        for t in CATALOG.values()
        if t.category == "learning_progress" or t.name.endswith("_error")
    }
    assert never == {"never"}


@pytest.mark.parametrize("name", sorted(SEED_EVENT_TYPES))
def test_example_of_each_type_is_accepted(name: str) -> None:
    assert isinstance(validate_event(CATALOG, example_event(CATALOG[name]), NOW), Accepted)


def _properties_errors(name: str, properties: dict[str, object]) -> list[tuple[str, str]]:
    event = example_event(CATALOG[name])
    event["properties"] = {**event["properties"], **properties}
    outcome = validate_event(CATALOG, event, NOW)
    assert isinstance(outcome, Rejected)
    return [(e.field, e.message) for e in outcome.errors]


@pytest.mark.parametrize(
    ("name", "properties", "field", "message"),
    [
        (
            "session_result",
            {"session_type": "karaoke"},
            "properties.session_type",
            "must be one of ['conversation', 'pronunciation', 'roleplay']",
        ),
        ("game_stage_complete", {"score": 101}, "properties.score", "must be <= 100"),
        (
            "question_submit",
            {"is_correct": "yes"},
            "properties.is_correct",
            "must be true or false",
        ),
        ("quiz_complete", {"total_questions": 0}, "properties.total_questions", "must be >= 1"),
        (
            "session_completed",
            {"scores": [{"drill_id": "d", "drill_name": "x", "score": -5}]},
            "properties.scores[0].score",
            "must be >= 0",
        ),
        (
            "session_completed",
            {"drills_completed": -1},
            "properties.drills_completed",
            "must be >= 0",
        ),
        ("api_response_time", {"status_code": 99}, "properties.status_code", "must be >= 100"),
        (
            "material_read",
            {"scroll_depth_percent": 101},
            "properties.scroll_depth_percent",
            "must be <= 100",
        ),
        (  # free-form JSON (issue 12) takes any object, but an object it must be
            "search_performed",
            {"filters_applied": "a=1"},
            "properties.filters_applied",
            "must be an object, got string",
        ),
        ("payment_processed", {"currency": "EURO"}, "properties.currency", "is longer than 3"),
        (
            "ai_question_asked",
            {"detected_topics": ["t"] * 1001},
            "properties.detected_topics",
            "has more than 1000 items",
        ),
    ],
)
def test_type_rules_reject_naming_the_field(
    name: str, properties: dict[str, object], field: str, message: str
) -> None:
    found = _properties_errors(name, properties)
    assert any(f == field and message in m for f, m in found), found


def test_numeric_ids_from_seed_000_are_accepted_as_strings() -> None:
    event = example_event(CATALOG["session_completed"])
    event["properties"]["practice_mode_id"] = 7
    event["properties"]["scores"] = [
        {"drill_id": 1, "drill_name": "Bad News Delivery", "score": 85}
    ]
    outcome = validate_event(CATALOG, event, NOW)
    assert isinstance(outcome, Accepted)
    assert outcome.datum["properties"]["practice_mode_id"] == "7"
    assert outcome.datum["properties"]["scores"][0]["drill_id"] == "1"


def test_required_ids_per_type() -> None:
    event = example_event(CATALOG["session_start"])
    del event["session_id"]
    outcome = validate_event(CATALOG, event, NOW)
    assert isinstance(outcome, Rejected)
    assert [(e.field, e.message) for e in outcome.errors] == [
        ("session_id", "is required for session_start events")
    ]
