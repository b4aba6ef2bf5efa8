"""A service started while Kafka is down waits for it, then exits to be started again."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack.services import EX_TEMPFAIL, free_port
from learnstream.settings import Settings
from learnstream.topics import KafkaUnreachable, ensure_topics


def test_ensure_topics_waits_with_growing_pauses_then_gives_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", data_dir=tmp_path)
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="learnstream.topics"),
        pytest.raises(KafkaUnreachable, match="did not answer within 3 s"),
    ):
        asyncio.run(ensure_topics(nobody, wait_s=3.0))
    waited = time.monotonic() - started
    assert 2.5 <= waited < 20
    retries = [r.getMessage() for r in caplog.records if "not reachable yet" in r.getMessage()]
    assert len(retries) >= 2  # each attempt said once, not a flood
    assert "retrying in 0.5 s" in retries[0] and "retrying in 1.0 s" in retries[1]


@pytest.mark.parametrize("service", ["collector", "processors", "sinks"])
def test_a_service_that_never_reaches_kafka_exits_75_for_its_supervisor(
    tmp_path: Path, service: str
) -> None:
    env = {
        **os.environ,
        "LEARNSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "LEARNSTREAM_KAFKA_STARTUP_WAIT_S": "2",
        "LEARNSTREAM_DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", service], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == EX_TEMPFAIL, done.stderr[-2000:]
    assert "not reachable yet" in done.stderr
    assert "Traceback" not in done.stderr
