"""The dashboard on the real stack: its JSON against answers computed here, each
reader's scope, and the page drawn by headless Chromium with every chart showing data.

A small generated cohort (two organizations, learners joining in different weeks and
dropping off) goes through the collector, processors and sink as processes. The page is
rendered by Debian's Chromium driven by npm ``playwright-core`` (``dashboard/
screenshot.mjs``); the screenshot becomes ``docs/dashboard.png``, which the README shows.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from learnstream.settings import Settings
from schemas.catalog import default_catalog
from schemas.examples import example_event
from sinks.access import Principal, Role
from sinks.dashboard_api import dashboard_queries, scoped
from tests.conftest import REPO, isolated_settings
from tests.live_stack import LiveStack, live_stack

DASHBOARD = REPO / "dashboard"
SCREENSHOT = REPO / "docs" / "dashboard.png"
CHROMIUM = Path("/usr/bin/chromium")
SECRET = "dashboard-reader-secret-0123456789abcdef"
CATALOG = default_catalog()
AS_OF = date(2026, 3, 29)  # a Sunday: the six weeks before it are whole Monday weeks
WEEKS = 6
FIRST_MONDAY = AS_OF - timedelta(days=7 * WEEKS - 1)
TOPICS = ("fractions", "decimals", "ratios", "geometry", "algebra", "statistics")
DRILLS = {  # drill -> how hard (mean score goes down with it)
    "intervals": 10,
    "chords": 25,
    "scales": 5,
    "rhythm": 35,
    "sight-reading": 45,
    "ear-training": 20,
}
# learner -> (organization, first active week, weeks they stay)
LEARNERS = {
    "ada": ("org-a", 0, 6),
    "ben": ("org-a", 0, 2),
    "cleo": ("org-a", 1, 5),
    "dev": ("org-a", 1, 3),
    "eli": ("org-a", 2, 4),
    "fay": ("org-a", 3, 1),
    "gus": ("org-b", 0, 4),
    "hana": ("org-b", 2, 2),
    "ivo": ("org-b", 4, 2),
}
PAGE_QUERY = f"?as_of={AS_OF}&days={7 * WEEKS}&weeks={WEEKS}"


@dataclass
class Cohort:
    events: list[dict[str, Any]]
    active_days: dict[str, set[date]]
    lessons: dict[str, int]
    correct: dict[str, int]
    topics: dict[str, set[str]]


def _event(kind: str, user: str, org: str, moment: datetime, **props: Any) -> dict[str, Any]:
    event = example_event(CATALOG[kind], moment)
    event.update(
        event_id=str(uuid.uuid4()),
        user_id=user,
        organization_id=org,
        session_id=f"{user}-{moment.date()}",
        device_info={"platform": "desktop", "timezone": "UTC"},
        context=None,
    )
    event["properties"].update(props)
    return event


def cohort(seed: int = 7) -> Cohort:
    rng = random.Random(seed)
    made = Cohort([], defaultdict(set), defaultdict(int), defaultdict(int), defaultdict(set))
    for user, (org, first, weeks) in LEARNERS.items():
        skill = rng.uniform(0.3, 0.9)
        for week in range(first, first + weeks):
            monday = FIRST_MONDAY + timedelta(days=7 * week)
            for day in sorted(rng.sample(range(7), rng.randrange(2, 6))):
                at = datetime.combine(monday + timedelta(days=day), datetime.min.time(), UTC)
                at += timedelta(hours=9, minutes=rng.randrange(600))
                made.active_days[user].add(at.date())
                made.lessons[user] += 1
                made.events.append(
                    _event("lesson_completed", user, org, at, content_id=f"lesson-{week}-{day}")
                )
                for n in range(3):
                    topic, right = rng.choice(TOPICS), rng.random() < skill
                    made.topics[user].add(topic)
                    made.correct[user] += right
                    made.events.append(
                        _event(
                            "question_submit",
                            user,
                            org,
                            at + timedelta(minutes=1 + n),
                            topic_id=topic,
                            is_correct=right,
                        )
                    )
                scores = [
                    {"drill_id": d, "drill_name": d.replace("-", " "), "score": float(s)}
                    for d in rng.sample(sorted(DRILLS), 3)
                    for s in [max(0, min(100, round(rng.gauss(85 - DRILLS[d], 8))))]
                ]
                made.events.append(
                    _event(
                        "session_completed",
                        user,
                        org,
                        at + timedelta(minutes=5),
                        practice_mode_id="ear",
                        scores=scores,
                    )
                )
    return made


def token(who: Principal) -> str:
    claims = {
        "sub": who.user_id,
        "role": str(who.role),
        "exp": int(time.time()) + 3600,
        **({"org": who.organization_id} if who.organization_id else {}),
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


ADMIN = Principal(Role.SYSTEM_ADMIN, "root")
ORG_A = Principal(Role.SUBSCRIBER_ADMIN, "head-a", "org-a")
ORG_B = Principal(Role.SUBSCRIBER_ADMIN, "head-b", "org-b")
STUDENT = Principal(Role.STUDENT, "cleo")


def visible(who: Principal) -> set[str]:
    if who.role is Role.STUDENT:
        return {who.user_id}
    if who.role is Role.SUBSCRIBER_ADMIN:
        return {u for u, (org, _, _) in LEARNERS.items() if org == who.organization_id}
    return set(LEARNERS)


def longest_run(days: set[date]) -> int:
    return max(sum(1 for _ in _run_from(d, days)) for d in days if d - timedelta(1) not in days)


def _run_from(day: date, days: set[date]) -> Iterator[date]:
    while day in days:
        yield day
        day += timedelta(days=1)


def level_of(xp: int) -> int:
    """Highest L with 50 x L x (L - 1) <= XP (README's rule, counted up here)."""
    level = 1
    while 50 * (level + 1) * level <= xp:
        level += 1
    return level


def build_dashboard() -> None:
    """``make dashboard``'s steps, so this file also runs on its own."""
    npm = shutil.which("npm")
    assert npm, "the dashboard needs Node.js and npm (see devstack/system-deps.sh)"
    installed = DASHBOARD / "node_modules" / ".package-lock.json"
    lock = DASHBOARD / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=DASHBOARD, check=True)
    subprocess.run([npm, "run", "--silent", "build"], cwd=DASHBOARD, check=True)


@pytest.fixture(scope="module")
def data() -> Cohort:
    return cohort()


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, data: Cohort
) -> Iterator[LiveStack]:
    build_dashboard()
    settings: Settings = isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("dashboard"))
    settings = settings.model_copy(update={"reader_token_secret": SECRET})
    with live_stack(settings, reader_token=token(ADMIN)) as running:
        sent_at = datetime.now(UTC).isoformat()
        for start in range(0, len(data.events), 500):
            chunk = data.events[start : start + 500]
            answer = running.collector.post(
                "/v1/events/batch", json={"sent_at": sent_at, "events": chunk}
            )
            assert answer.status_code == 202, answer.text
            assert answer.json()["accepted"] == len(chunk), answer.text
        expected_pairs = sum(len(t) for t in data.topics.values())

        def folded() -> bool:
            [[events, learners, pairs, spots]] = running.sql(
                "SELECT (SELECT count() FROM events WHERE event_type IN"
                " ('lesson_completed', 'question_submit', 'session_completed')),"
                " (SELECT sum(events_applied) FROM user_progress_current),"
                " (SELECT count() FROM topic_mastery_current),"
                " (SELECT count() FROM blind_spots_current)"
            )
            want = len(data.events)
            return (events, learners, pairs, spots) == (want, want, expected_pairs, len(LEARNERS))

        running.wait_for("every event stored and folded", folded)
        yield running


def dashboard(stack: LiveStack, who: Principal, path: str, **params: Any) -> dict[str, Any]:
    answer = stack.reads.get(
        f"/v1/dashboard/{path}",
        params=params,
        headers={"authorization": f"Bearer {token(who)}"},
    )
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


@pytest.mark.parametrize("who", [ADMIN, ORG_A, ORG_B, STUDENT], ids=lambda w: str(w.role))
def test_each_reader_gets_the_numbers_of_the_learners_they_see(
    stack: LiveStack, data: Cohort, who: Principal
) -> None:
    mine = visible(who)
    learners = dashboard(stack, who, "learners")["rows"]
    xp = {u: 50 * data.lessons[u] + 10 * data.correct[u] for u in mine}
    assert [r["user_id"] for r in learners] == sorted(mine, key=lambda u: (-xp[u], u))
    for row in learners:
        user = row["user_id"]
        assert (row["xp"], row["level"]) == (xp[user], level_of(xp[user]))
        assert row["longest_streak"] == longest_run(data.active_days[user])
        assert 1 <= row["current_streak"] <= row["longest_streak"]

    days = 7 * WEEKS
    active = dashboard(stack, who, "daily-active", days=days, as_of=AS_OF)
    expected = [
        {"day": str(day), "learners": sum(day in data.active_days[u] for u in mine)}
        for day in (FIRST_MONDAY + timedelta(n) for n in range(days))
    ]
    assert active["rows"] == expected
    assert (active["from"], active["to"]) == (str(FIRST_MONDAY), str(AS_OF))

    weeks_of = {u: {d - timedelta(d.weekday()) for d in data.active_days[u]} for u in mine}
    cohorts: dict[tuple[date, int], int] = defaultdict(int)
    for weeks in weeks_of.values():
        for week in weeks:
            cohorts[(min(weeks), (week - min(weeks)).days // 7)] += 1
    retention = dashboard(stack, who, "retention", weeks=WEEKS, as_of=AS_OF)["rows"]
    assert [(r["cohort"], r["week_offset"], r["learners"]) for r in retention] == [
        (str(c), k, n) for (c, k), n in sorted(cohorts.items())
    ]
    for row in retention:
        size = cohorts[(date.fromisoformat(row["cohort"]), 0)]
        assert row["cohort_size"] == size
        assert row["retained"] == round(row["learners"] / size, 4)

    cells = dashboard(stack, who, "mastery")["rows"]
    assert {(r["user_id"], r["topic_id"]) for r in cells} == {
        (u, t) for u in mine for t in data.topics[u]
    }
    assert all(0 <= r["p_mastery"] <= 1 for r in cells)

    spots = dashboard(stack, who, "blind-spots", drills=len(DRILLS))["rows"]
    assert sum(r["learners"] for r in spots) == 3 * len(mine)  # each learner's three weakest
    assert {r["drill_id"] for r in spots} <= set(DRILLS)


def test_a_student_cannot_widen_their_scope_and_no_token_gets_nothing(stack: LiveStack) -> None:
    assert stack.reads.get("/v1/dashboard/learners", headers={"authorization": ""}).is_error
    rows = dashboard(stack, STUDENT, "mastery", learners=100, topics=100)["rows"]
    assert {r["user_id"] for r in rows} == {STUDENT.user_id}


def test_every_dashboard_query_reads_only_scoped_tables() -> None:
    """Each query names only tables the scoping narrows, so each gets a WITH clause
    for a reader who may not see everything, and none for a system administrator."""
    for name, query in dashboard_queries().items():
        sql = query.render({})
        assert scoped(sql, ADMIN, "db") == sql, name
        narrowed = scoped(sql, STUDENT, "db")
        assert narrowed.startswith("WITH ") and "user_id = 'cleo'" in narrowed, name


def _render(stack: LiveStack, who: Principal, out: Path) -> dict[str, Any]:
    assert CHROMIUM.exists(), "needs Debian's chromium (devstack/system-deps.sh installs it)"
    url = f"{stack.settings.query_url}/dashboard/{PAGE_QUERY}"
    done = subprocess.run(
        ["node", "screenshot.mjs", url, str(out), token(who)],
        cwd=DASHBOARD,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_the_page_draws_every_chart_from_the_readers_data(
    stack: LiveStack, data: Cohort, tmp_path: Path
) -> None:
    shot = tmp_path / "dashboard.png"
    report = _render(stack, ORG_A, shot)
    assert report["state"] == "ready", report["error"]
    assert report["problems"] == []
    origin = stack.settings.query_url.rstrip("/")
    assert all(url.startswith(origin + "/") for url in report["requests"]), report["requests"]
    assert "subscriber_admin head-a" in report["scope"]

    charts = report["charts"]
    assert set(charts) == {"learners", "daily-active", "retention", "mastery", "blind-spots"}
    for name, chart in charts.items():
        assert chart["datasets"] and all(d["points"] > 0 for d in chart["datasets"]), name
        # every bar, point and heatmap cell is painted where the chart put it
        assert chart["elements"] > 0 and chart["painted"] == chart["elements"], (name, chart)
    org_a = visible(ORG_A)
    assert charts["learners"]["datasets"][0]["points"] == len(org_a)
    assert charts["mastery"]["elements"] == sum(len(data.topics[u]) for u in org_a)
    assert len(charts["retention"]["datasets"]) == len({LEARNERS[u][1] for u in org_a})
    assert shot.stat().st_size > 20_000  # a page of charts, not a blank one
    bare = report["withoutToken"]  # the same page in a tab that has no token
    assert bare["state"] == "error" and bare["asks"], bare
    assert "Authorization" in bare["error"]

    SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)


def test_the_page_is_served_with_a_policy_that_allows_only_its_own_files(
    stack: LiveStack,
) -> None:
    page = stack.reads.get("/dashboard", follow_redirects=True)
    assert page.status_code == 200 and str(page.url).endswith("/dashboard/")
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert '<script type="module" src="dashboard.js">' in page.text
    script = stack.reads.get("/dashboard/dashboard.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert stack.reads.get("/dashboard/..%2Fpackage.json").status_code == 404
