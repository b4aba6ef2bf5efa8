"""``python -m bench --only processors``: the processors beside raw aiokafka and a peer.

All in one run, on the bench's own broker (issue 11, item 5):

- raw aiokafka consume + produce of the same records, two output records per input,
  acks=all and idempotent (twice, before and after the peer; the better round is
  the ratio's denominator);
- the peer: issue 11's minimal equivalent job in quix-streams with RocksDB state
  (``bench.quix_peer``), same records;
- learnstream's processors as ``make run`` runs them (a ``python -m processors``
  worker with the default settings, its own topic prefix and data dir) on (a) a fresh,
  realistic workload (the first records of the same input) and (b) learners with two
  years of history, pre-loaded through the worker before the measured window.

Per measured window: events/s (from the first produced record to the last output
record written), CPU seconds of the process per event (/proc), records written per
input event (end-offset deltas of every topic but the input, changelogs included),
changelog bytes per event (keys + values of the changelog records written in the
window), then 202 -> projection latency at a steady rate through the collector.
py-spy profiles one extra window of the fresh workload (not the measured one).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import resource
import signal
import socket
import subprocess
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import peer_env, realistic
from bench.stats import percentile
from bench.tail import follow
from bench.workload import encoded
from devstack.services import ServiceGroup, http_ok
from learnstream.settings import Settings
from learnstream.topics import EVENTS_RAW, PROJECTIONS_USER_PROGRESS
from processors.generations import group_id
from schemas.codec import decode
from schemas.registry import FileSchemaRegistry

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POLL_S = 0.1
Record = tuple[bytes, bytes]


@dataclass(frozen=True)
class Sizes:
    """How much each part of the bench does (``--proc-*`` flags, BENCH_PROC_* env)."""

    peer_events: int = 100_000  # raw and quix input; the fresh window is its first part
    fresh_events: int = 30_000
    fresh_learners: int = 2_000
    topics: int = 300
    contents: int = 80
    profile_events: int = 10_000
    history_learners: int = 16
    history_per_learner: int = 2_000
    history_days: int = 730
    history_window: int = 4_000
    latency_rate: int = 1_000
    latency_seconds: float = 60.0
    latency_drain_s: float = 60.0


HELP = {
    "peer_events": "events for raw aiokafka and quix-streams (the fresh window is their start)",
    "fresh_events": "measured window of the fresh workload",
    "fresh_learners": "learners of the fresh workload (Zipf activity)",
    "topics": "topics in the workload",
    "contents": "content items in the workload",
    "profile_events": "events of the py-spy window after the fresh one (0: no profile)",
    "history_learners": "learners with a long history",
    "history_per_learner": "events each of them has before the window",
    "history_days": "days their history spans",
    "history_window": "measured window on the long-history learners",
    "latency_rate": "events/s through the collector for 202 -> projection",
    "latency_seconds": "seconds of that load (0: no latency runs)",
    "latency_drain_s": "seconds to wait for the last projections after sending",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--proc-<size>`` for every field of Sizes; BENCH_PROC_<SIZE> sets the default."""
    for f in fields(Sizes):
        kind = float if isinstance(f.default, float) else int
        default = kind(os.environ.get(f"BENCH_PROC_{f.name.upper()}", str(f.default)))
        flags = [f"--proc-{f.name.replace('_', '-')}"]
        if f.name == "fresh_events":
            flags.append("--processor-events")
        parser.add_argument(
            *flags, dest=f"proc_{f.name}", type=kind, default=default, help=HELP[f.name]
        )


def sizes_from(args: argparse.Namespace) -> Sizes:
    return Sizes(**{f.name: getattr(args, f"proc_{f.name}") for f in fields(Sizes)})


@dataclass
class Window:
    """One measured window of a consumer process."""

    events: int
    seconds: float
    cpu_s: float
    written: dict[str, int]  # topic -> records written in the window
    changelog_records: int
    changelog_bytes: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_per_event_us(self) -> float:
        return self.cpu_s / self.events * 1e6

    @property
    def records_per_event(self) -> float:
        return sum(self.written.values()) / self.events

    @property
    def changelog_bytes_per_event(self) -> float:
        return self.changelog_bytes / self.events


@dataclass
class Latency:
    rate: int
    offered: float
    events: int
    applied: int
    waiting_when_sending_stopped: int
    p50_ms: float
    p99_ms: float


@dataclass
class Results:
    sizes: Sizes
    raw: list[tuple[float, float]] = field(default_factory=list)  # (events/s, cpu us/event)
    quix: Window | None = None
    fresh: Window | None = None
    history: Window | None = None
    history_preload_s: float = 0.0
    fresh_latency: Latency | None = None
    history_latency: Latency | None = None
    profile: list[str] = field(default_factory=list)
    profile_file: Path | None = None
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    failures: list[str] = field(default_factory=list)


# --- process and topic observation ----------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a process, all its threads (from /proc/<pid>/stat)."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(after_name[11]) + int(after_name[12])) / CLOCK_TICKS


class Observer:
    """End offsets and a group's committed offsets, with one client, from outside."""

    def __init__(self, bootstrap: str, group: str | None = None) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )

    async def __aenter__(self) -> Observer:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def partitions(self, topics: Sequence[str]) -> list[TopicPartition]:
        # fresh metadata (consumer.topics() fetches it but does not keep it)
        cluster = await self.consumer._client.fetch_all_metadata()
        found = []
        for topic in topics:
            for p in cluster.partitions_for_topic(topic) or ():
                found.append(TopicPartition(topic, p))
        return found

    async def topics(self, keep: Callable[[str], bool]) -> list[str]:
        cluster = await self.consumer._client.fetch_all_metadata()
        return sorted(t for t in cluster.topics() if keep(t))

    async def ends(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        if not partitions:
            return {}
        ends: dict[TopicPartition, int] = await self.consumer.end_offsets(list(partitions))
        return ends

    async def committed(self, partitions: Sequence[TopicPartition]) -> int:
        total = 0
        for tp in partitions:
            total += await self.consumer.committed(tp) or 0
        return total


def _by_topic(start: dict[TopicPartition, int], end: dict[TopicPartition, int]) -> dict[str, int]:
    written: Counter[str] = Counter()
    for tp, offset in end.items():
        written[tp.topic] += offset - start.get(tp, 0)
    return dict(written)


async def record_bytes(
    bootstrap: str, start: dict[TopicPartition, int], end: dict[TopicPartition, int]
) -> tuple[int, int]:
    """(records, key + value bytes) between two sets of offsets."""
    todo = {tp: stop for tp, stop in end.items() if stop > start.get(tp, 0)}
    if not todo:
        return 0, 0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 * 2**20,
        fetch_max_bytes=64 * 2**20,
    )
    await consumer.start()
    try:
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, start.get(tp, 0))
        records = size = 0
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, messages in batch.items():
                for m in messages:
                    if m.offset < todo.get(tp, 0):
                        records += 1
                        size += len(m.key or b"") + len(m.value or b"")
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp]:
                    del todo[tp]
        return records, size
    finally:
        await consumer.stop()


async def produce(bootstrap: str, topic: str, records: Sequence[Record]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def measure(
    bootstrap: str,
    pid: int,
    group: str | None,
    input_topic: str,
    scope: Callable[[str], bool],
    outputs: Sequence[str],
    events: int,
    start_load: Callable[[], Coroutine[Any, Any, None]],
    from_first_output: bool,
    done_outputs: int | None = None,
    timeout_s: float = 1800,
    before_final: Callable[[], None] | None = None,
) -> Window:
    """Run ``start_load`` and time the process until it has committed ``events`` more
    input records (or written ``done_outputs`` records to ``outputs``)."""
    async with Observer(bootstrap, group) as obs:
        inputs = await obs.partitions([input_topic])
        all_topics = await obs.topics(lambda t: scope(t) and t != input_topic)
        start = await obs.ends(await obs.partitions(all_topics))
        out_parts = await obs.partitions(outputs)
        base_out = sum((await obs.ends(out_parts)).values())
        base_committed = await obs.committed(inputs) if group else 0
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        load = asyncio.create_task(start_load())
        last_out, t_first, t_last, cpu_first = base_out, t0, t0, cpu0
        deadline = t0 + timeout_s
        checked = 0.0
        while True:
            await asyncio.sleep(POLL_S)
            now = time.perf_counter()
            out = sum((await obs.ends(out_parts)).values())
            if out > last_out:
                if last_out == base_out:
                    t_first, cpu_first = now, cpu_seconds(pid)
                last_out, t_last = out, now
            if now > deadline:
                raise SystemExit("bench: timed out waiting for a measured window to finish")
            if done_outputs is not None:
                if out - base_out >= done_outputs:
                    cpu1 = cpu_seconds(pid)
                    break
            elif now - checked > 0.5:
                checked = now
                if await obs.committed(inputs) - base_committed >= events:
                    cpu1 = cpu_seconds(pid)
                    break
        await load
        if from_first_output:
            t0, cpu0 = t_first, cpu_first
        if before_final is not None:
            before_final()
        # let the last changelog and projection writes land, then count
        stable, previous = 0, -1
        while stable < 10:
            await asyncio.sleep(0.2)
            all_topics = await obs.topics(lambda t: scope(t) and t != input_topic)
            end = await obs.ends(await obs.partitions(all_topics))
            total = sum(end.values())
            stable = stable + 1 if total == previous else 0
            previous = total
    changelogs = {tp: o for tp, o in end.items() if "changelog" in tp.topic}
    cl_records, cl_bytes = await record_bytes(bootstrap, start, changelogs)
    return Window(
        events=events,
        seconds=max(t_last - t0, 1e-6),
        cpu_s=cpu1 - cpu0,
        written=_by_topic(start, end),
        changelog_records=cl_records,
        changelog_bytes=cl_bytes,
    )


# --- raw baseline ---------------------------------------------------------------------


async def raw_consume_produce_two(
    bootstrap: str, source: str, outputs: tuple[str, str], count: int
) -> tuple[float, float]:
    """aiokafka alone: consume every record, produce two records for each (acks=all,
    idempotent), flush and commit per fetched batch. (events/s, CPU us per event)."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{outputs[0]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await consumer.start()
    await producer.start()
    try:
        seen = 0
        started, cpu = time.perf_counter(), _own_cpu()
        while seen < count:
            batch = await consumer.getmany(timeout_ms=1000)
            for messages in batch.values():
                for message in messages:
                    await producer.send(outputs[0], message.value, key=message.key)
                    await producer.send(outputs[1], message.value[:64], key=message.key)
            seen += sum(len(m) for m in batch.values())
            await producer.flush()
            await consumer.commit()
        elapsed = time.perf_counter() - started
        return count / elapsed, (_own_cpu() - cpu) / count * 1e6
    finally:
        await producer.stop()
        await consumer.stop()


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the quix-streams peer ------------------------------------------------------------


def run_quix(bootstrap: str, source: str, count: int, tmp: Path, log: Any) -> Window:
    if not peer_env.ready():
        peer_env.ensure()
    tag = "bpq"
    clean, xp = f"{tag}.clean", f"{tag}.xp"
    asyncio.run(create_topics(bootstrap, [clean, xp], 3))
    process = subprocess.Popen(
        [
            str(peer_env.PEER_PYTHON),
            "-m",
            "bench.quix_peer",
            "--bootstrap",
            bootstrap,
            "--input",
            source,
            "--clean",
            clean,
            "--xp",
            xp,
            "--group",
            f"{tag}-group",
            "--state-dir",
            str(tmp / "quix-state"),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )

    async def nothing() -> None:
        return None

    def stop() -> None:  # quix-streams writes its last changelog batch on SIGTERM
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    try:
        return asyncio.run(
            measure(
                bootstrap,
                process.pid,
                None,
                source,
                lambda t: t.startswith(tag) or f"{tag}-group" in t,
                [clean],
                count,
                nothing,
                from_first_output=True,
                done_outputs=count,
                timeout_s=900,
                before_final=stop,
            )
        )
    finally:
        if process.poll() is None:
            stop()


# --- learnstream's processors ---------------------------------------------------------


@dataclass
class Worker:
    settings: Settings
    group: ServiceGroup
    log_path: Path

    @property
    def pid(self) -> int:
        return self.group.processes["processors"].pid

    @property
    def group_id(self) -> str:
        return group_id(self.settings, self.settings.processors_generation)

    def in_scope(self, topic: str) -> bool:
        return topic.startswith(self.settings.topic_prefix)

    def outputs(self) -> list[str]:
        return [
            self.settings.topic(t)
            for t in ("events.clean", "events.derived", "events.invalid", "projections.xp")
        ]

    def window(
        self,
        records: Sequence[Record],
        before_final: Callable[[], None] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> Window:
        settings = self.settings

        async def load() -> None:
            if on_start is not None:
                on_start()
            await produce(settings.kafka_bootstrap, settings.topic(EVENTS_RAW), records)

        return asyncio.run(
            measure(
                settings.kafka_bootstrap,
                self.pid,
                self.group_id,
                settings.topic(EVENTS_RAW),
                self.in_scope,
                self.outputs(),
                len(records),
                load,
                from_first_output=False,
                before_final=before_final,
            )
        )


def start_worker(base: Settings, prefix: str, tmp: Path) -> Worker:
    """A processors worker (and a collector) as ``make run`` starts them; own prefix,
    own data dir, free ports."""
    collector_port, health_port = free_ports(2)
    settings = base.model_copy(
        update={
            "topic_prefix": prefix,
            "data_dir": tmp / prefix.strip("."),
            "collector_port": collector_port,
            "processors_health_port": health_port,
        }
    )
    log_path = tmp / f"{prefix.strip('.')}.log"
    log = log_path.open("a")
    group = ServiceGroup(env=settings.as_env(), out=log)
    group.start("processors")
    deadline = time.monotonic() + 120
    while "Worker]: Ready" not in log_path.read_text(errors="replace"):
        if time.monotonic() > deadline or group.exited():
            group.stop_all()
            raise SystemExit(f"bench: processors did not start, see {log_path}")
        time.sleep(0.2)
    return Worker(settings, group, log_path)


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nobody listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_collector(worker: Worker) -> None:
    collector = worker.group.start("collector")
    deadline = time.monotonic() + 60
    url = worker.settings.collector_url
    # the collector's own OpenAPI document: not some other server on a reused port
    while not (http_ok(f"{url}/readyz") and http_ok(f"{url}/openapi.json")):
        if time.monotonic() > deadline or collector.poll() is not None:
            raise SystemExit(f"bench: collector did not start, see {worker.log_path}")
        time.sleep(0.2)


def wait_consumed(worker: Worker, count: int, timeout_s: float = 1800) -> float:
    """Seconds until the worker has committed ``count`` input records in all."""
    started = time.perf_counter()

    async def committed() -> int:
        async with Observer(worker.settings.kafka_bootstrap, worker.group_id) as obs:
            parts = await obs.partitions([worker.settings.topic(EVENTS_RAW)])
            while (done := await obs.committed(parts)) < count:
                if time.perf_counter() - started > timeout_s:
                    break
                await asyncio.sleep(1)
            return done

    if asyncio.run(committed()) < count:
        raise SystemExit("bench: the processors did not consume the pre-load in time")
    return time.perf_counter() - started


# --- py-spy -----------------------------------------------------------------------------


def profile(worker: Worker, records: Sequence[Record], out: Path) -> list[str]:
    """py-spy record while the worker takes ``records``; a summary of the top costs."""
    holder: list[subprocess.Popen[bytes]] = []

    def begin() -> None:
        holder.append(
            subprocess.Popen(
                [
                    str(peer_env.PY_SPY),
                    "record",
                    "--pid",
                    str(worker.pid),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def end() -> None:
        spy = holder[0]
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.kill()

    worker.window(records, before_final=end, on_start=begin)
    return summarise_profile(out) if out.exists() else ["py-spy wrote no profile"]


BUCKETS = (  # first match on a sample's leaf frame, in order
    ("logging", "logging/"),
    ("Avro encode/decode (fastavro, schemas.codec)", "fastavro"),
    ("Avro encode/decode (fastavro, schemas.codec)", "schemas/codec.py"),
    ("aiokafka", "aiokafka/"),
    ("Faust", "faust/"),
    ("mode", "mode/"),
    ("learnstream projections (folds)", "projections/"),
    ("learnstream processors", "processors/"),
    ("learnstream schemas", "schemas/"),
    ("json / orjson", "json"),
    ("asyncio", "asyncio/"),
)
IDLE_LEAVES = ("select (selectors.py", "poll (selectors.py", "wait (threading.py")
GENERIC = (  # frames on (nearly) every stack, left out of the inclusive list
    "runpy",
    "click/",
    "threading.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
    "mode/worker.py",
    "mode/threads.py",
    "faust/cli/",
    "processors/__main__.py",
    "App.main (faust/app/base.py",
)


def summarise_profile(path: Path, top: int = 12) -> list[str]:
    """Busy samples (leaf not waiting in select/poll): self time by library and by
    function, inclusive time by function, and the main thread's share."""
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = busy = main = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw = [f for f in stack.split(";") if f]
        if not raw:
            continue
        total += count
        if any(idle in raw[-1] for idle in IDLE_LEAVES):
            continue
        busy += count
        if "runpy" in raw[0]:
            main += count
        frames = [_short(f) for f in raw]
        self_fn[frames[-1]] += count
        for name in set(frames):
            if not any(g in name for g in GENERIC):
                incl_fn[name] += count
        bucket = next((b for b, needle in BUCKETS if needle in raw[-1]), "other")
        buckets[bucket] += count
    if not busy:
        return ["py-spy recorded no busy samples"]
    lines = [
        f"{total} samples at 200 Hz; {busy} busy ({100 * busy / total:.0f} %, the rest "
        f"waiting in select/poll); main thread (the Faust worker's loop) "
        f"{100 * main / busy:.0f} % of busy, other threads {100 * (busy - main) / busy:.0f} %",
        "",
        "% of busy samples, self time by library (leaf frame):",
    ]
    lines += [f"  {100 * n / busy:5.1f} %  {b}" for b, n in buckets.most_common()]
    lines += ["", "self time by function:"]
    lines += [f"  {100 * n / busy:5.1f} %  {f}" for f, n in self_fn.most_common(top)]
    lines += ["", "inclusive time by function:"]
    lines += [f"  {100 * n / busy:5.1f} %  {f}" for f, n in incl_fn.most_common(top + 8)]
    return lines


def _short(frame: str) -> str:
    """``send (faust/topics.py:123)`` -> ``send (faust/topics.py)``, site-packages cut."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for cut in ("site-packages/", "/lib/python3.11/", str(REPO) + "/"):
        if cut in where:
            where = where.split(cut, 1)[1]
    return f"{name} ({where})"


# --- latency: collector 202 -> projection ------------------------------------------------


async def _applied_so_far(settings: Settings) -> dict[str, int]:
    """events_applied per learner on projections.user_progress right now."""
    registry = FileSchemaRegistry.from_files()
    topic = settings.topic(PROJECTIONS_USER_PROGRESS)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        applied: dict[str, int] = {}
        todo = {tp for tp in parts if ends[tp] > 0}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for messages in batch.values():
                for m in messages:
                    progress = decode(registry, m.value)
                    user = progress["user_id"]
                    applied[user] = max(applied.get(user, 0), progress["events_applied"])
            todo = {tp for tp in todo if await consumer.position(tp) < ends[tp]}
        return applied
    finally:
        await consumer.stop()


async def steady_load(
    settings: Settings, batches: Sequence[list[dict[str, Any]]], rate: int, drain_s: float
) -> Latency:
    """Post one batch every 1/10 s; each event's latency runs from its batch's 202 to
    the first projections.user_progress record of its learner whose events_applied
    covers it (>=, so a snapshot covering several events counts for all of them)."""
    registry = FileSchemaRegistry.from_files()
    base = await _applied_so_far(settings)
    progress: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))

    def on_record(record: Any, now: float) -> None:
        value = decode(registry, record.value)
        applied, times = progress[value["user_id"]]
        if not applied or value["events_applied"] > applied[-1]:
            applied.append(value["events_applied"])
            times.append(now)

    stop = asyncio.Event()
    watcher = asyncio.create_task(
        follow(
            settings,
            settings.topic(PROJECTIONS_USER_PROGRESS),
            on_record,
            stop,
            time.perf_counter,
        )
    )
    await asyncio.sleep(2)  # the watcher is at the end of the topic before events flow
    acked: list[tuple[str, int, float]] = []
    sent = Counter(base)
    async with httpx.AsyncClient(base_url=settings.collector_url, timeout=60) as client:

        async def post(batch: list[dict[str, Any]], keys: list[tuple[str, int]]) -> None:
            response = await client.post("/v1/events/batch", json={"events": batch})
            assert response.status_code == 202 and not response.json()["rejected"], response.text
            now = time.perf_counter()
            acked.extend((user, k, now) for user, k in keys)

        started = time.perf_counter()
        posts = []
        for tick, batch in enumerate(batches):
            keys = []
            for event in batch:
                sent[event["user_id"]] += 1
                keys.append((event["user_id"], sent[event["user_id"]]))
            posts.append(asyncio.create_task(post(batch, keys)))
            await asyncio.sleep(max(0.0, started + (tick + 1) / 10 - time.perf_counter()))
        await asyncio.gather(*posts)
        sending_stopped = time.perf_counter()

    def applied_at(user: str, k: int) -> float | None:
        applied, times = progress.get(user, ([], []))
        i = bisect.bisect_left(applied, k)
        return times[i] if i < len(applied) else None

    deadline = sending_stopped + drain_s
    while time.perf_counter() < deadline:
        if all(applied_at(u, k) is not None for u, k, _ in acked):
            break
        await asyncio.sleep(0.5)
    stop.set()
    await watcher
    latencies, waiting = [], 0
    for user, k, at in acked:
        done = applied_at(user, k)
        if done is not None:
            latencies.append(max(0.0, done - at))
        if done is None or done > sending_stopped:
            waiting += 1
    count = sum(len(b) for b in batches)
    return Latency(
        rate=rate,
        offered=count / (sending_stopped - started),
        events=count,
        applied=len(latencies),
        waiting_when_sending_stopped=waiting,
        p50_ms=percentile(latencies, 0.5) * 1e3,
        p99_ms=percentile(latencies, 0.99) * 1e3,
    )


def latency_batches(
    events: list[dict[str, Any]], rate: int, seconds: float
) -> list[list[dict[str, Any]]]:
    """Ten batches a second; timestamps moved to just before now (the collector's clock)."""
    per_tick = max(1, rate // 10)
    ticks = int(seconds * 10)
    events = events[: per_tick * ticks]
    base = datetime.now(UTC) - timedelta(hours=1)
    for n, event in enumerate(events):
        event["timestamp"] = (base + timedelta(milliseconds=n)).isoformat()
    return [events[i * per_tick : (i + 1) * per_tick] for i in range(ticks)]


def run_latency(worker: Worker, events: list[dict[str, Any]], sizes: Sizes) -> Latency:
    start_collector(worker)
    batches = latency_batches(events, sizes.latency_rate, sizes.latency_seconds)
    return asyncio.run(
        steady_load(worker.settings, batches, sizes.latency_rate, sizes.latency_drain_s)
    )


# --- the whole bench --------------------------------------------------------------------


T = TypeVar("T")


def attempt(results: Results, what: str, work: Callable[..., T], *args: Any) -> T | None:
    """Run one optional part; a failure is reported with the figures, not fatal."""
    try:
        return work(*args)
    except (Exception, SystemExit) as exc:
        traceback.print_exc()
        results.failures.append(f"{what}: {exc!r}"[:500])
        return None


def _say(text: str) -> None:
    print(f"bench processors: {text}", flush=True)


def run(base: Settings, sizes: Sizes, tmp: Path) -> Results:
    results = Results(sizes, load_before=os.getloadavg())
    bootstrap = base.kafka_bootstrap
    log = (tmp / "peer.log").open("a")
    peer_count = max(sizes.peer_events, sizes.fresh_events + sizes.profile_events)
    _say(f"encoding {peer_count} fresh events")
    fresh_events = realistic.fresh(peer_count, sizes.fresh_learners, sizes.topics, sizes.contents)
    records = [encoded(e) for e in fresh_events]
    del fresh_events
    source = "bpr.input"
    asyncio.run(
        create_topics(
            bootstrap,
            [source, "bpr.out1", "bpr.out2", "bpr2.out1", "bpr2.out2"],
            base.topic_partitions,
        )
    )
    asyncio.run(produce(bootstrap, source, records[: sizes.peer_events]))
    _say("raw aiokafka, round 1")
    results.raw.append(
        asyncio.run(
            raw_consume_produce_two(bootstrap, source, ("bpr.out1", "bpr.out2"), sizes.peer_events)
        )
    )
    _say("quix-streams peer")
    results.quix = attempt(
        results, "quix-streams peer", run_quix, bootstrap, source, sizes.peer_events, tmp, log
    )
    _say("raw aiokafka, round 2")
    results.raw.append(
        asyncio.run(
            raw_consume_produce_two(
                bootstrap, source, ("bpr2.out1", "bpr2.out2"), sizes.peer_events
            )
        )
    )

    _say(f"processors, fresh workload: {sizes.fresh_events} events")
    worker = start_worker(base, "bpf.", tmp)
    try:
        results.fresh = worker.window(records[: sizes.fresh_events])
        if sizes.profile_events:
            _say(f"py-spy over {sizes.profile_events} more events (not the measured window)")
            results.profile_file = tmp / "py-spy-fresh.txt"
            profile_records = records[
                sizes.fresh_events : sizes.fresh_events + sizes.profile_events
            ]
            results.profile = profile(worker, profile_records, results.profile_file)
            keep = REPO / ".data" / "bench-py-spy-fresh.txt"
            keep.parent.mkdir(exist_ok=True)
            keep.write_bytes(results.profile_file.read_bytes())
            results.profile_file = keep
        del records
        if sizes.latency_seconds > 0:
            _say(f"latency, fresh learners: {sizes.latency_rate}/s for {sizes.latency_seconds} s")
            count = int(sizes.latency_rate * sizes.latency_seconds)
            events = realistic.fresh(
                count,
                sizes.fresh_learners,
                sizes.topics,
                sizes.contents,
                seed=21,
                never_sampled_only=True,
            )
            results.fresh_latency = attempt(
                results, "fresh latency", run_latency, worker, events, sizes
            )
    finally:
        worker.group.stop_all()

    preload = [
        encoded(e)
        for e in realistic.history(
            sizes.history_learners, sizes.history_per_learner, sizes.history_days, sizes.topics
        )
    ]
    window = [
        encoded(e) for e in realistic.history_window(sizes.history_learners, sizes.history_window)
    ]
    _say(f"processors, long history: pre-loading {len(preload)} events")
    worker = start_worker(base, "bph.", tmp)
    try:
        asyncio.run(produce(bootstrap, worker.settings.topic(EVENTS_RAW), preload))
        results.history_preload_s = wait_consumed(worker, len(preload))
        _say(f"processors, long history: measured window of {len(window)} events")
        results.history = worker.window(window)
        if sizes.latency_seconds > 0:
            _say(f"latency, long-history learners: {sizes.latency_rate}/s")
            count = int(sizes.latency_rate * sizes.latency_seconds)
            events = realistic.history_window(
                sizes.history_learners, count, seed=22, never_sampled_only=True
            )
            results.history_latency = attempt(
                results, "long-history latency", run_latency, worker, events, sizes
            )
    finally:
        worker.group.stop_all()
    results.load_after = os.getloadavg()
    return results


# --- report -----------------------------------------------------------------------------


def _load(load: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.2f}" for x in load)


def report(results: Results) -> None:
    s = results.sizes
    raw_rate = max(r for r, _ in results.raw)
    print("\n## Processors beside raw aiokafka and quix-streams (one run)\n")
    print(
        f"Input: {s.peer_events} events ({s.fresh_learners} learners, Zipf activity, "
        f"{s.topics} topics, {s.contents} content items, the bench mix of event types). "
        f"Long history: {s.history_learners} learners x {s.history_per_learner} events "
        f"over {s.history_days} days pre-loaded "
        f"({results.history_preload_s:.0f} s), then {s.history_window} new events. "
        f"{os.cpu_count()} CPUs; load average (1, 5, 15 min) before "
        f"{_load(results.load_before)}, after {_load(results.load_after)}."
    )
    print(
        "\n| path | events | events/s | / raw | / quix | CPU us/event | "
        "records written/event | changelog records/event | changelog bytes/event |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n, (rate, cpu) in enumerate(results.raw):
        print(
            f"| raw aiokafka consume + 2 produce (round {n + 1}) | {s.peer_events} | "
            f"{rate:.0f} | {rate / raw_rate:.2f} | | {cpu:.0f} | 2 | 0 | 0 |"
        )
    quix = results.quix
    rows = [("quix-streams minimal job, RocksDB", quix)]
    rows += [("learnstream processors, fresh", results.fresh)]
    rows += [("learnstream processors, long history", results.history)]
    for name, w in rows:
        if w is None:
            continue
        vs_quix = f"{w.events_per_s / quix.events_per_s:.3f}" if quix else ""
        print(
            f"| {name} | {w.events} | {w.events_per_s:.0f} | {w.events_per_s / raw_rate:.3f} | "
            f"{vs_quix} | {w.cpu_per_event_us:.0f} | {w.records_per_event:.2f} | "
            f"{w.changelog_records / w.events:.2f} | {w.changelog_bytes_per_event:.0f} |"
        )
    if results.fresh and results.history:
        fresh, history = results.fresh, results.history
        print(
            f"\nlong history / fresh: {history.events_per_s / fresh.events_per_s:.2f}; "
            f"changelog bytes per event, long history / fresh: "
            f"{history.changelog_bytes_per_event / fresh.changelog_bytes_per_event:.1f}"
        )
    if results.fresh and quix:
        print(
            f"learnstream / raw: {results.fresh.events_per_s / raw_rate:.3f}; "
            f"learnstream / quix-streams: {results.fresh.events_per_s / quix.events_per_s:.3f}"
        )
    for name, w in rows:
        if w is not None:
            per_topic = ", ".join(
                f"{t} {n / w.events:.2f}" for t, n in sorted(w.written.items()) if n
            )
            print(f"\nrecords written per event, {name}: {per_topic}")
    print(
        f"\n## Collector 202 -> projections.user_progress, {s.latency_rate} events/s "
        f"for {s.latency_seconds:.0f} s\n"
    )
    print(
        "| learners | offered events/s | events | applied within "
        f"{s.latency_drain_s:.0f} s after sending | still waiting when sending stopped | "
        "p50 ms | p99 ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, lat in (("fresh", results.fresh_latency), ("long history", results.history_latency)):
        if lat is not None:
            print(
                f"| {name} | {lat.offered:.0f} | {lat.events} | {lat.applied} | "
                f"{lat.waiting_when_sending_stopped} | {lat.p50_ms:.0f} | {lat.p99_ms:.0f} |"
            )
    for failure in results.failures:
        print(f"\nFAILED: {failure}")
    if results.profile:
        print(f"\n## py-spy, fresh workload ({s.profile_events} events after the window)\n")
        print(f"raw profile: {results.profile_file}\n```")
        print("\n".join(results.profile))
        print("```")
