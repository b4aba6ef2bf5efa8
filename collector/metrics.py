"""The collector's Prometheus metrics, in a registry of its own per app instance."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class CollectorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.accepted = Counter(
            "learnstream_events_accepted", "Events acknowledged by Kafka", registry=self.registry
        )
        self.rejected = Counter(
            "learnstream_events_rejected",
            "Events or requests refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "learnstream_publish_seconds",
            "Time from request receipt to Kafka acknowledgement of all its events",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "learnstream_batch_events",
            "Events per batch request",
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
