"""The processors' Prometheus metrics, served beside ``/healthz`` and ``/readyz``.

Hooks are called by the agent's parts (the batch processor after each batch, the
watchdog after each offset probe); nothing here decides anything. Metrics live in a
registry of their own, rendered by ``processors.health`` at ``/metrics``.

- ``learnstream_processors_records_in_total{topic}``: records taken from events.raw.
- ``learnstream_processors_records_out_total{topic}``: records sent, per topic (outputs,
  dead letters, projection snapshots and state changelogs).
- ``learnstream_processors_events_total{verdict}``: what the rulebook decided for each
  event: applied, redelivered, duplicates, sampled_out, consent_filtered, erased,
  dead_lettered.
- ``learnstream_processors_batch_seconds`` and ``learnstream_processors_batch_records``:
  how long a batch took from its first decision to its last delivery, and its size.
- ``learnstream_processors_consumer_lag{topic,partition}``: end offset minus committed
  offset of each events.raw partition this worker owns, from the watchdog's probe (every
  10 s, from the broker itself, so it keeps rising while processing is stuck).
- ``process_*``: the process collector's CPU, memory and start time (a restart shows as a
  new start time).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

VERDICTS = (
    "applied",
    "redelivered",
    "duplicates",
    "sampled_out",
    "consent_filtered",
    "erased",
    "dead_lettered",
)


class ProcessorMetrics:
    def __init__(self, source_topic: str) -> None:
        self.registry = CollectorRegistry()
        self._source = source_topic
        self._lock = threading.Lock()  # the watchdog thread writes the lag
        self._owned: set[int] = set()
        registry = self.registry
        ProcessCollector(registry=registry)
        self.records_in = Counter(
            "learnstream_processors_records_in", "Records taken from a source topic.",
            ["topic"], registry=registry,
        )  # fmt: skip
        self.records_out = Counter(
            "learnstream_processors_records_out", "Records sent, per topic.",
            ["topic"], registry=registry,
        )  # fmt: skip
        self.events = Counter(
            "learnstream_processors_events", "Events by what the rulebook decided.",
            ["verdict"], registry=registry,
        )  # fmt: skip
        for verdict in VERDICTS:
            self.events.labels(verdict)
        self.batch_seconds = Histogram(
            "learnstream_processors_batch_seconds",
            "Seconds from a batch's first decision to its last acknowledged delivery.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.batch_records = Histogram(
            "learnstream_processors_batch_records", "Records per batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000), registry=registry,
        )  # fmt: skip
        self.lag = Gauge(
            "learnstream_processors_consumer_lag",
            "End offset minus committed offset, per source partition this worker owns.",
            ["topic", "partition"], registry=registry,
        )  # fmt: skip

    def batch(
        self,
        records: int,
        seconds: float,
        verdicts: Mapping[str, int],
        sent: Mapping[str, int],
    ) -> None:
        self.records_in.labels(self._source).inc(records)
        self.batch_records.observe(records)
        self.batch_seconds.observe(seconds)
        for verdict, count in verdicts.items():
            self.events.labels(verdict).inc(count)
        for topic, count in sent.items():
            self.records_out.labels(topic).inc(count)

    def offsets(self, ends: Mapping[int, int], committed: Mapping[int, int | None]) -> None:
        """The watchdog's latest probe of the partitions this worker owns."""
        with self._lock:
            for partition in self._owned - set(ends):  # no longer ours
                self.lag.remove(self._source, str(partition))
            self._owned = set(ends)
            for partition, end in ends.items():
                resumes = committed.get(partition)
                lag = end - resumes if resumes is not None else end
                self.lag.labels(self._source, str(partition)).set(max(lag, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
