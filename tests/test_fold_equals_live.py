"""One rulebook: the live processors and ``python -m projections fold`` agree on the same
log, consent withdrawals, retried duplicates and sampling included (issue 11)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench import workload
from devstack.services import ServiceGroup
from learnstream.settings import Settings
from projections.events import Event
from projections.fold import fold_log
from schemas.catalog import default_catalog
from schemas.examples import example_event
from tests.crash_helpers import (
    produce_and_expect,
    published_mastery_and_modes,
    published_progress,
    wait_until_caught_up,
)

LEARNERS = 40
CATALOG = default_catalog()


def consent(user: str, at: str, granted: bool) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "consent_updated",
        "timestamp": at,
        "user_id": user,
        "device_info": {"timezone": "UTC"},
        "properties": {"consent_category": "learning_progress", "granted": granted},
    }


def the_log(rng: random.Random) -> list[dict[str, Any]]:
    """The bench workload; a quarter of the learners withdraw consent for learning
    progress halfway through (some grant it back later); 5 % of the events are sent again
    later on, as a client retrying would; page views are sampled at 1 %."""
    events = workload.events(
        4000, users=LEARNERS, seed=5, days=20, zones=("UTC", "Asia/Tokyo"), drills=("d1", "d2")
    )
    for n, user in enumerate(f"u{i}" for i in range(0, LEARNERS, 4)):
        mine = [i for i, e in enumerate(events) if e["user_id"] == user]
        if len(mine) < 4:
            continue
        half, three_quarters = mine[len(mine) // 2], mine[3 * len(mine) // 4]
        moment = datetime.fromisoformat(events[half]["timestamp"]) - timedelta(seconds=1)
        events.insert(half, consent(user, moment.isoformat(), granted=False))
        if n % 2:  # and back, for every other one of them
            moment = datetime.fromisoformat(events[three_quarters + 1]["timestamp"])
            events.insert(three_quarters + 1, consent(user, moment.isoformat(), granted=True))
    for n in range(300):
        view = example_event(CATALOG["page_view"])
        at = events[rng.randrange(len(events))]["timestamp"]
        view |= {"event_id": str(uuid.uuid4()), "user_id": f"u{n % LEARNERS}", "timestamp": at}
        events.insert(rng.randrange(len(events) + 1), view)
    for copy in rng.sample(events, len(events) // 20):
        events.insert(rng.randrange(events.index(copy) + 1, len(events) + 1), dict(copy))
    return events


def test_live_projections_equal_the_fold_command(settings: Settings, tmp_path: Path) -> None:
    events = the_log(random.Random(11))
    expected = produce_and_expect(settings, events)  # the rulebook in-process, live policy
    # the withdrawals and the sampling matter: without them the fold would differ
    ignoring = fold_log(Event.from_envelope(e) for e in events).learners
    assert any(ignoring[u].xp > p["xp"] for u, p in expected.items())
    assert any(
        ignoring[u].summary.events_applied > p["events_applied"] for u, p in expected.items()
    )

    with open(tmp_path / "worker.log", "w") as log:
        group = ServiceGroup(env=settings.as_env(), out=log)
        try:
            group.start("processors")
            wait_until_caught_up(settings, group, expected, timeout_s=240)
        finally:
            group.stop_all()
    live = published_progress(settings)
    assert live == expected
    snapshots = published_mastery_and_modes(settings)

    log_file = tmp_path / "events.jsonl"
    log_file.write_text("".join(json.dumps(e) + "\n" for e in events))
    done = subprocess.run(
        [sys.executable, "-m", "projections", "fold", "--input", str(log_file)],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "LEARNSTREAM_ENVIRONMENT": settings.environment},
    )
    folded = json.loads(done.stdout)["users"]
    assert set(folded) == {e["user_id"] for e in events}
    for user, progress in live.items():
        cli = folded[user]
        assert (cli["xp"], cli["level"], cli["longest_streak"]) == (
            progress["xp"],
            progress["level"],
            progress["longest_streak"],
        ), user
        mastery = {
            s["topic_id"]: s["p_mastery"]
            for s in snapshots["mastery"].values()
            if s["user_id"] == user
        }
        assert cli["mastery"] == mastery, user
        modes = {
            s["practice_mode_id"]: {
                k: v for k, v in s.items() if k not in ("user_id", "practice_mode_id")
            }
            for s in snapshots["modes"].values()
            if s["user_id"] == user
        }
        assert cli["modes"] == modes, user
