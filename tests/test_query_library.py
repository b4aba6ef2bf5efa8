"""The named queries return what the seeds' metrics mean, on a generated cohort whose
answers are computed here in plain Python."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from learnstream.cli import main as cli
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
