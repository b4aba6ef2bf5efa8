"""The folds: pinned rules, arrival-order independence, and oracles written plainly."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.__main__ import fold_file
from projections.blind_spots import DrillAttempt, blind_spots
from projections.delivery import Position
from projections.events import Event, zone
from projections.fold import fold_log
from projections.learner import LearnerState, apply, summary
from projections.mastery import bkt_update
from projections.rounding import round_half_up
from projections.rulebook import TABLES, Incoming, Ledger, Rulebook, decode, encode
from projections.streaks import ACTIVITY_TYPES, is_active, last_active
from projections.study import (
    CONTENT_COMPLETIONS,
    KEPT_DAYS,
    SESSION_ENDS,
    SESSION_STARTS,
    DayStats,
    StudyStats,
)
from projections.xp import level_for, xp_for

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ZONES = [None, "UTC", "America/Los_Angeles", "Asia/Tokyo", "Pacific/Kiritimati", "No/Such_Zone"]


def ev(
    event_type: str,
    minutes: int,
    user: str = "u1",
    tz: str | None = None,
    event_id: str | None = None,
    **props: Any,
) -> Event:
    return Event(
        event_id or f"{event_type}-{minutes}-{user}",
        event_type,
        T0 + timedelta(minutes=minutes),
        user,
        tz,
        props,
    )


# ---- pinned rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rounded"),
    [(0.5, 1), (1.5, 2), (2.5, 3), (84.5, 85), (84.49, 84), (0.49999999999999994, 0), (100, 100)],
)
def test_round_half_up_on_the_exact_value(value: float, rounded: int) -> None:
    assert round_half_up(value) == rounded


@pytest.mark.parametrize(
    ("xp", "level"),
    [
        (0, 1),
        (99, 1),
        (100, 2),
        (299, 2),
        (300, 3),
        (599, 3),
        (600, 4),
        (1000, 5),
        (4500, 10),
        (5500, 11),
        (4499, 9),
    ],
)
def test_level_thresholds(xp: int, level: int) -> None:
    assert level_for(xp) == level


@given(st.integers(0, 10**9))
def test_level_is_the_highest_reached(xp: int) -> None:
    level = level_for(xp)
    assert 50 * level * (level - 1) <= xp < 50 * (level + 1) * level


@pytest.mark.parametrize(
    ("event_type", "props", "xp"),
    [
        ("lesson_completed", {}, 50),
        ("quiz_completed", {"score": 84.5}, 85),
        ("quiz_completed", {"score": 84.4999}, 84),
        ("quiz_complete", {"correct_answers": 7, "total_questions": 8}, 88),  # 87.5 -> 88
        ("quiz_complete", {"correct_answers": 1, "total_questions": 3}, 33),
        ("quiz_complete", {"correct_answers": 2, "total_questions": 3}, 67),
        ("quiz_complete", {"correct_answers": 1, "total_questions": 0}, 0),
        ("question_submit", {"is_correct": True}, 10),
        ("question_submit", {"is_correct": False}, 0),
        ("material_complete", {}, 20),
        ("session_completed", {}, 0),
        ("quiz_completed", {}, 0),
    ],
)
def test_xp_rules(event_type: str, props: dict[str, Any], xp: int) -> None:
    assert xp_for(ev(event_type, 0, **props)) == xp


def test_bkt_matches_the_formula() -> None:
    p = bkt_update(0.2, True)
    assert p == pytest.approx(0.18 / 0.34 + (1 - 0.18 / 0.34) * 0.1)
    q = bkt_update(0.2, False)
    assert q == pytest.approx(0.02 / (0.02 + 0.8 * 0.8) + (1 - 0.02 / 0.66) * 0.1)


def test_concept_mastered_is_emitted_once_when_threshold_first_reached() -> None:
    state, kinds = LearnerState(), []
    for i, correct in enumerate([True] * 6 + [False, True, True]):
        state, out = apply(state, ev("question_submit", i, topic_id="t", is_correct=correct))
        kinds += [d for d in out if d.kind == "concept_mastered"]
    assert len(kinds) == 1 and kinds[0].properties["mastery_probability"] >= 0.95
    assert state.mastered == frozenset({"t"})


def test_mode_progress_levels_every_three_sessions() -> None:
    state = LearnerState()
    for i in range(7):
        state, _ = apply(
            state, ev("session_completed", i, practice_mode_id="m", drills_completed=2, scores=[])
        )
    mode = summary(state, T0)["modes"]["m"]
    assert mode == {
        "current_level": 3,
        "total_sessions": 7,
        "total_drills_completed": 14,
        "sessions_at_current_level": 1,
    }


def test_streak_uses_each_events_own_zone_and_survives_until_the_day_is_over() -> None:
    # 23:30 in Los Angeles on Feb 28 is Mar 1 in UTC: the day counts as Feb 28
    state = LearnerState()
    for minutes, tz in [(-12 * 60 - 30, "America/Los_Angeles"), (24 * 60, None)]:
        state, _ = apply(state, ev("lesson_completed", minutes, tz=tz))
    streak = state.summary.streak
    assert is_active(streak, date(2026, 2, 28)) and not is_active(streak, date(2026, 3, 1))
    assert last_active(streak) == date(2026, 3, 2)
    assert state.longest_streak == 1
    # as of Mar 3 (UTC, the latest event's zone) yesterday was active: streak 1; Mar 4: 0
    assert summary(state, datetime(2026, 3, 3, 23, 59, tzinfo=UTC))["current_streak"] == 1
    assert summary(state, datetime(2026, 3, 4, 0, 0, tzinfo=UTC))["current_streak"] == 0


def test_streak_derived_events() -> None:
    state, kinds = LearnerState(), []
    for day in [0, 1, 2, 5, 6]:
        state, out = apply(state, ev("lesson_completed", day * 24 * 60))
        kinds += [
            (d.kind, d.properties["old_streak"], d.properties["new_streak"])
            for d in out
            if d.kind.startswith("streak")
        ]
    assert kinds == [
        ("streak_continued", 0, 1),
        ("streak_continued", 1, 2),
        ("streak_continued", 2, 3),
        ("streak_broken", 3, 1),
        ("streak_continued", 1, 2),
    ]


def test_blind_spots_window_ties_and_names() -> None:
    def attempt(days_ago: float, drill: str, score: float, name: str = "n") -> DrillAttempt:
        return DrillAttempt(T0 - timedelta(days=days_ago), f"e{days_ago}", drill, name, score)

    attempts = [
        attempt(31, "a", 0),
        attempt(30, "b", 50),
        attempt(1, "b", 70, "B new"),
        attempt(2, "c", 60),
        attempt(3, "d", 60),
        attempt(0, "e", 99),
        attempt(-1, "f", 1),
    ]
    assert blind_spots(attempts, T0) == [
        {"drill_id": "b", "drill_name": "B new", "avg_score": 60.0, "attempts": 2},
        {"drill_id": "c", "drill_name": "n", "avg_score": 60.0, "attempts": 1},
        {"drill_id": "d", "drill_name": "n", "avg_score": 60.0, "attempts": 1},
    ]


# ---- arrival-order independence, against plainly written oracles ------------------

EVENT_TYPES = sorted(
    ACTIVITY_TYPES
    | {"page_view", "achievement_unlocked", "material_open", "session_pause"}
    | SESSION_STARTS
    | SESSION_ENDS
)


@st.composite
def logs(draw: st.DrawFn) -> list[Event]:
    count = draw(st.integers(0, 40))
    events = []
    for i in range(count):
        event_type = draw(st.sampled_from(EVENT_TYPES))
        props: dict[str, Any] = {}
        if event_type in CONTENT_COMPLETIONS and draw(st.booleans()):
            props.update(
                course_id=draw(st.sampled_from(["c1", "c2"])),
                content_id=draw(st.sampled_from(["x1", "x2", "x3"])),
            )
        if event_type in ("session_end", "session_ended"):
            props["duration_seconds"] = draw(st.integers(0, 7200))
        if event_type == "quiz_completed":
            props["score"] = draw(st.floats(0, 100))
        elif event_type == "quiz_complete":
            total = draw(st.integers(1, 20))
            props.update(total_questions=total, correct_answers=draw(st.integers(0, total)))
        elif event_type == "question_submit":
            props.update(
                topic_id=draw(st.sampled_from(["t1", "t2"])), is_correct=draw(st.booleans())
            )
        elif event_type == "session_completed":
            props.update(
                practice_mode_id=draw(st.sampled_from(["m1", "m2"])),
                drills_completed=draw(st.integers(0, 5)),
                total_duration=draw(st.integers(0, 7200)),
                scores=draw(
                    st.lists(
                        st.fixed_dictionaries(
                            {
                                "drill_id": st.sampled_from(["d1", "d2", "d3", "d4"]),
                                "drill_name": st.just("Drill"),
                                "score": st.floats(0, 100),
                            }
                        ),
                        max_size=3,
                    )
                ),
            )
        minutes = draw(st.integers(-60 * 24 * 45, 0))
        events.append(
            Event(
                f"e{i}",
                event_type,
                T0 + timedelta(minutes=minutes),
                draw(st.sampled_from(["u1", "u2"])),
                draw(st.sampled_from(ZONES)),
                props,
            )
        )
    duplicates = draw(st.lists(st.sampled_from(events), max_size=10)) if events else []
    return events + duplicates


def order_free(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k not in ("mastery", "mastered")}


def views(events: list[Event], as_of: datetime) -> dict[str, dict[str, Any]]:
    return {u: order_free(summary(s, as_of)) for u, s in fold_log(events).learners.items()}


@settings(max_examples=200)
@given(logs(), st.randoms(use_true_random=False), st.integers(0, 60 * 24 * 3))
def test_state_does_not_depend_on_arrival_order(log: list[Event], rng: Any, later: int) -> None:
    as_of = T0 + timedelta(minutes=later)
    shuffled = list(log)
    rng.shuffle(shuffled)
    assert views(shuffled, as_of) == views(log, as_of)


def oracle(events: list[Event], user: str, as_of: datetime) -> dict[str, Any]:
    """The rules computed directly from the deduplicated set, no incremental state."""
    unique = {e.event_id: e for e in events}.values()
    mine = [e for e in unique if e.user_id == user]
    xp = sum(xp_for(e) for e in mine)
    days = {e.local_date for e in mine if e.event_type in ACTIVITY_TYPES}
    ordinals = sorted(d.toordinal() for d in days)
    longest = run = 0
    for i, d in enumerate(ordinals):
        run = run + 1 if i and ordinals[i - 1] == d - 1 else 1
        longest = max(longest, run)
    latest = max(mine, key=lambda e: (e.timestamp, e.event_id))
    today_date = as_of.astimezone(zone(latest.timezone)).date()
    current = 0
    cursor = today_date if today_date in days else today_date - timedelta(days=1)
    while cursor in days:
        current, cursor = current + 1, cursor - timedelta(days=1)
    sessions = [e for e in mine if e.event_type == "session_completed"]
    modes = {}
    for mode in {e.properties["practice_mode_id"] for e in sessions}:
        mode_sessions = [e for e in sessions if e.properties["practice_mode_id"] == mode]
        n = len(mode_sessions)
        modes[mode] = {
            "current_level": 1 + n // 3,
            "total_sessions": n,
            "total_drills_completed": sum(e.properties["drills_completed"] for e in mode_sessions),
            "sessions_at_current_level": n % 3,
        }
    scores: dict[str, list[float]] = {}
    for e in sessions:
        if as_of - timedelta(days=30) <= e.timestamp <= as_of:
            for s in e.properties["scores"]:
                scores.setdefault(s["drill_id"], []).append(s["score"])
    spots = sorted(((math.fsum(v) / len(v), d, len(v)) for d, v in scores.items()))[:3]
    return {
        "xp": xp,
        "level": level_for(xp),
        "current_streak": current,
        "longest_streak": longest,
        "blind_spots": [
            {"drill_id": d, "drill_name": "Drill", "avg_score": a, "attempts": n}
            for a, d, n in spots
        ],
        "modes": dict(sorted(modes.items())),
    }


@settings(max_examples=200)
@given(logs(), st.integers(0, 60 * 24 * 3))
def test_fold_matches_the_oracle(log: list[Event], later: int) -> None:
    as_of = T0 + timedelta(minutes=later)
    folded = views(log, as_of)
    assert folded == {u: oracle(log, u, as_of) for u in folded}


@settings(max_examples=200)
@given(logs(), st.randoms(use_true_random=False))
def test_study_stats_do_not_depend_on_arrival_order(log: list[Event], rng: Any) -> None:
    shuffled = list(log)
    rng.shuffle(shuffled)
    in_order = {u: s.study for u, s in fold_log(log).learners.items()}
    assert {u: s.study for u, s in fold_log(shuffled).learners.items()} == in_order


def study_oracle(events: list[Event], user: str) -> tuple[StudyStats, dict[str, frozenset[str]]]:
    """Sessions, courses and days counted straight from the deduplicated set; days as
    far back as live state keeps them (KEPT_DAYS before the newest event's UTC date)."""
    unique = {e.event_id: e for e in events}.values()
    mine = [e for e in unique if e.user_id == user]

    def count(kinds: set[str] | frozenset[str]) -> int:
        return sum(1 for e in mine if e.event_type in kinds)

    def seconds(e: Event) -> int:
        key = "total_duration" if e.event_type == "session_completed" else "duration_seconds"
        return int(e.properties.get(key, 0)) if e.event_type in SESSION_ENDS else 0

    answers = [e for e in mine if e.event_type == "question_submit"]
    courses: dict[str, set[str]] = {}
    for e in mine:
        if e.event_type in CONTENT_COMPLETIONS and "course_id" in e.properties:
            courses.setdefault(e.properties["course_id"], set()).add(e.properties["content_id"])
    days: dict[int, DayStats] = {}
    horizon = max(e.timestamp for e in mine).date().toordinal() - KEPT_DAYS
    for e in mine:
        day = DayStats(
            seconds(e),
            int(e.event_type in SESSION_ENDS),
            int(e.event_type == "question_submit"),
            int(e.event_type == "question_submit" and e.properties["is_correct"]),
            xp_for(e),
        )
        if day != DayStats() and e.local_date.toordinal() > horizon:
            key = e.local_date.toordinal()
            days[key] = days.get(key, DayStats()).plus(day)
    stats = StudyStats(
        sessions_started=count(SESSION_STARTS),
        sessions_completed=count(SESSION_ENDS),
        study_seconds=sum(seconds(e) for e in mine),
        pauses=count({"session_pause"}),
        materials_opened=count({"material_open"}),
        questions_answered=len(answers),
        questions_correct=sum(1 for e in answers if e.properties["is_correct"]),
        days=days,
    )
    return stats, {c: frozenset(done) for c, done in courses.items()}


@settings(max_examples=200)
@given(logs())
def test_study_stats_match_the_oracle(log: list[Event]) -> None:
    for user, state in fold_log(log).learners.items():
        stats, courses = study_oracle(log, user)
        assert state.study == stats
        assert state.courses == courses
        assert state.summary.courses == {c: len(done) for c, done in courses.items()}
        expected_rate = (
            state.study.sessions_completed / state.study.sessions_started
            if state.study.sessions_started
            else None
        )
        assert state.study.completion_rate == expected_rate


@given(logs())
def test_state_pieces_survive_their_encoding(log: list[Event]) -> None:
    for state in fold_log(log).learners.values():
        pieces = {"topic": state.topics.values(), "course": state.courses.values()}
        for table, values in pieces.items():
            for value in values:
                assert decode(table, encode(value)) == value
        assert decode("drills", encode(state.drills)) == state.drills
        assert set(TABLES) >= set(pieces)


# ---- the CLI contract ---------------------------------------------------------------


def test_cli_reports_bad_lines_and_defaults_as_of_to_the_latest_event(tmp_path: Any) -> None:
    lines = [
        {
            "event_id": "a",
            "event_type": "lesson_completed",
            "timestamp": "2026-01-01T10:00:00Z",
            "user_id": "ada",
            "properties": {},
        },
        "not json",
        {"event_id": "b", "event_type": "lesson_completed", "timestamp": "2026-01-02T10:00:00Z"},
        {
            "event_id": "a",
            "event_type": "lesson_completed",
            "timestamp": "2026-01-01T10:00:00Z",
            "user_id": "ada",
            "properties": {},
        },
        {
            "event_id": "c",
            "event_type": "page_view",
            "timestamp": "2026-01-05T10:00:00+02:00",
            "user_id": "bob",
        },
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "projections", "fold", "--input", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stderr.splitlines() == [
        "line 2: not JSON (Expecting value: line 1 column 1 (char 0)); skipped",
        "line 3: missing user_id; skipped",
    ]
    users = json.loads(done.stdout)["users"]
    assert users["ada"]["xp"] == 50
    assert users["ada"]["current_streak"] == 0  # as of Jan 5, the last active day was Jan 1
    assert users["bob"] == {
        "xp": 0,
        "level": 1,
        "current_streak": 0,
        "longest_streak": 0,
        "mastery": {},
        "mastered": [],
        "blind_spots": [],
        "modes": {},
    }


def test_cli_as_of() -> None:
    line = json.dumps(
        {
            "event_id": "a",
            "event_type": "question_submit",
            "user_id": "ada",
            "timestamp": "2026-01-01T10:00:00Z",
            "properties": {"topic_id": "t", "is_correct": True},
        }
    )
    errors = io.StringIO()
    doc = fold_file(io.StringIO(line), datetime(2026, 1, 2, 23, 0, tzinfo=UTC), errors)
    assert doc["users"]["ada"]["current_streak"] == 1
    assert doc["users"]["ada"]["mastery"] == {"t": pytest.approx(0.576470588)}
    assert errors.getvalue() == ""


def _daily_learner(days: int) -> list[Event]:
    """One learner active every day: a lesson, an answer and a scored session each day,
    over 300 topics, 10 courses, 4 practice modes and 20 drills."""
    events = []
    for day in range(days):
        at = T0 + timedelta(days=day)
        events += [
            Event(f"l{day}", "lesson_completed", at, "ada", "Asia/Tokyo",
                  {"course_id": f"c{day % 10}", "content_id": f"k{day}"}),
            Event(f"q{day}", "question_submit", at, "ada", "Asia/Tokyo",
                  {"topic_id": f"t{day % 300}", "is_correct": day % 3 > 0}),
            Event(f"s{day}", "session_completed", at, "ada", "Asia/Tokyo",
                  {"practice_mode_id": f"m{day % 4}", "drills_completed": 3,
                   "total_duration": 600,
                   "scores": [{"drill_id": f"d{(day + i) % 20}", "score": 50.0 + i}
                              for i in range(3)]}),
        ]  # fmt: skip
    return events


def test_the_summary_stays_small_whatever_the_history() -> None:
    """The per-learner record written on every event is bounded: once the streak window
    (a year) is full, two years of daily activity leave it as small as 400 days do."""

    def summary_bytes(days: int) -> int:
        return len(encode(fold_log(_daily_learner(days)).learners["ada"].summary))

    a_year, two_years = summary_bytes(400), summary_bytes(730)
    assert two_years < 1024
    assert two_years <= a_year + 8  # a few bytes: counters take more digits


def _run_batch(
    store: dict[tuple[str, str], Any], batch: list[tuple[int, Event]]
) -> dict[tuple[str, str], Any]:
    """One live batch over ``store``: the values it writes (None: a deletion)."""
    ledger = Ledger(lambda table, key: store.get((table, key)))
    book = Rulebook()
    for offset, event in batch:
        book.step(ledger, Incoming(event, Position(0, offset), 0, None, 1.0))
    return {slot: value for slot, (value, _partition) in ledger.writes.items()}


def _written(store: dict[tuple[str, str], Any], writes: dict[tuple[str, str], Any]) -> None:
    for slot, value in writes.items():
        if value is None:
            store.pop(slot, None)
        else:
            store[slot] = value


@settings(max_examples=200)
@given(logs(), st.integers(0, 50))
def test_a_redelivered_batch_writes_again_the_state_its_changelog_lost(
    log: list[Event], cut: int
) -> None:
    """RocksDB keeps a batch's writes on disk before its changelog records are
    acknowledged. A worker killed in between restarts with local state its changelog
    lacks; the batch is redelivered, and must write that state again, or a worker that
    recovers the partition from the changelog later misses it for good."""
    messages = list(enumerate(log))
    first, second = messages[:cut], messages[cut:]
    changelog: dict[tuple[str, str], Any] = {}
    _written(changelog, _run_batch(changelog, first))
    local = dict(changelog)
    _written(local, _run_batch(local, second))  # killed before the changelog got these
    expected = dict(local)  # the state with both batches applied once
    again = _run_batch(local, second)  # redelivered to the restarted worker
    _written(local, again)
    _written(changelog, again)
    assert local == expected
    assert changelog == expected
