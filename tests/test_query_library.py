"""The named queries return what the seeds' metrics mean, on a generated cohort whose
answers are computed here in plain Python."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from learnstream.cli import main as cli
from learnstream.plots import PlotError, plot_time_series, series
from learnstream.settings import Settings
from schemas.examples import example_event
from sinks import query_library
from sinks.writer import ClickHouseWriter
from tests.test_sink_redelivery import CATALOG, produce_examples, run_sink_until

AS_OF = date(2026, 3, 31)
STARTS = ("session_start", "session_started")
ENDS = ("session_end", "session_ended", "session_completed")


def cohort(seed: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for _ in range(count):
        kind = rng.choice(("session_start", "session_completed", "session_end", "page_view"))
        moment = datetime(2026, 4, 1, tzinfo=UTC) - timedelta(minutes=rng.randrange(60 * 24 * 45))
        event = example_event(CATALOG[kind], moment)
        event["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        event["user_id"] = f"learner-{rng.randrange(5)}"
        if kind == "session_completed":
            event["properties"]["practice_mode_id"] = rng.choice(["listening", "speaking"])
            event["properties"]["total_duration"] = rng.randrange(60, 3600)
        events.append(event)
    return events


def within(event: dict[str, Any], days: int) -> bool:
    moment = datetime.fromisoformat(event["timestamp"])
    start = datetime.combine(AS_OF, datetime.min.time(), UTC) - timedelta(days=days)
    return start <= moment < datetime.combine(AS_OF + timedelta(days=1), datetime.min.time(), UTC)


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return cohort(7, 400)


def run(clickhouse: Any, name: str, **params: str) -> list[tuple[Any, ...]]:
    sql = query_library.load()[name].render({"as_of": AS_OF.isoformat(), **params})
    return [tuple(row) for row in clickhouse.query(sql).result_rows]


def test_seed_metrics(settings: Settings, clickhouse: Any, events: list[dict[str, Any]]) -> None:
    asyncio.run(produce_examples(settings, events, now=datetime(2026, 4, 1, tzinfo=UTC)))
    asyncio.run(
        run_sink_until(
            settings, ClickHouseWriter(clickhouse, settings.clickhouse_database), len(events)
        )
    )
    recent = [e for e in events if within(e, 30)]
    users = sorted({e["user_id"] for e in recent})

    started = Counter(e["user_id"] for e in recent if e["event_type"] in STARTS)
    completed = Counter(e["user_id"] for e in recent if e["event_type"] in ENDS)
    assert run(clickhouse, "completion_rate") == [
        (
            u,
            started[u],
            completed[u],
            round(completed[u] / started[u] * 100, 2) if started[u] else 0,
        )
        for u in users
    ]

    sessions = [e for e in recent if e["event_type"] == "session_completed"]
    lengths: dict[str, list[int]] = defaultdict(list)
    for e in sessions:
        lengths[e["user_id"]].append(e["properties"]["total_duration"])
    assert run(clickhouse, "average_session_length") == [
        (u, len(v), round(sum(v) / len(v), 1)) for u, v in sorted(lengths.items())
    ]

    modes = defaultdict(list)
    for e in sessions:
        modes[e["properties"]["practice_mode_id"]].append(e["user_id"])
    expected_modes = sorted(
        ((m, len(v), len(set(v))) for m, v in modes.items()), key=lambda r: (-r[1], r[0])
    )
    assert run(clickhouse, "mode_popularity") == expected_modes

    four_weeks = [e for e in events if within(e, 28) and e["event_type"] == "session_completed"]
    per_user = Counter(e["user_id"] for e in four_weeks)
    assert run(clickhouse, "session_frequency", weeks="4") == [
        (u, n, round(n / 4, 2)) for u, n in sorted(per_user.items())
    ]


def test_parameters_are_checked_and_rendered_as_literals() -> None:
    named = query_library.load()["completion_rate"]
    with pytest.raises(query_library.QueryError, match="not a non-negative integer"):
        named.render({"days": "7; DROP TABLE events"})
    with pytest.raises(query_library.QueryError, match="YYYY-MM-DD"):
        named.render({"as_of": "yesterday'"})
    with pytest.raises(query_library.QueryError, match="no parameter"):
        named.render({"nope": "1"})
    assert "toIntervalDay(7)" in named.render({"days": "7"})


def test_cli_lists_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["queries"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in query_library.load())


MODES = ("listening", "speaking")
DRILLS = {"d1": "Pushback", "d2": "Bad news", "d3": "Delegation", "d4": "Small talk"}


def practice_cohort(seed: int, count: int) -> list[dict[str, Any]]:
    """Scored sessions, answered questions and timings at mixed sample rates."""
    rng = random.Random(seed)
    events = []
    for _ in range(count):
        kind = rng.choice(
            ("session_completed", "question_submit", "page_load_time", "api_response_time")
        )
        moment = datetime(2026, 4, 1, tzinfo=UTC) - timedelta(minutes=rng.randrange(60 * 24 * 40))
        event = example_event(CATALOG[kind], moment)
        event["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        event["user_id"] = f"learner-{rng.randrange(4)}"
        props = event["properties"]
        if kind == "session_completed":
            drills = rng.sample(sorted(DRILLS), rng.randrange(0, 4))
            props.update(
                practice_mode_id=rng.choice(MODES),
                scores=[
                    {"drill_id": d, "drill_name": DRILLS[d], "score": float(rng.randrange(101))}
                    for d in drills
                ],
            )
        elif kind == "question_submit":
            props.update(topic_id=rng.choice(("fractions", "verbs", "maps")))
            props.update(is_correct=rng.random() < 0.55)
        elif kind == "page_load_time":
            props["load_time_ms"] = float(rng.randrange(100, 5000))
            event["sample_rate"] = rng.choice((0.01, 0.1, 1.0))
        else:
            props["response_time_ms"] = float(rng.randrange(5, 900))
            event["sample_rate"] = rng.choice((0.5, 1.0))
        events.append(event)
    return events


def weighted_quantile(pairs: list[tuple[float, int]], level: float) -> float:
    """ClickHouse's quantileExactWeighted: the first value, in order, whose running
    weight reaches level * total."""
    ordered = sorted(pairs)
    total = sum(w for _, w in ordered)
    running = 0
    for value, weight in ordered:
        running += weight
        if running >= level * total:
            return value
    return ordered[-1][0]


def test_practice_metrics(settings: Settings, clickhouse: Any) -> None:
    events = practice_cohort(5, 600)
    asyncio.run(produce_examples(settings, events, now=datetime(2026, 4, 1, tzinfo=UTC)))
    asyncio.run(
        run_sink_until(
            settings, ClickHouseWriter(clickhouse, settings.clickhouse_database), len(events)
        )
    )
    sessions = [e for e in events if e["event_type"] == "session_completed"]

    def day(e: dict[str, Any]) -> date:
        return datetime.fromisoformat(e["timestamp"]).date()

    # skill progression: weekly average drill score per mode
    weekly: dict[tuple[date, str], list[tuple[str, str, float]]] = defaultdict(list)
    for e in sessions:
        if within(e, 90):
            monday = day(e) - timedelta(days=day(e).weekday())
            for s in e["properties"]["scores"]:
                weekly[(monday, e["properties"]["practice_mode_id"])].append(
                    (e["event_id"], e["user_id"], s["score"])
                )
    got = run(clickhouse, "skill_progression")
    assert [r[:4] + r[5:] for r in got] == [
        (week, mode, len({x[0] for x in v}), len(v), len({x[1] for x in v}))
        for (week, mode), v in sorted(weekly.items())
    ]
    for row in got:
        scores = [x[2] for x in weekly[(row[0], row[1])]]
        assert row[4] == pytest.approx(sum(scores) / len(scores), abs=0.051)
    one = run(clickhouse, "skill_progression", user="learner-1")
    assert sum(r[3] for r in one) == sum(
        len(e["properties"]["scores"])
        for e in sessions
        if e["user_id"] == "learner-1" and within(e, 90)
    )

    # engagement: sessions, active days, mean gap between consecutive sessions
    recent = [e for e in sessions if within(e, 30)]
    by_user: dict[str, list[datetime]] = defaultdict(list)
    for e in recent:
        by_user[e["user_id"]].append(datetime.fromisoformat(e["timestamp"]))
    expected_engagement = []
    for user, times in sorted(by_user.items()):
        times.sort()
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        mean_gap = round(sum(gaps) / len(gaps) / 3600, 2) if gaps else None
        expected_engagement.append((user, len(times), len({t.date() for t in times}), mean_gap))
    got_engagement = run(clickhouse, "engagement")
    assert [r[:3] for r in got_engagement] == [r[:3] for r in expected_engagement]
    for r, x in zip(got_engagement, expected_engagement, strict=True):
        assert r[3] == (None if x[3] is None else pytest.approx(x[3], abs=0.011))

    # blind spots: three lowest-average drills per learner
    drill_scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in recent:
        for s in e["properties"]["scores"]:
            drill_scores[(e["user_id"], s["drill_id"])].append(s["score"])
    expected_spots = []
    for user in sorted({u for u, _ in drill_scores}):
        mine = sorted(
            ((sum(v) / len(v), d, len(v)) for (u, d), v in drill_scores.items() if u == user),
            key=lambda x: (x[0], x[1]),
        )[:3]
        expected_spots += [(user, d, DRILLS[d], n) for _, d, n in mine]
    got_spots = run(clickhouse, "blind_spots")
    assert [(r[0], r[1], r[2], r[4]) for r in got_spots] == expected_spots

    # knowledge gaps: ≥ 3 answers on a topic and under 60 % right
    answers: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for e in events:
        if e["event_type"] == "question_submit" and within(e, 30):
            answers[(e["user_id"], e["properties"]["topic_id"])].append(
                e["properties"]["is_correct"]
            )
    gaps_expected = sorted(
        (
            (u, t, len(v), sum(v), round(sum(v) / len(v) * 100, 1))
            for (u, t), v in answers.items()
            if len(v) >= 3 and sum(v) * 100 < 60 * len(v)
        ),
        key=lambda r: (r[0], r[4], r[1]),
    )
    assert gaps_expected
    assert run(clickhouse, "knowledge_gaps") == gaps_expected

    # daily user stats: the materialized table, summed per day and learner
    per_day: Counter[tuple[date, str]] = Counter()
    correct: Counter[tuple[date, str]] = Counter()
    for e in events:
        if e["event_type"] == "question_submit" and AS_OF - timedelta(days=30) <= day(e) <= AS_OF:
            per_day[(day(e), e["user_id"])] += 1
            correct[(day(e), e["user_id"])] += e["properties"]["is_correct"]
    daily = {(r[0], r[1]): (r[6], r[7]) for r in run(clickhouse, "daily_user_stats")}
    assert {k: v for k, v in daily.items() if v != (0, 0)} == {
        k: (n, correct[k]) for k, n in per_day.items()
    }
    topics = run(clickhouse, "topic_daily_stats")
    assert sum(r[2] for r in topics) == sum(per_day.values())

    # latency percentiles, each sample weighing 1 / sample_rate
    timings: dict[tuple[date, str], list[tuple[float, int]]] = defaultdict(list)
    for e in events:
        if e["event_type"] in ("page_load_time", "api_response_time") and within(e, 7):
            props = e["properties"]
            ms = props.get("load_time_ms", props.get("response_time_ms"))
            timings[(day(e), e["event_type"])].append((ms, round(1000 / e["sample_rate"])))
    expected_latency = [
        (
            d,
            m,
            len(v),
            round(sum(w for _, w in v) / 1000),
            weighted_quantile(v, 0.5),
            weighted_quantile(v, 0.95),
            weighted_quantile(v, 0.99),
        )
        for (d, m), v in sorted(timings.items())
    ]
    assert run(clickhouse, "latency_percentiles") == expected_latency


def test_plot_draws_one_line_per_mode_and_a_panel_per_measure(tmp_path: Path) -> None:
    columns = ["week", "practice_mode_id", "sessions", "avg_score"]
    rows = [
        [date(2026, 3, 2), "listening", 3, 61.5],
        [date(2026, 3, 2), "speaking", 1, 40.0],
        [date(2026, 3, 9), "listening", 2, 70.0],
    ]
    time_column, measures = series(columns, rows)
    assert time_column == "week"
    assert measures["avg_score"] == {
        ("listening",): [(date(2026, 3, 2), 61.5), (date(2026, 3, 9), 70.0)],
        ("speaking",): [(date(2026, 3, 2), 40.0)],
    }
    out = tmp_path / "skill.png"
    plot_time_series(columns, rows, out, title="skill_progression")
    assert out.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(PlotError, match="no date"):
        series(["user_id", "sessions"], [["a", 1]])
