"""Every example in README.md runs as written, against the running pipeline (the SQL
examples run against a live sink in tests/test_hostile_input.py).

The shell and Python blocks are run as the README shows them; only the default ports
(8080, 8081) are swapped for the test's own, and they run in a scratch folder so the
files they write (an outbox, a plot) land there.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from devstack.services import ServiceGroup
from learnstream.settings import Settings
from schemas.catalog import default_catalog
from schemas.examples import example_event
from tests.conftest import REPO
from tests.test_pipeline_e2e import pipeline  # noqa: F401 - the running stack, as a fixture

README = (REPO / "README.md").read_text(encoding="utf-8")
CATALOG = default_catalog()
NOT_EXAMPLES = ("make run", "make test")  # the two commands: what CI and `make run` do


def _blocks(language: str) -> list[str]:
    return list(re.findall(rf"```{language}\n(.*?)```", README, re.S))


def _for_this_stack(text: str, settings: Settings) -> str:
    return (
        text.replace("localhost:8080", f"127.0.0.1:{settings.collector_port}")
        .replace("localhost:8081", f"127.0.0.1:{settings.query_port}")
        .replace(".venv/bin/", f"{REPO}/.venv/bin/")
    )


def _run(command: list[str], settings: Settings, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**settings.as_env(), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    return done


def _events_jsonl(folder: Path) -> None:
    """The fold example's input: a few envelope events, one per line."""
    start = datetime(2026, 2, 20, 9, tzinfo=UTC)
    lines = [
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "lesson_completed",
            "timestamp": (start + timedelta(days=day)).isoformat(),
            "user_id": "ada",
            "properties": {"content_id": f"lesson-{day}"},
        }
        for day in range(3)
    ]
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))


def _send_a_practice_session(settings: Settings) -> None:
    event = example_event(CATALOG["session_completed"])
    moment = datetime.now(UTC) - timedelta(days=2)
    event |= {"event_id": str(uuid.uuid4()), "timestamp": moment.isoformat()}
    event["properties"]["completed_at"] = moment.isoformat()
    response = httpx.post(f"{settings.collector_url}/v1/events", json=event, timeout=30)
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 60
    query = f"{settings.query_url}/v1/query"
    sql = "SELECT count() FROM events WHERE event_type = 'session_completed'"
    while httpx.post(query, content=sql, timeout=30).json()["rows"] != [[1]]:
        assert time.monotonic() < deadline, "the practice session never reached ClickHouse"
        time.sleep(0.3)


def test_every_shell_and_python_example_runs_as_written(
    settings: Settings,
    pipeline: ServiceGroup,  # noqa: F811
    tmp_path: Path,
) -> None:
    shell = [b for b in _blocks("sh") if not any(c in b for c in NOT_EXAMPLES)]
    python = _blocks("python")
    assert shell and python
    _events_jsonl(tmp_path)
    _send_a_practice_session(settings)  # something for the plot example to draw
    outputs = []
    for block in shell:
        outputs.append(
            _run(["bash", "-e", "-c", _for_this_stack(block, settings)], settings, tmp_path)
        )
    for block in python:
        outputs.append(
            _run([sys.executable, "-c", _for_this_stack(block, settings)], settings, tmp_path)
        )
    said = "\n".join(done.stdout for done in outputs)
    assert '"status":"accepted"' in said  # the curl in "Try it"
    assert "CREATE ROW POLICY" in said
    assert '"users"' in said and '"ada"' in said  # the fold
    assert (tmp_path / "skill.png").exists()  # the plot
    assert (tmp_path / "learnstream-outbox.db").exists()  # the SDK example queued and sent
