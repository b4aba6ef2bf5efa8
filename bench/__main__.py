"""``python -m bench`` (``make bench``): throughput and latency beside the raw libraries.

Starts its own Kafka broker (the devstack one, in a temporary folder on free ports), so
it never touches a running pipeline. Each learnstream figure is measured in the same run
as its raw-library baseline; quote the ratios, since absolute numbers vary by machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import throughput
from bench.workload import events
from devstack import kafka
from devstack.services import ServiceGroup, free_port, http_ok
from learnstream.settings import Settings
from learnstream.topics import EVENTS_RAW, ensure_topics

REPO = Path(__file__).resolve().parent.parent


def _wait_for(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"bench: timed out waiting for {what}")


async def _scratch_topic(settings: Settings, name: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, settings.topic_partitions, 1)])
    finally:
        await admin.close()
    return name


def bench_collector(base: Settings, count: int, log: Any) -> list[tuple[str, dict[str, float]]]:
    settings = base.model_copy(update={"topic_prefix": "bc.", "collector_port": free_port()})
    asyncio.run(ensure_topics(settings))
    group = ServiceGroup(env=settings.as_env(), out=log)
    group.start("collector")
    rows = []
    try:
        _wait_for(lambda: http_ok(f"{settings.collector_url}/readyz"), 60, "collector")
        workload = events(count * 2, seed=2)
        for round_ in range(2):  # interleaved, so drift on a noisy machine hits both
            part = workload[round_ * count // 2 * 2 :][:count]
            raw = asyncio.run(
                throughput.raw_produce(settings.kafka_bootstrap, settings.topic(EVENTS_RAW), part)
            )
            ours = asyncio.run(throughput.collector_posts(settings.collector_url, part))
            rows += [
                (f"raw aiokafka produce (round {round_ + 1})", raw),
                (f"collector POST /v1/events (round {round_ + 1})", ours),
            ]
    finally:
        group.stop_all()
    return rows


def bench_processors(base: Settings, count: int, log_path: Path) -> dict[str, float]:
    settings = base.model_copy(update={"topic_prefix": "bp."})
    asyncio.run(ensure_topics(settings))
    workload = events(count, seed=3)
    with log_path.open("a") as log:
        group = ServiceGroup(env=settings.as_env(), out=log)
        group.start("processors")
        try:
            _wait_for(
                lambda: "Worker]: Ready" in log_path.read_text(errors="replace"),
                90,
                "processors to start",
            )
            started = time.perf_counter()
            asyncio.run(
                throughput.produce_all(
                    settings.kafka_bootstrap, settings.topic(EVENTS_RAW), workload
                )
            )
            group_id = settings.topic("learnstream-processors")
            _wait_for(
                lambda: asyncio.run(throughput.committed_total(settings, group_id)) >= count,
                900,
                "processors to commit every event",
            )
            ours = count / (time.perf_counter() - started)
        finally:
            group.stop_all()
    scratch = asyncio.run(_scratch_topic(settings, "bp.raw-baseline"))
    raw = asyncio.run(
        throughput.raw_consume_produce(
            settings.kafka_bootstrap, settings.topic(EVENTS_RAW), scratch, count
        )
    )
    return {"processors_events_per_s": ours, "raw_consume_produce_events_per_s": raw}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--collector-events", type=int, default=4000)
    parser.add_argument("--processor-events", type=int, default=20000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="learnstream-bench-") as tmp:
        port, controller = free_port(), free_port()
        paths = kafka.KafkaPaths(home=(REPO / ".devstack").resolve(), data=Path(tmp) / "kafka")
        kafka.start(paths, port, controller)
        base = Settings(
            kafka_bootstrap=f"127.0.0.1:{port}",
            data_dir=Path(tmp) / "data",
            devstack_home=REPO / ".devstack",
        )
        log_path = Path(tmp) / "services.log"
        try:
            with log_path.open("a") as log:
                collector_rows = bench_collector(base, args.collector_events, log)
            processors = bench_processors(base, args.processor_events, log_path)
        finally:
            kafka.stop(paths)
    print("\n## Collector (single-event posts, 32 in flight, acks=all)\n")
    print("| path | events/s | p50 ms | p99 ms |\n|---|---|---|---|")
    for name, row in collector_rows:
        print(f"| {name} | {row['events_per_s']:.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |")
    ours = max(r["events_per_s"] for n, r in collector_rows if n.startswith("collector"))
    raw = max(r["events_per_s"] for n, r in collector_rows if n.startswith("raw"))
    print(f"\ncollector / raw produce: {ours / raw:.2f}")
    print(f"\n## Processors ({args.processor_events} events, one worker)\n")
    print(
        f"| path | events/s |\n|---|---|\n"
        f"| processors (dedup, sampling, consent, folds, 7 outputs per event) | "
        f"{processors['processors_events_per_s']:.0f} |\n"
        f"| raw aiokafka consume + produce one record each | "
        f"{processors['raw_consume_produce_events_per_s']:.0f} |"
    )
    ratio = processors["processors_events_per_s"] / processors["raw_consume_produce_events_per_s"]
    print(f"\nprocessors / raw: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
