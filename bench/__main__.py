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

from bench import chaos, collector_bench, dedup_memory, latency, processors_bench, recovery
from bench import sink as sink_bench
from devstack import kafka
from devstack.services import ServiceGroup, free_port, http_ok
from learnstream.settings import Settings
from learnstream.topics import ensure_topics

REPO = Path(__file__).resolve().parent.parent


def _wait_for(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"bench: timed out waiting for {what}")


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["chaos"]:
        return chaos.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--collector-seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--collector-rounds", type=int, default=3)
    parser.add_argument("--collector-workers", type=int, default=collector_bench.Options.workers)
    processors_bench.add_arguments(parser)
    parser.add_argument("--dedup-ids", type=int, default=1_000_000)
    parser.add_argument(
        "--only",
        choices=["collector", "dedup", "latency", "processors", "recovery", "sink", "sink-latency"],
        help="run just one of the benchmarks",
    )
    parser.add_argument("--recovery-records", type=int, default=240_000)
    parser.add_argument(
        "--recovery-baseline",
        type=Path,
        default=None,
        help="another checkout whose processors to time beside this one's",
    )
    parser.add_argument("--latency-rates", default="200,1000", help="events/s, comma-separated")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--sink-events", type=int, default=60000)
    parser.add_argument("--sink-batch", type=int, default=20000)
    parser.add_argument("--sink-rounds", type=int, default=sink_bench.Options.rounds)
    parser.add_argument(
        "--sink-rate", type=int, default=sink_bench.Options.rate, help="events/s for 202-to-query"
    )
    parser.add_argument(
        "--sink-seconds", type=float, default=sink_bench.Options.seconds, help="of 202-to-query"
    )
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
        collector_results: collector_bench.Results | None = None
        processors: processors_bench.Results | None = None
        latency_rows: list[dict[str, float]] = []
        sink_results: sink_bench.Results | None = None
        recoveries: list[recovery.Result] = []
        try:
            if args.only in (None, "recovery"):
                codes = [("current", REPO)]
                if args.recovery_baseline is not None:
                    codes.insert(0, ("baseline", args.recovery_baseline.resolve()))
                for label, code in codes:
                    recoveries.append(
                        recovery.measure(base, args.recovery_records, Path(tmp), code, label)
                    )
            if args.only in (None, "sink", "sink-latency"):
                sink_options = sink_bench.Options(
                    events=args.sink_events,
                    batch=args.sink_batch,
                    rounds=args.sink_rounds,
                    rate=args.sink_rate,
                    seconds=args.sink_seconds,
                    throughput=args.only != "sink-latency",
                )
                sink_results = sink_bench.run(base, sink_options, Path(tmp), log_path)
            if args.only in (None, "collector"):
                with log_path.open("a") as log:
                    options = collector_bench.Options(
                        seconds=args.collector_seconds,
                        rounds=args.collector_rounds,
                        workers=args.collector_workers,
                    )
                    collector_results = collector_bench.run(base, options, log)
            if args.only in (None, "processors"):
                processors = processors_bench.run(
                    base, processors_bench.sizes_from(args), Path(tmp)
                )
            if args.only in (None, "latency"):
                latency_rows = bench_latency(base, rates, args.latency_seconds, log_path)
        finally:
            kafka.stop(paths)
    if recoveries:
        recovery.report(recoveries)
    if sink_results is not None:
        sink_bench.report(sink_results)
    if latency_rows:
        print_latency(latency_rows, args.latency_seconds)
    if processors is not None:
        processors_bench.report(processors)
    if args.only in ("latency", "sink", "sink-latency", "processors", "recovery"):
        return 0
    if collector_results is not None:
        collector_bench.report(collector_results)
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
