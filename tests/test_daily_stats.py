"""daily_user_stats and topic_daily_stats, kept by materialized views on events, hold
exactly what a plain count over the generated cohort says, computed here in Python."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from learnstream.settings import Settings
from schemas.examples import example_event
from sinks.writer import ClickHouseWriter
from tests.test_sink_redelivery import CATALOG, T0, produce_examples, run_sink_until

KINDS = (
    "session_start",
    "session_end",
    "session_completed",
    "session_result",
    "question_submit",
    "material_open",
    "xp_earned",
    "lesson_completed",
)


def cohort(seed: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for _ in range(count):
        kind = rng.choice(KINDS)
        event = example_event(CATALOG[kind], T0 + timedelta(hours=rng.randrange(24 * 5)))
        event["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        event["user_id"] = f"learner-{rng.randrange(6)}"
        event["organization_id"] = rng.choice(["org-a", "org-b"])
        props = event["properties"]
        if kind in ("session_end", "session_result"):
            props["duration_seconds"] = rng.randrange(60, 3600)
        if kind == "session_completed":
            props["total_duration"] = rng.randrange(60, 3600)
        if kind in ("question_submit", "material_open"):
            props["topic_id"] = rng.choice(["fractions", "verbs", "cells"])
        if kind == "question_submit":
            props["is_correct"] = rng.random() < 0.6
        if kind == "xp_earned":
            props["xp_amount"] = rng.randrange(1, 100)
        events.append(event)
    return events


def day_of(event: dict[str, Any]) -> date:
    return date.fromisoformat(event["timestamp"][:10])  # the examples are in UTC


def expected_user_days(events: list[dict[str, Any]]) -> dict[tuple[str, str, date], list[Any]]:
    stats: dict[tuple[str, str, date], list[Any]] = defaultdict(lambda: [0.0] + [0] * 8)
    for e in events:
        row = stats[(e["organization_id"], e["user_id"], day_of(e))]
        kind, props = e["event_type"], e["properties"]
        row[0] += 1.0
        row[1] += kind == "session_start"
        completed = kind in ("session_end", "session_completed", "session_result")
        row[2] += completed
        row[3] += (
            props.get("total_duration" if kind == "session_completed" else "duration_seconds", 0)
            if completed
            else 0
        )
        row[4] += kind == "question_submit"
        row[5] += kind == "question_submit" and props["is_correct"]
        row[6] += kind == "lesson_completed"
        row[7] += kind == "material_open"
        row[8] += props["xp_amount"] if kind == "xp_earned" else 0
    return dict(stats)


def expected_topic_days(events: list[dict[str, Any]]) -> dict[tuple[str, str, date], list[Any]]:
    stats: dict[tuple[str, str, date], list[Any]] = defaultdict(lambda: [0, 0, 0, set()])
    for e in events:
        topic = e["properties"].get("topic_id")
        if e["event_type"] not in ("question_submit", "material_open") or not topic:
            continue
        row = stats[(e["organization_id"], topic, day_of(e))]
        row[0] += e["event_type"] == "question_submit"
        row[1] += e["event_type"] == "question_submit" and e["properties"]["is_correct"]
        row[2] += e["event_type"] == "material_open"
        row[3].add(e["user_id"])
    return {k: [v[0], v[1], v[2], len(v[3])] for k, v in stats.items()}


def test_daily_views_match_counts_over_the_cohort(settings: Settings, clickhouse: Any) -> None:
    first, second = cohort(1, 300), cohort(2, 200)
    writer = ClickHouseWriter(clickhouse, settings.clickhouse_database)
    # two sink runs, so the views add up across inserts and parts
    asyncio.run(produce_examples(settings, first))
    asyncio.run(run_sink_until(settings, writer, len(first)))
    asyncio.run(produce_examples(settings, second))
    asyncio.run(run_sink_until(settings, writer, len(second)))
    events = first + second

    users = clickhouse.query(
        "SELECT organization_id, user_id, day, sum(events), sum(sessions_started), "
        "sum(sessions_completed), sum(study_seconds), sum(questions_answered), "
        "sum(questions_correct), sum(lessons_completed), sum(materials_opened), sum(xp_earned) "
        "FROM daily_user_stats GROUP BY organization_id, user_id, day"
    ).result_rows
    assert {(o, u, d): list(rest) for o, u, d, *rest in users} == expected_user_days(events)

    topics = clickhouse.query(
        "SELECT organization_id, topic_id, day, sum(questions_answered), "
        "sum(questions_correct), sum(materials_opened), uniqMerge(learners) "
        "FROM topic_daily_stats GROUP BY organization_id, topic_id, day"
    ).result_rows
    assert {(o, t, d): list(rest) for o, t, d, *rest in topics} == expected_topic_days(events)
