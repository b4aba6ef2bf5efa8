"""The browser SDK (sdk-browser/): its unit tests, and a real headless Chromium run
against the whole stack.

The page is served from another origin than the collector's, so every send goes
through the collector's CORS (preflighted: it carries a write key and an end-user
token). It tracks events online, goes offline and tracks more, the tab is closed while
offline (its IndexedDB queue is all that is left) and opened again once online, and
finally it tracks events and leaves at once, so only the pagehide send can deliver those.
A later visit sends those again (their answers reached no page), as a real app would.
Every event must then be stored in ClickHouse exactly once.

The npm packages install from sdk-browser/package-lock.json the first time (and again
only when the lock file changes); Chromium is Debian's, installed by
devstack/system-deps.sh, and driven by playwright-core, which brings no browser.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import jwt
import pytest

from bench.throughput import committed_total
from learnstream.settings import Settings
from learnstream.topics import EVENTS_CLEAN, EVENTS_RAW
from processors.generations import group_id
from schemas.codec import decode
from tests.conftest import REPO, isolated_settings
from tests.kafka_read import read_all
from tests.live_stack import LiveStack, live_stack
from tests.test_collector import REGISTRY

SDK = REPO / "sdk-browser"
CHROMIUM = Path("/usr/bin/chromium")
INSTALLED_LOCK = SDK / "node_modules" / ".learnstream-installed-lock"
WRITE_KEY = "wk_browser_e2e"
ORGANIZATION = "org-browser"
TOKEN_SECRET = "browser-e2e-user-token-secret-0123456789"
EVENT_TYPE = "lesson_completed"  # what the driver tracks; the learner's derived events differ


def _npm(*args: str, timeout_s: float = 300) -> str:
    npm = shutil.which("npm")
    assert npm, "the browser SDK needs node and npm: devstack/system-deps.sh installs them"
    done = subprocess.run(
        [npm, *args], cwd=SDK, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert done.returncode == 0, f"npm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def built_sdk() -> Path:
    """node_modules as the lock file pins them (npm ci only when the lock changed, so a
    second run costs the build alone), then the SDK and its tests compiled."""
    lock = hashlib.sha256((SDK / "package-lock.json").read_bytes()).hexdigest()
    if not INSTALLED_LOCK.exists() or INSTALLED_LOCK.read_text() != lock:
        _npm("ci", "--no-audit", "--no-fund")
        INSTALLED_LOCK.write_text(lock)
    _npm("run", "build")
    _npm("run", "build:test")
    return SDK


def test_the_sdks_unit_tests_pass(built_sdk: Path) -> None:
    tests = sorted(str(p.relative_to(built_sdk)) for p in built_sdk.glob("build/test/*.test.js"))
    assert tests, "no compiled unit tests in sdk-browser/build/test"
    done = subprocess.run(
        ["node", "--test", *tests], cwd=built_sdk, capture_output=True, text=True, timeout=120
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    passed = re.search(r"^# pass (\d+)$", report, re.MULTILINE)
    assert passed and int(passed.group(1)) >= 20, report
    assert re.search(r"^# fail 0$", report, re.MULTILINE), report


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def page_origin(root: Path) -> Iterator[str]:
    """``root`` served at http://localhost:<port>: another origin than the collector's
    http://127.0.0.1:<port>, as an app's pages and its collector would be."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def user_token(learner: str) -> str:
    expires = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
    return jwt.encode({"sub": learner, "exp": expires}, TOKEN_SECRET, algorithm="HS256")


def stored(stack: LiveStack, learner: str) -> dict[str, int]:
    rows = stack.sql(
        "SELECT toString(event_id), count() FROM events "
        "WHERE user_id = {u} AND event_type = {t} GROUP BY event_id",
        u=learner,
        t=EVENT_TYPE,
    )
    return {str(event_id): int(count) for event_id, count in rows}


def wait_until_processed(stack: LiveStack) -> None:
    """Until the processors committed past every record of events.raw: a batch's outputs
    are delivered before its offsets are committed, so events.clean is then final."""
    settings = stack.settings
    raw = len(read_all(settings.kafka_bootstrap, settings.topic(EVENTS_RAW)))
    group = group_id(settings, settings.processors_generation)
    stack.wait_for(
        "the processors to commit events.raw to its end",
        lambda: asyncio.run(committed_total(settings, group)) >= raw,
    )


def clean_ids(settings: Settings, learner: str) -> list[str]:
    records = read_all(settings.kafka_bootstrap, settings.topic(EVENTS_CLEAN))
    events = (decode(REGISTRY, r.value) for r in records)
    return [str(e["event_id"]) for e in events if e.get("user_id") == learner]


class ChromiumRun:
    """The driver (sdk-browser/e2e/drive.ts) in Chromium: what it tracked in each phase,
    and the revisit it makes when asked. The browser stays open while this lives, so
    requests sent at pagehide can finish."""

    def __init__(self, driver: subprocess.Popen[str], log: IO[str]) -> None:
        self._driver = driver
        self._log = log
        self.tracked: dict[str, list[str]] = self._answer()

    def _answer(self) -> Any:
        assert self._driver.stdout is not None
        line = self._driver.stdout.readline()  # the driver bounds each of its own waits
        self._log.seek(0)
        assert line, f"the Chromium driver failed:\n{self._log.read()}"
        return json.loads(line)

    def revisit(self) -> int:
        """Open the tracking page again; how many queued events it sent."""
        assert self._driver.stdin is not None
        self._driver.stdin.write("revisit\n")
        self._driver.stdin.flush()
        return int(self._answer()["resent"])


@contextmanager
def chromium_run(config: dict[str, str], log_path: Path) -> Iterator[ChromiumRun]:
    with log_path.open("w+") as log:
        driver = subprocess.Popen(
            ["node", "build/e2e/drive.js", json.dumps(config)],
            cwd=SDK,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            yield ChromiumRun(driver, log)
        finally:
            assert driver.stdin is not None
            driver.stdin.close()
            driver.wait(timeout=30)


def raw_sends(settings: Settings, learner: str) -> Counter[str]:
    """How often each of the learner's event_ids reached events.raw."""
    records = read_all(settings.kafka_bootstrap, settings.topic(EVENTS_RAW))
    events = (decode(REGISTRY, r.value) for r in records)
    return Counter(str(e["event_id"]) for e in events if e.get("user_id") == learner)


def test_chromium_events_are_stored_once_through_offline_reload_and_pagehide(
    kafka_bootstrap: str, tmp_path: Path, built_sdk: Path
) -> None:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: devstack/system-deps.sh installs it"
    learner = f"browser-{uuid.uuid4().hex[:8]}"
    with page_origin(built_sdk) as origin:
        settings = isolated_settings(kafka_bootstrap, tmp_path).model_copy(
            update={
                "cors_allowed_origins": [origin],
                "write_keys": {WRITE_KEY: ORGANIZATION},
                "user_token_secrets": {ORGANIZATION: TOKEN_SECRET},
            }
        )
        config = {
            "chromium": str(CHROMIUM),
            "pageOrigin": origin,
            "collector": settings.collector_url,
            "writeKey": WRITE_KEY,
            "userToken": user_token(learner),
        }
        with live_stack(settings) as stack:
            with chromium_run(config, tmp_path / "driver.log") as browser:
                tracked = browser.tracked
                ids = [i for phase in ("online", "offline", "pagehide") for i in tracked[phase]]
                assert len(ids) == len(set(ids)) == 13
                # no page with the SDK is open now: the pagehide events can only have
                # left with the page they were tracked on
                stack.wait_for(
                    "every tracked event in ClickHouse",
                    lambda: set(stored(stack, learner)) >= set(ids),
                )
                # their answers came to a page already gone, so they are still queued
                # and the next visit sends them again
                assert browser.revisit() == len(tracked["pagehide"])
            wait_until_processed(stack)
            # nothing more can come: the browser is closed, and the processors have
            # decided every record on events.raw
            sends = raw_sends(settings, learner)
            assert set(sends) == set(ids)
            assert all(sends[i] >= 2 for i in tracked["pagehide"]), sends
            assert sorted(clean_ids(settings, learner)) == sorted(ids)
            assert stored(stack, learner) == dict.fromkeys(ids, 1)
