"""``make run``'s supervisor heals instead of halting: any service that stops is started
again, with doubling pauses and a restart budget that, once spent, is said plainly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.services import RestartBudget, free_port, http_ok
from learnstream.settings import Settings
from tests.conftest import REPO


@given(st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=40))
def test_restart_pauses_double_and_the_budget_holds_within_its_window(gaps: list[float]) -> None:
    budget = RestartBudget(max_restarts=5, window_s=60.0, base_delay_s=0.5, max_delay_s=8.0)
    now, granted = 0.0, list[float]()
    for gap in gaps:
        now += gap
        when = budget.next_start("processors", now)
        recent = [t for t in granted if now - t < 60.0]
        if len(recent) >= 5:
            assert when is None  # spent: at most 5 restarts in any 60 s
            continue
        assert when is not None
        assert when - now == pytest.approx(min(0.5 * 2 ** len(recent), 8.0))
        granted.append(now)
    assert budget.next_start("sink", now) == now + 0.5  # each service has its own budget


def _children(pid: int) -> dict[int, str]:
    """Direct child processes of ``pid`` and their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def _processors_pid(devstack: subprocess.Popen[bytes]) -> int | None:
    pids = [p for p, cmd in _children(devstack.pid).items() if "-m processors" in cmd]
    return pids[0] if pids else None


def _wait(check: object, timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():  # type: ignore[operator]
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.broker  # it starts a broker of its own, as make run does
def test_make_run_restarts_a_sigkilled_service_and_the_pipeline_carries_on(
    tmp_path: Path,
) -> None:
    kafka_port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        devstack_home=REPO / ".devstack",
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        collector_port=free_port(),
        query_port=free_port(),
        processors_health_port=free_port(),
        sink_batch_max_wait_s=0.3,
    )
    log_path = tmp_path / "devstack.log"
    with open(log_path, "wb") as log:
        devstack = subprocess.Popen(
            [sys.executable, "-m", "devstack", "run"],
            env={**os.environ, **settings.as_env()},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait(lambda: http_ok(f"{settings.query_url}/healthz"), 180, "the stack")
        first = _wait(lambda: _processors_pid(devstack), 30, "the processors worker")
        assert isinstance(first, int)
        os.kill(first, signal.SIGKILL)
        second = _wait(
            lambda: (pid := _processors_pid(devstack)) not in (None, first) and pid,
            60,
            "a new processors worker",
        )
        assert devstack.poll() is None, log_path.read_text(errors="replace")[-3000:]
        said = log_path.read_text(errors="replace")
        assert "processors was killed by SIGKILL; restarting it in 0.5 s" in said
        assert second != first

        # the restarted worker does the work: an event reaches the learner's projection
        event = {
            "event_id": str(uuid.uuid4()),
            "event_type": "lesson_completed",
            "timestamp": datetime.now(UTC).isoformat(),
            "user_id": "after-restart",
            "properties": {"content_id": "lesson-1"},
        }
        response = httpx.post(f"{settings.collector_url}/v1/events", json=event, timeout=30)
        assert response.status_code == 202, response.text
        sql = "SELECT count() FROM user_progress_current WHERE user_id = 'after-restart'"

        def projected() -> bool:
            reply = httpx.post(f"{settings.query_url}/v1/query", content=sql, timeout=30)
            return bool(reply.status_code == 200 and reply.json()["rows"] == [[1]])

        _wait(projected, 120, "the event's projection after the restart")
    finally:
        devstack.send_signal(signal.SIGINT)
        try:
            code = devstack.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(devstack.pid, signal.SIGKILL)
            raise
    assert code == 0, log_path.read_text(errors="replace")[-3000:]
