"""The collector under an external load generator, beside raw aiokafka (issue 14).

The collector runs as in production (``python -m collector --workers N``: uvicorn worker
processes, access log off) and ``wrk`` posts to it from outside the Python process, so
the client's own cost is not charged to the collector (an in-process httpx client was:
it understated single posts). The bodies are the seeds' mix of event types
(``bench.realistic``), one event per request or batches of 100. In the same run, raw
aiokafka produces the same records (validated, enriched and encoded exactly as the
collector does) with the same producer settings and the same requests in flight: one
``send_and_wait`` per record, and 100 sends awaited together per batch. Rounds
alternate, so drift on a shared machine hits both sides.

A last pass runs py-spy on the collector's workers under each load and splits their
samples into stages (``STAGES``), which BENCHMARKS.md quotes as the per-stage profile.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import uvloop
from aiokafka import AIOKafkaProducer

from bench import peer_env, realistic
from bench.stats import percentile
from collector.enrichment import EnrichmentPolicy, Sender, enrich, partition_key
from collector.publisher import PRODUCER_SETTINGS
from devstack.services import free_port, http_ok
from learnstream.settings import Settings
from learnstream.topics import EVENTS_RAW, ensure_topics
from schemas.catalog import default_catalog
from schemas.codec import encode
from schemas.registry import FileSchemaRegistry
from schemas.validation import Accepted, validate_event

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "post_lines.lua"
BATCH_SIZE = 100  # the SDK's flush size (seed 004)
# the browser in the Lua script's first User-Agent, for the raw side's records
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36"
)


@dataclass(frozen=True)
class Options:
    seconds: float = 10.0  # per measurement
    rounds: int = 3
    workers: int = os.cpu_count() or 1
    singles_in_flight: int = 32
    batches_in_flight: int = 8
    events: int = 20_000  # distinct events the bodies cycle through
    profile_seconds: float = 8.0


@dataclass
class Figures:
    events_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_event: float | None = None  # the collector's processes, all of them


@dataclass
class Results:
    options: Options
    rows: list[tuple[str, Figures]] = field(default_factory=list)
    profiles: dict[str, dict[str, float]] = field(default_factory=dict)  # load -> stage -> %
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    notes: list[str] = field(default_factory=list)


# --- the load generator -------------------------------------------------------------


def wrk_binary() -> str:
    """wrk from PATH; installed from the OS packages when this is a Debian/Ubuntu root
    shell (it is a bench-only tool, so the product's system-deps.sh does not carry it)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("bench: installing wrk (the external load generator) with apt-get", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for step in (["update", "-qq"], ["install", "-y", "-qq", "wrk"]):
            subprocess.run(["apt-get", *step], check=False, stdout=subprocess.DEVNULL, env=env)
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit(
        "bench: the collector bench needs wrk, the HTTP load generator "
        "(Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk); install it and rerun"
    )


def run_wrk(
    url: str, path: str, bodies: Path, seconds: float, connections: int, per_request: int
) -> Figures:
    command = [
        wrk_binary(),
        "-t1",  # one thread keeps up at these rates and leaves the cores to the collector
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "30s",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        path,
        str(bodies),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    failures = {
        k: summary[k]
        for k in ("connect_errors", "read_errors", "write_errors", "timeouts", "non_2xx")
        if summary[k]
    }
    if failures:  # a refused or failed request is not throughput
        raise SystemExit(f"bench: wrk saw failures posting to {path}: {failures}\n{done.stdout}")
    return Figures(
        events_per_s=summary["requests"] * per_request / (summary["duration_us"] / 1e6),
        p50_ms=summary["p50_us"] / 1e3,
        p99_ms=summary["p99_us"] / 1e3,
    )


# --- the workload --------------------------------------------------------------------


def workload(count: int, now: datetime) -> list[dict[str, Any]]:
    """The seeds' mix of event types, timestamped over the two days before ``now``."""
    return realistic.fresh(count, end=now - timedelta(minutes=5), days=2.0, seed=14)


def write_bodies(events: list[dict[str, Any]], folder: Path) -> tuple[Path, Path]:
    """One request body per line: single events, and batches of BATCH_SIZE."""
    singles, batches = folder / "events.jsonl", folder / "batches.jsonl"
    singles.write_text("".join(json.dumps(e) + "\n" for e in events))
    batches.write_text(
        "".join(
            json.dumps({"events": events[i : i + BATCH_SIZE]}) + "\n"
            for i in range(0, len(events) - BATCH_SIZE + 1, BATCH_SIZE)
        )
    )
    return singles, batches


def records(events: list[dict[str, Any]], now: datetime) -> list[tuple[bytes, bytes]]:
    """(key, value) of each event exactly as the collector publishes it."""
    catalog = default_catalog()
    registry = FileSchemaRegistry.from_files(catalog)
    sender = Sender(ip="127.0.0.1", user_agent=USER_AGENT)
    policy = EnrichmentPolicy(ip_handling="truncate")
    made = []
    for event in events:
        outcome = validate_event(catalog, event, now)
        if not isinstance(outcome, Accepted):
            raise SystemExit(f"bench: the workload holds an invalid event: {outcome}")
        kind = outcome.event_type
        datum = enrich(kind, outcome.datum, now, sender, policy)
        value = encode(registry.id_for(kind.subject, kind.schema), kind.parsed, datum)
        made.append((partition_key(datum), value))
    return made


# --- raw aiokafka, the baseline -------------------------------------------------------


async def _raw(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes, bytes]],
    seconds: float,
    in_flight: int,
    per_request: int,
) -> Figures:
    """``in_flight`` loops for ``seconds``, each sending ``per_request`` records and
    awaiting all their acks before the next: what one request asks of Kafka."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_SETTINGS)
    await producer.start()
    latencies: list[float] = []
    sent = 0
    try:
        await producer.send_and_wait(topic, records[0][1], key=records[0][0])  # metadata
        cpu = time.process_time()
        started = time.perf_counter()
        deadline = started + seconds

        async def loop(index: int) -> None:
            nonlocal sent
            while (began := time.perf_counter()) < deadline:
                chunk = [records[(index + i) % len(records)] for i in range(per_request)]
                index += per_request * in_flight
                if per_request == 1:
                    await producer.send_and_wait(topic, chunk[0][1], key=chunk[0][0])
                else:
                    acks = [await producer.send(topic, value, key=key) for key, value in chunk]
                    await asyncio.gather(*acks)
                latencies.append(time.perf_counter() - began)
                sent += per_request

        await asyncio.gather(*(loop(i * per_request) for i in range(in_flight)))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    finally:
        await producer.stop()
    p50, p99 = percentile(latencies, 0.5) * 1e3, percentile(latencies, 0.99) * 1e3
    return Figures(sent / elapsed, p50, p99, cpu / sent * 1e6)


def raw_produce(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes, bytes]],
    seconds: float,
    in_flight: int,
    per_request: int,
) -> Figures:
    # uvloop, as the collector's uvicorn runs on: the baseline gets the same event loop
    return uvloop.run(_raw(bootstrap, topic, records, seconds, in_flight, per_request))


# --- the collector as in production ---------------------------------------------------


def _descendants(pid: int) -> list[int]:
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children + [d for c in children for d in _descendants(c)]


def _is_worker(pid: int) -> bool:
    """Not multiprocessing's resource tracker, the supervisor's other child."""
    try:
        return b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes so far (from /proc, in clock ticks)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running_collector(settings: Settings, workers: int, log: IO[str]) -> Iterator[list[int]]:
    """``python -m collector --workers N``; yields its pids (the supervisor first)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "collector", "--workers", str(workers)],
        env={**os.environ, **settings.as_env()},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not http_ok(f"{settings.collector_url}/readyz"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("bench: the collector did not become ready; see its log")
            time.sleep(0.3)
        pids = [process.pid]
        while workers > 1 and sum(map(_is_worker, pids[1:])) < workers:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: the collector did not start {workers} workers")
            time.sleep(0.2)
            pids = [process.pid, *_descendants(process.pid)]
        yield pids
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def check_accepted(url: str, singles: Path, batches: Path) -> None:
    """One body of each kind gets 202 with nothing rejected (wrk counts statuses only).
    A fresh broker elects the new topics' leaders first: 503 until then, so retry."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    event, batch = singles.read_text().splitlines()[0], batches.read_text().splitlines()[0]
    deadline = time.monotonic() + 90
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            one = client.post("/v1/events", content=event, headers=headers)
            many = client.post("/v1/events/batch", content=batch, headers=headers)
            if (one.status_code, many.status_code) == (202, 202) and not many.json()["rejected"]:
                return
            if 503 not in (one.status_code, many.status_code) or time.monotonic() > deadline:
                raise SystemExit(
                    f"bench: the collector refused the workload: {one.text} {many.text}"
                )
            time.sleep(1)


# --- the per-stage profile --------------------------------------------------------------

# (stage, substrings of a py-spy frame "function (file:line)"). A sample belongs to the
# stage of the innermost frame that names one: a response written by uvicorn on behalf
# of the handler is HTTP work, a validator called from the handler is validation.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("validation (schemas/validation.py)", ("schemas/validation.py",)),
    ("Avro encode (schemas/codec.py, fastavro)", ("schemas/codec.py", "fastavro/")),
    ("enrichment (collector/enrichment.py, ua-parser)", ("enrichment.py", "ua_parser")),
    ("JSON parse and shape check (collector/body.py)", ("collector/body.py", "orjson")),
    ("auth (collector/auth.py)", ("collector/auth.py",)),
    (
        "publish: aiokafka producer",
        ("aiokafka/", "collector/publisher.py", "collector/partition_batches.py"),
    ),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("rest of the request handler (collector/app.py)", ("collector/app.py",)),
    ("HTTP: uvicorn, starlette, fastapi", ("uvicorn/", "starlette/", "fastapi/", "httptools")),
)
REST = "event loop, GC and the rest"


def _stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):  # py-spy writes the outermost frame first
        for stage, marks in STAGES:
            if any(mark in frame for mark in marks):
                return stage
    return REST


def _waiting(frames: list[str]) -> bool:
    """A thread blocked in a wait, which py-spy can count as busy: uvicorn's health-check
    pipe in each worker, and the collector's own parent watch (collector/workers.py)."""
    return "multiprocessing/connection.py" in frames[-1] or frames[-1].startswith(
        ("Condition.wait ", "Event.wait ")
    )


def stage_shares(collapsed: list[Path]) -> dict[str, float]:
    """Percent of the non-idle samples in each stage, over py-spy's raw (collapsed) files.
    Threads that only wait are left out (see ``_waiting``)."""
    counts: collections.Counter[str] = collections.Counter()
    for path in collapsed:
        for line in path.read_text().splitlines():
            stack, _, number = line.rpartition(" ")
            frames = stack.split(";")
            if not number.isdigit() or _waiting(frames):
                continue
            counts[_stage_of(frames)] += int(number)
    total = sum(counts.values()) or 1
    return {stage: 100.0 * counts[stage] / total for stage in [*(s for s, _ in STAGES), REST]}


def profile(worker_pids: list[int], seconds: float, folder: Path, run: Any) -> dict[str, float]:
    """py-spy on each worker while ``run()`` puts load on them."""
    outputs = [folder / f"profile-{pid}.txt" for pid in worker_pids]
    spies = [
        subprocess.Popen(
            [
                str(peer_env.PY_SPY),
                "record",
                "--pid",
                str(pid),
                "--duration",
                f"{seconds:g}",
                "--rate",
                "200",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, out in zip(worker_pids, outputs, strict=True)
    ]
    time.sleep(1.0)  # py-spy attaches before the load starts
    run()
    for spy in spies:
        spy.wait(seconds + 60)
    return stage_shares([o for o in outputs if o.exists()])


# --- the whole bench --------------------------------------------------------------------


def run(base: Settings, options: Options, log: IO[str]) -> Results:
    results = Results(options, load_before=os.getloadavg())
    settings = base.model_copy(update={"topic_prefix": "bc.", "collector_port": free_port()})
    asyncio.run(ensure_topics(settings))
    topic = settings.topic(EVENTS_RAW)
    now = datetime.now(UTC)
    events = workload(options.events, now)
    produced = records(events, now)
    url = settings.collector_url
    with tempfile.TemporaryDirectory(prefix="learnstream-collector-bench-") as tmp:
        singles, batches = write_bodies(events, Path(tmp))
        with running_collector(settings, options.workers, log) as pids:
            check_accepted(url, singles, batches)

            def collector_run(path: str, bodies: Path, conns: int, per: int) -> Figures:
                cpu = _cpu_seconds(pids)
                figures = run_wrk(url, path, bodies, options.seconds, conns, per)
                events_posted = figures.events_per_s * options.seconds
                figures.cpu_us_per_event = (_cpu_seconds(pids) - cpu) / events_posted * 1e6
                return figures

            for round_ in range(1, options.rounds + 1):
                n = f"(round {round_})"
                raw_single = raw_produce(
                    settings.kafka_bootstrap,
                    topic,
                    produced,
                    options.seconds,
                    options.singles_in_flight,
                    1,
                )
                single = collector_run("/v1/events", singles, options.singles_in_flight, 1)
                raw_batch = raw_produce(
                    settings.kafka_bootstrap,
                    topic,
                    produced,
                    options.seconds,
                    options.batches_in_flight,
                    BATCH_SIZE,
                )
                batch = collector_run(
                    "/v1/events/batch", batches, options.batches_in_flight, BATCH_SIZE
                )
                results.rows += [
                    (f"raw aiokafka send_and_wait, one record {n}", raw_single),
                    (f"collector POST /v1/events, wrk {n}", single),
                    (f"raw aiokafka, 100 sends then their acks {n}", raw_batch),
                    (f"collector POST /v1/events/batch of 100, wrk {n}", batch),
                ]
            if not peer_env.PY_SPY.exists():
                results.notes.append(f"no profile: {peer_env.PY_SPY} is missing")
                results.load_after = os.getloadavg()
                return results
            workers = [p for p in pids[1:] if _is_worker(p)] or pids
            seconds = options.profile_seconds
            results.profiles["batches of 100"] = profile(
                workers,
                seconds,
                Path(tmp),
                lambda: run_wrk(
                    url,
                    "/v1/events/batch",
                    batches,
                    seconds,
                    options.batches_in_flight,
                    BATCH_SIZE,
                ),
            )
            results.profiles["single events"] = profile(
                workers,
                seconds,
                Path(tmp),
                lambda: run_wrk(url, "/v1/events", singles, seconds, options.singles_in_flight, 1),
            )
    results.load_after = os.getloadavg()
    return results


def ratios(results: Results) -> tuple[float, float]:
    """(single posts / raw single, batch posts / raw batched), median over the rounds."""
    rows = dict(results.rows)
    singles, batches = [], []
    for round_ in range(1, results.options.rounds + 1):
        n = f"(round {round_})"
        singles.append(
            rows[f"collector POST /v1/events, wrk {n}"].events_per_s
            / rows[f"raw aiokafka send_and_wait, one record {n}"].events_per_s
        )
        batches.append(
            rows[f"collector POST /v1/events/batch of 100, wrk {n}"].events_per_s
            / rows[f"raw aiokafka, 100 sends then their acks {n}"].events_per_s
        )
    return sorted(singles)[len(singles) // 2], sorted(batches)[len(batches) // 2]


def report(results: Results) -> None:
    o = results.options
    print(
        f"\n## Collector under wrk ({o.workers} uvicorn workers, access log off; "
        f"{o.seconds:g} s each; single posts {o.singles_in_flight} in flight, batches of "
        f"{BATCH_SIZE} {o.batches_in_flight} in flight; acks=all, idempotent producer)\n"
    )
    # CPU: the raw side's whole process; the collector's supervisor and workers (not wrk)
    print("| path | events/s | p50 ms | p99 ms | CPU µs per event |")
    print("|---|---|---|---|---|")
    for name, f in results.rows:
        cpu = f"{f.cpu_us_per_event:.0f}" if f.cpu_us_per_event is not None else ""
        print(f"| {name} | {f.events_per_s:.0f} | {f.p50_ms:.1f} | {f.p99_ms:.1f} | {cpu} |")
    single, batch = ratios(results)
    print(
        f"\nmedian of the rounds: single posts / raw single produce **{single:.2f}**; "
        f"batch posts / raw batched produce **{batch:.2f}**"
    )
    print(
        "load average (1/5/15 min) before: "
        + " / ".join(f"{x:.2f}" for x in results.load_before)
        + "; after: "
        + " / ".join(f"{x:.2f}" for x in results.load_after)
    )
    for load, shares in results.profiles.items():
        print(f"\n### Where the collector's workers spend their CPU: {load} (py-spy)\n")
        print("| stage | % of samples |\n|---|---|")
        for stage, share in shares.items():
            print(f"| {stage} | {share:.1f} |")
    for note in results.notes:
        print(f"\n{note}")
