"""The sink's Prometheus metrics, and the small HTTP endpoint that serves them.

``EventSink`` reports what it does through the hooks of a ``SinkObserver`` (the base
class does nothing, so the sink runs the same without metrics); ``SinkMetrics`` turns
them into Prometheus metrics in a registry of its own.

Consumer lag is refreshed every few seconds from the sink's own consumer, cheaply: the
log end offsets of the partitions it owns (one ListOffsets request a broker) minus the
offsets it committed, which it knows from its own commits. Only after an assignment is
a partition's committed offset asked of Kafka, once. The lag of a partition is therefore
what the sink has not yet stored and committed, buffered records included.

The endpoint is the standard library's ``ThreadingHTTPServer`` on a daemon thread, like
the processors' health endpoint: ``/metrics``, ``/healthz`` (200 while the process
lives) and ``/readyz`` (503 with the reason while ClickHouse keeps failing).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from aiokafka import TopicPartition
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

LAG_REFRESH_S = 5.0
SkipReason = Literal["redelivered", "copy", "letter", "erased"]
SKIP_REASONS: tuple[SkipReason, ...] = ("redelivered", "copy", "letter", "erased")
Operation = Literal["insert", "dead_letter", "erasure"]
OPERATIONS: tuple[Operation, ...] = ("insert", "dead_letter", "erasure")


class SinkObserver:
    """What the sink tells as it goes; every hook is cheap and does nothing here."""

    def inserted(self, table: str, rows: int, seconds: float) -> None:
        """ClickHouse took ``rows`` into ``table`` in one insert of ``seconds``."""

    def skipped(self, reason: SkipReason, rows: int) -> None:
        """Records not inserted: ClickHouse holds them already (``redelivered`` at or
        below the stored offset, a ``copy`` of a stored event, a ``letter`` already
        stored) or their learner was ``erased``."""

    def dead_lettered(self, topic: str) -> None:
        """A record of ``topic`` was written to events_invalid as a dead letter."""

    def retrying(self, operation: Operation) -> None:
        """An attempt failed for infrastructure and will be tried again."""

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """The sink committed these next offsets to Kafka, after storing what precedes."""

    def rebalanced(self, partitions: Iterable[TopicPartition]) -> None:
        """These partitions were assigned or revoked: what was known of them is stale."""


class ConsumerLag:
    """Records the sink has yet to store, per partition it owns."""

    def __init__(self) -> None:
        self._committed: dict[TopicPartition, int] = {}
        self._epoch = 0  # bumped by every rebalance: a lookup begun before it is stale
        self.snapshot: dict[TopicPartition, int] = {}  # replaced whole, read by scrapes

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def rebalanced(self, partitions: Iterable[TopicPartition]) -> None:
        gone = set(partitions)
        self._epoch += 1
        for tp in gone:
            self._committed.pop(tp, None)
        self.snapshot = {tp: n for tp, n in self.snapshot.items() if tp not in gone}

    async def refresh(self, consumer: Any) -> None:
        """Recompute from ``consumer`` (an AIOKafkaConsumer with a group)."""
        owned = sorted(consumer.assignment())
        unknown = [tp for tp in owned if tp not in self._committed]
        if unknown:
            epoch = self._epoch
            asked = await asyncio.gather(*(consumer.committed(tp) for tp in unknown))
            found = dict(zip(unknown, asked, strict=True))
            never = [tp for tp, offset in found.items() if offset is None]
            # never committed: the sink starts from the earliest record (auto_offset_reset)
            starts = await consumer.beginning_offsets(never) if never else {}
            if epoch == self._epoch:
                for tp, offset in found.items():
                    # a commit of ours that landed meanwhile is newer: keep it
                    self._committed.setdefault(tp, starts[tp] if offset is None else offset)
        ends = await consumer.end_offsets(owned) if owned else {}
        self.snapshot = {
            tp: max(0, end - self._committed[tp])
            for tp, end in ends.items()
            if tp in self._committed
        }


class _LagCollector(Collector):
    def __init__(self, lag: ConsumerLag) -> None:
        self._lag = lag

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "learnstream_sink_consumer_lag",
            "Records in a partition the sink owns that it has not stored and committed yet: "
            "log end offset minus committed offset",
            labels=["topic", "partition"],
        )
        for tp, behind in sorted(self._lag.snapshot.items()):
            family.add_metric([tp.topic, str(tp.partition)], behind)
        yield family


class SinkMetrics(SinkObserver):
    """The sink's metrics, in a registry of its own per sink."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.lag = ConsumerLag()
        self.rows_inserted = Counter(
            "learnstream_sink_rows_inserted",
            "Rows ClickHouse took, per table (the sink's dead letters count in events_invalid)",
            ["table"],
            registry=self.registry,
        )
        self.insert_seconds = Histogram(
            "learnstream_sink_insert_seconds",
            "Time one insert into ClickHouse took, per table",
            ["table"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.rows_skipped = Counter(
            "learnstream_sink_rows_skipped",
            "Records not inserted because ClickHouse already holds them (redelivered, copy, "
            "letter) or their learner was erased (erased)",
            ["reason"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "learnstream_sink_dead_letters",
            "Records the sink could never store, written to events_invalid, per source topic",
            ["topic"],
            registry=self.registry,
        )
        self.retries = Counter(
            "learnstream_sink_retries",
            "Attempts that failed for infrastructure (ClickHouse away, busy, short of memory) "
            "and were retried, per operation",
            ["operation"],
            registry=self.registry,
        )
        for reason in SKIP_REASONS:  # every series from the start, at 0: rate() sees it
            self.rows_skipped.labels(reason)
        for operation in OPERATIONS:
            self.retries.labels(operation)
        self.registry.register(_LagCollector(self.lag))

    def inserted(self, table: str, rows: int, seconds: float) -> None:
        self.rows_inserted.labels(table).inc(rows)
        self.insert_seconds.labels(table).observe(seconds)

    def skipped(self, reason: SkipReason, rows: int) -> None:
        if rows:
            self.rows_skipped.labels(reason).inc(rows)

    def dead_lettered(self, topic: str) -> None:
        self.dead_letters.labels(topic).inc()

    def retrying(self, operation: Operation) -> None:
        self.retries.labels(operation).inc()

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.lag.committed(offsets)

    def rebalanced(self, partitions: Iterable[TopicPartition]) -> None:
        self.lag.rebalanced(partitions)

    async def track_lag(self, consumer: Any, every_s: float = LAG_REFRESH_S) -> None:
        """Refresh the lag every ``every_s`` until cancelled; a failed refresh keeps the
        last values and is logged once until one succeeds again."""
        failing = False
        while True:
            try:
                async with asyncio.timeout(max(10.0, 2 * every_s)):
                    await self.lag.refresh(consumer)
                if failing:
                    log.info("consumer lag refreshed again")
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("consumer lag not refreshed (%r); keeping the last values", exc)
                failing = True
            await asyncio.sleep(every_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _handler(
    metrics: SinkMetrics, unready_reason: Callable[[], str | None]
) -> type[BaseHTTPRequestHandler]:
    def readiness() -> tuple[HTTPStatus, bytes, str]:
        reason = unready_reason()
        if reason is None:
            return HTTPStatus.OK, b'{"status": "ready"}', "application/json"
        body = json.dumps({"status": "unready", "reason": reason}).encode()
        return HTTPStatus.SERVICE_UNAVAILABLE, body, "application/json"

    answers: dict[str, Callable[[], tuple[HTTPStatus, bytes, str]]] = {
        "/metrics": lambda: (HTTPStatus.OK, metrics.exposition(), CONTENT_TYPE_LATEST),
        "/healthz": lambda: (HTTPStatus.OK, b'{"status": "ok"}', "application/json"),
        "/readyz": readiness,
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server calls
            answer = answers.get(self.path.split("?", 1)[0])
            status, body, kind = (
                answer()
                if answer
                else (HTTPStatus.NOT_FOUND, b'{"status": "unknown"}', "application/json")
            )
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics: " + format, *args)  # scraped every few seconds: not INFO

    return Handler


def serve_metrics(
    host: str, port: int, metrics: SinkMetrics, unready_reason: Callable[[], str | None]
) -> ThreadingHTTPServer | None:
    """Serve on ``host:port`` until the process ends or ``shutdown()``; port 0 means off.

    A port that is taken is logged, not fatal: the endpoint reports on storing and must
    never be the reason storing stops."""
    if port == 0:
        return None
    try:
        server = ThreadingHTTPServer((host, port), _handler(metrics, unready_reason))
    except OSError as exc:
        log.error("metrics endpoint not served: cannot listen on %s:%d (%s)", host, port, exc)
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics endpoint on http://%s:%d (/metrics, /healthz, /readyz)", host, port)
    return server
