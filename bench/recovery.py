"""How long a processors worker takes to start on a state changelog of N records.

``python -m bench --only recovery``: the state changelog (12 partitions) gets N records
of distinct keys (the shape of the dedup window's ids, one per event, the bulk of a
long-running pipeline's state); then ``python -m processors`` starts on the memory
store and the bench times it from spawn to Faust's "Worker ready". With
``--recovery-baseline PATH`` the same is measured, in the same run on the same broker,
for the processors code of another checkout (``git worktree add PATH <commit>``), each
on changelog topics of its own.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer

from learnstream.settings import Settings
from learnstream.topics import ensure_topics
from processors.generations import group_id
from processors.state_tables import changelog_topics

REPO = Path(__file__).resolve().parent.parent
# a msgpack FirstSeen-shaped value: (partition, offset, arrival ms, user id)
VALUE = b"\x94\x03\xcd\x01\x02\xcf\x00\x00\x01\x8b\xcf\x5c\x10\x00\xa4user"


@dataclass
class Result:
    code: Path
    records: int
    ready_s: float  # spawn to "Worker ready"
    read_line: str  # what the worker said about reading its state, if anything


async def _fill(settings: Settings, topic: str, records: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        for i in range(records):
            key = f"seen\x1e{uuid.uuid4()}".encode()
            await producer.send(topic, VALUE, key=key, partition=i % settings.topic_partitions)
        await producer.flush()
    finally:
        await producer.stop()


def measure(base: Settings, records: int, folder: Path, code: Path, label: str) -> Result:
    settings = base.model_copy(
        update={
            "topic_prefix": f"recovery-{label}.",
            "data_dir": folder / f"recovery-{label}",
            "processors_instance_id": f"bench-{label}",
        }
    )
    changelogs = changelog_topics(group_id(settings, settings.processors_generation))
    asyncio.run(ensure_topics(settings, extra=changelogs))
    asyncio.run(_fill(settings, changelogs[0].name, records))
    env = {**os.environ, **settings.as_env(), "PYTHONPATH": str(code)}
    started = time.monotonic()
    worker = subprocess.Popen(
        [sys.executable, "-m", "processors"],
        cwd=code,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    read_line, ready_s = "", float("nan")
    try:
        assert worker.stderr is not None
        for line in worker.stderr:
            if "state: read" in line or "Done reading from changelog" in line:
                read_line = line.strip().split("] ", 3)[-1]
            if "Worker ready" in line:
                ready_s = time.monotonic() - started
                break
    finally:
        worker.terminate()
        worker.wait(60)
    return Result(code, records, ready_s, read_line)


def report(results: list[Result]) -> None:
    print("\n## Processors worker start on a state changelog (memory store)\n")
    print("| processors code | changelog records | spawn to Worker ready, s | the worker said |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r.code} | {r.records:,} | {r.ready_s:.1f} | {r.read_line} |")
