"""``learnstream import`` on the real stack: JSONL (gzipped), CSV and Parquet files of
historical events, their rejects explained, their event times kept as they would have
been live, and an import killed half-way resumed to every event exactly once."""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from learnstream.cli import main as cli
from tests.conftest import isolated_settings
from tests.live_stack import LiveStack, live_stack

IMPORT = [sys.executable, "-m", "learnstream.cli", "import"]
RUN = uuid.uuid4().hex[:8]
CLEAN = "source_topic LIKE '%events.clean'"  # derived events share the table
DAY = (datetime.now(UTC) - timedelta(days=10)).replace(hour=9, minute=0, second=0, microsecond=0)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    settings = isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("import"))
    with live_stack(settings) as running:
        yield running


@pytest.fixture
def env(stack: LiveStack, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in stack.settings.as_env().items():
        monkeypatch.setenv(name, value)
    return dict(os.environ)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stored(stack: LiveStack, user: str) -> dict[str, list[Any]]:
    rows = stack.sql(
        "SELECT toString(event_id), count(), toString(min(timestamp)), any(score) "
        f"FROM events WHERE user_id = {{u}} AND {CLEAN} GROUP BY event_id",
        u=user,
    )
    return {r[0]: r[1:] for r in rows}


def _wait_stored(stack: LiveStack, user: str, count: int) -> dict[str, list[Any]]:
    stack.wait_for(f"{count} events of {user}", lambda: len(_stored(stack, user)) >= count)
    return _stored(stack, user)


def _accepted_total(stack: LiveStack) -> float:
    text = stack.collector.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("learnstream_events_accepted_total"))
    return float(line.split()[-1])


def _ch(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def lesson(user: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "lesson_completed",
        "timestamp": _iso(at),
        "user_id": user,
        "device_info": {"timezone": "Europe/Berlin"},
        "properties": {"content_id": f"lesson-{uuid.uuid4().hex[:6]}"},
        **extra,
    }


def test_jsonl_gz_keeps_historical_event_times_and_explains_rejects(
    stack: LiveStack, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = f"jsonl-{RUN}"
    # three days in a row, ten days ago; the first sent from a device whose clock was
    # right (sent_at a second later): it must not be taken for an hour-long skew today
    days = [
        lesson(user, DAY, sent_at=_iso(DAY + timedelta(seconds=1))),
        lesson(user, DAY + timedelta(days=1)),
        # exported with its receipt: the device clock was an hour behind, so live it was
        # corrected by an hour, and so it is here
        lesson(
            user,
            DAY + timedelta(days=2) - timedelta(hours=1),
            sent_at=_iso(DAY + timedelta(days=2) - timedelta(hours=1)),
            received_at=_iso(DAY + timedelta(days=2)),
        ),
    ]
    too_high = {
        "event_id": str(uuid.uuid4()),
        "event_type": "quiz_completed",
        "timestamp": _iso(DAY),
        "user_id": user,
        "properties": {"content_id": "q", "score": 150},
    }
    lines = [json.dumps(e) for e in days[:2]] + ["{not json", json.dumps(too_high)]
    lines += ["", json.dumps(days[2])]
    path = tmp_path / "history.jsonl.gz"
    with gzip.open(path, "wt") as out:
        out.write("\n".join(lines) + "\n")

    assert cli(["import", str(path)]) == 0
    said = capsys.readouterr().out
    assert "accepted 3 events, rejected 2" in said
    assert "properties.score: must be <= N, got N" in said
    rejects = [json.loads(x) for x in Path(f"{path}.rejects.jsonl").read_text().splitlines()]
    assert [r["number"] for r in rejects] == [3, 4]
    assert rejects[0]["record"] == "{not json" and rejects[0]["errors"].startswith("not JSON")
    assert rejects[1]["errors"][0]["field"] == "properties.score"

    stored = _wait_stored(stack, user, 3)
    assert {k: v[1] for k, v in stored.items()} == {
        days[0]["event_id"]: _ch(DAY),
        days[1]["event_id"]: _ch(DAY + timedelta(days=1)),
        days[2]["event_id"]: _ch(DAY + timedelta(days=2)),
    }
    # folded by event time as live: three days in a row, 50 XP each
    stack.wait_for(
        "the learner's streak",
        lambda: (
            (state := stack.reads.get(f"/v1/learners/{user}/state")).status_code == 200
            and state.json()["progress"]["longest_streak"] == 3
        ),
    )
    assert stack.reads.get(f"/v1/learners/{user}/state").json()["progress"]["xp"] == 150

    # done is done: the same command again sends nothing
    accepted = _accepted_total(stack)
    assert cli(["import", str(path)]) == 0
    assert "accepted 3 events, rejected 2" in capsys.readouterr().out
    assert _accepted_total(stack) == accepted


def test_csv_and_parquet_cells_take_their_schema_types(
    stack: LiveStack, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = f"tables-{RUN}"
    quiz_id, lesson_id, bad_id = (str(uuid.uuid4()) for _ in range(3))
    path = tmp_path / "history.csv"
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            ["event_id", "event_type", "timestamp", "user_id", "properties.contentId",
             "properties.score", "device_info.timezone"]
        )  # fmt: skip
        writer.writerow([quiz_id, "quiz_completed", _iso(DAY), user, "42", "84.5", "UTC"])
        writer.writerow([lesson_id, "lesson_completed", _iso(DAY), user, "l-1", "", ""])
        writer.writerow([bad_id, "quiz_completed", _iso(DAY), user, "q", "lots", ""])
    assert cli(["import", str(path)]) == 0
    said = capsys.readouterr().out
    assert "accepted 2 events, rejected 1" in said and "must be a number" in said

    parquet_ids = [str(uuid.uuid4()) for _ in range(2)]
    table = pa.table(
        {
            "event_id": parquet_ids,
            "event_type": ["quiz_completed", "lesson_completed"],
            "timestamp": pa.array(
                [DAY + timedelta(days=1), DAY + timedelta(days=2)], pa.timestamp("ms", tz="UTC")
            ),
            "user_id": [user, user],
            "properties": [json.dumps({"content_id": "q-9", "score": 61.0}), None],
            "properties.content_id": [None, "l-9"],
        }
    )
    parquet = tmp_path / "history.parquet"
    pq.write_table(table, parquet)
    state = tmp_path / "stdin.import-state"
    with open(parquet, "rb") as stdin:  # from a pipe: no name to tell the format by
        piped = subprocess.run(
            [*IMPORT, "-", "--format", "parquet", "--state", str(state)],
            stdin=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert piped.returncode == 0, piped.stderr
    assert "accepted 2 events, rejected 0" in piped.stdout

    stored = _wait_stored(stack, user, 4)
    assert stored[quiz_id] == [1, _ch(DAY), 84.5]
    assert stored[lesson_id][:2] == [1, _ch(DAY)]
    assert stored[parquet_ids[0]] == [1, _ch(DAY + timedelta(days=1)), 61.0]
    assert stored[parquet_ids[1]][:2] == [1, _ch(DAY + timedelta(days=2))]
    assert bad_id not in stored


def test_an_import_killed_half_way_resumes_to_every_event_once(
    stack: LiveStack, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = f"resume-{RUN}"  # one learner: one partition, one order through every stage
    events = [lesson(user, DAY + timedelta(minutes=i)) for i in range(2000)]
    path = tmp_path / "big.jsonl"
    # every 100th line is refused: each must be in the rejects file once, however the
    # interruption fell
    lines = [json.dumps(e) if i % 100 else "{cut off" for i, e in enumerate(events, start=1)]
    path.write_text("\n".join(lines) + "\n")
    events = [e for i, e in enumerate(events, start=1) if i % 100]
    state_path = Path(f"{path}.import-state")
    killed = subprocess.Popen([*IMPORT, str(path), "--batch-size", "50", "--rate", "1000"], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (state_path.exists() and json.loads(state_path.read_text())["done_through"]):
            assert killed.poll() is None, "the import ended before it could be interrupted"
            assert time.monotonic() < deadline, "the import never recorded a batch"
            time.sleep(0.05)
        time.sleep(0.3)  # mid-way, at no particular batch boundary
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    done = json.loads(state_path.read_text())
    assert 0 < done["done_through"] < 2000 and not done["complete"]
    assert len(Path(f"{path}.rejects.jsonl").read_text().splitlines()) < 20

    assert cli(["import", str(path)]) == 0
    assert "accepted 1980 events, rejected 20" in capsys.readouterr().out
    rejects = Path(f"{path}.rejects.jsonl").read_text().splitlines()
    assert [json.loads(r)["number"] for r in rejects] == list(range(100, 2001, 100))
    # the file's last event is stored after everything sent before it on its partition,
    # the copies the killed run had in flight included
    stack.wait_for(
        "the last event",
        lambda: (
            stack.sql(
                "SELECT count() FROM events WHERE event_id = toUUID({e})", e=events[-1]["event_id"]
            )
            == [[1]]
        ),
    )
    assert stack.sql(
        f"SELECT count(), uniqExact(event_id) FROM events WHERE user_id = {{u}} AND {CLEAN}", u=user
    ) == [[1980, 1980]]
