"""``python -m bench`` (``make bench``): throughput and latency beside the raw libraries.

Starts its own Kafka broker (the devstack one, in a temporary folder on free ports), so
it never touches a running pipeline. Each learnstream figure is measured in the same run
as its raw-library baseline; quote the ratios, since absolute numbers vary by machine.

``python -m bench chaos --minutes N`` is the chaos soak (bench/chaos.py): the whole
pipeline under steady load while services are killed and the broker restarted, then
checked for lost, doubled or wrongly folded events. It is not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import chaos, dedup_memory, latency, processors_bench, throughput
from bench import sink as sink_bench
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
            raw_batches = asyncio.run(
                throughput.raw_produce_batches(
                    settings.kafka_bootstrap, settings.topic(EVENTS_RAW), part
                )
            )
            batches = asyncio.run(throughput.collector_batches(settings.collector_url, part))
            rows += [
                (f"raw aiokafka produce (round {round_ + 1})", raw),
                (f"collector POST /v1/events (round {round_ + 1})", ours),
                (f"raw aiokafka produce, 100 at once (round {round_ + 1})", raw_batches),
                (f"collector POST /v1/events/batch of 100 (round {round_ + 1})", batches),
            ]
    finally:
        group.stop_all()
    return rows


def bench_latency(
    base: Settings, rates: list[int], seconds: float, log_path: Path
) -> list[dict[str, float]]:
    """Collector + processors running; steady load at each rate in turn."""
    settings = base.model_copy(update={"topic_prefix": "bl.", "collector_port": free_port()})
    asyncio.run(ensure_topics(settings))
    rows = []
    with log_path.open("a") as log:
        group = ServiceGroup(env=settings.as_env(), out=log)
        group.start("collector")
        group.start("processors")
        try:
            _wait_for(lambda: http_ok(f"{settings.collector_url}/readyz"), 60, "collector")
            _wait_for(
                lambda: "Worker]: Ready" in log_path.read_text(errors="replace"),
                90,
                "processors to start",
            )
            for rate in rates:
                rows.append(
                    {"rate": rate, **asyncio.run(latency.steady_load(settings, rate, seconds))}
                )
        finally:
            group.stop_all()
    return rows


def bench_sink(
    base: Settings, count: int, batch: int, rate: int, seconds: float, tmp: Path, log_path: Path
) -> tuple[dict[str, float], dict[str, float]]:
    """The sink beside raw inserts of the same rows; then 202-to-queryable latency."""
    settings = base.model_copy(update={"topic_prefix": "bs."})
    asyncio.run(ensure_topics(settings))
    speed = sink_bench.throughput(settings, events(count, seed=4), tmp / "sink-chdb", batch)
    settings = base.model_copy(
        update={
            "topic_prefix": "bq.",
            "collector_port": free_port(),
            "query_port": free_port(),
            "data_dir": tmp / "sink-latency",
        }
    )
    asyncio.run(ensure_topics(settings))
    with log_path.open("a") as log:
        group = ServiceGroup(env=settings.as_env(), out=log)
        for name in ("collector", "processors", "sink"):
            group.start(name)
        try:
            _wait_for(lambda: http_ok(f"{settings.collector_url}/readyz"), 60, "collector")
            _wait_for(lambda: http_ok(f"{settings.query_url}/healthz"), 90, "sink")
            _wait_for(
                lambda: "Worker]: Ready" in log_path.read_text(errors="replace"),
                90,
                "processors to start",
            )
            delay = asyncio.run(sink_bench.ack_to_queryable(settings, rate, seconds))
        finally:
            group.stop_all()
    return speed, delay


def print_sink(speed: dict[str, float], delay: dict[str, float], seconds: float) -> None:
    print(f"\n## Sink ({speed['rows']:.0f} events, same rows, same batches)\n")
    print("| path | rows/s |\n|---|---|")
    print(f"| raw clickhouse-connect insert of built rows | {speed['raw_rows_per_s']:.0f} |")
    print(
        f"| sink: consume, decode, dedup checks, insert, commit | {speed['sink_rows_per_s']:.0f} |"
    )
    print(f"\nsink / raw insert: {speed['sink_rows_per_s'] / speed['raw_rows_per_s']:.2f}")
    print(f"\n## Collector 202 to queryable in ClickHouse ({seconds:.0f} s of load)\n")
    print(
        "| offered events/s | events | queryable within 60 s | p50 ms | p99 ms "
        "| of which to events.clean: p50 ms | p99 ms |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {delay['offered_events_per_s']:.0f} | {delay['events']:.0f} | "
        f"{delay['queryable']:.0f} | {delay['p50_ms']:.0f} | {delay['p99_ms']:.0f} | "
        f"{delay['to_clean_p50_ms']:.0f} | {delay['to_clean_p99_ms']:.0f} |"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["chaos"]:
        return chaos.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--collector-events", type=int, default=4000)
    processors_bench.add_arguments(parser)
    parser.add_argument("--dedup-ids", type=int, default=1_000_000)
    parser.add_argument(
        "--only",
        choices=["collector", "dedup", "latency", "processors", "sink"],
        help="run just one of the benchmarks",
    )
    parser.add_argument("--latency-rates", default="200,1000", help="events/s, comma-separated")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--sink-events", type=int, default=60000)
    parser.add_argument("--sink-batch", type=int, default=20000)
    parser.add_argument("--sink-rate", type=int, default=200, help="events/s for 202-to-query")
    args = parser.parse_args(argv)
    if args.only in (None, "dedup"):
        dedup = dedup_memory.measure(args.dedup_ids)
        print(f"\n## Dedup state per remembered event_id ({args.dedup_ids} ids)\n")
        print("| store | bytes per id | per million ids |\n|---|---|---|")
        for name, key in (
            ("memory (Python dicts + expiry heap, tracemalloc)", "memory_store_bytes_per_id"),
            ("RocksDB (JSON key + value, SST bytes on disk)", "rocksdb_sst_bytes_per_id"),
        ):
            print(f"| {name} | {dedup[key]:.0f} | {dedup[key]:.0f} MB |")
        if args.only == "dedup":
            return 0
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
        rates = [int(r) for r in args.latency_rates.split(",")]
        collector_rows: list[tuple[str, dict[str, float]]] = []
        processors: processors_bench.Results | None = None
        latency_rows: list[dict[str, float]] = []
        sink_figures: tuple[dict[str, float], dict[str, float]] | None = None
        try:
            if args.only in (None, "sink"):
                sink_figures = bench_sink(
                    base,
                    args.sink_events,
                    args.sink_batch,
                    args.sink_rate,
                    args.latency_seconds,
                    Path(tmp),
                    log_path,
                )
            if args.only in (None, "collector"):
                with log_path.open("a") as log:
                    collector_rows = bench_collector(base, args.collector_events, log)
            if args.only in (None, "processors"):
                processors = processors_bench.run(
                    base, processors_bench.sizes_from(args), Path(tmp)
                )
            if args.only in (None, "latency"):
                latency_rows = bench_latency(base, rates, args.latency_seconds, log_path)
        finally:
            kafka.stop(paths)
    if sink_figures is not None:
        print_sink(*sink_figures, args.latency_seconds)
    if latency_rows:
        print_latency(latency_rows, args.latency_seconds)
    if processors is not None:
        processors_bench.report(processors)
    if args.only in ("latency", "sink", "processors"):
        return 0
    print("\n## Collector (single posts 32 in flight; batches of 100, 4 in flight; acks=all)\n")
    print("| path | events/s | p50 ms per request | p99 ms per request |\n|---|---|---|---|")
    for name, row in collector_rows:
        print(f"| {name} | {row['events_per_s']:.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |")

    def best(prefix: str) -> float:
        return max(r["events_per_s"] for n, r in collector_rows if n.startswith(prefix))

    single = best("collector POST /v1/events (") / best("raw aiokafka produce (")
    batch = best("collector POST /v1/events/batch") / best("raw aiokafka produce, 100")
    print(f"\nsingle posts / raw produce: {single:.2f}; batch posts / raw batches: {batch:.2f}")
    return 0


def print_latency(rows: list[dict[str, float]], seconds: float) -> None:
    print(f"\n## End to end: collector 202 to projections.user_progress ({seconds:.0f} s each)\n")
    print("| target events/s | offered events/s | events | updated within 60 s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['rate']:.0f} | {r['offered_events_per_s']:.0f} | {r['events']:.0f} | "
            f"{r['updated']:.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
