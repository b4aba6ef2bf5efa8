"""One bad input never stops the pipeline (issue 10).

A record whose content the processors cannot handle (here a valid Avro event stamped
0001-01-01, .NET's DateTime.MinValue, in a zone west of UTC: its local date would be
in year 0) is dead-lettered with the stage and the error, and the learners after it on
the same partition are processed as usual. Deciding is pure (processors.decide), so
most of this is shown without a broker; the last test runs a real worker."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from devstack.services import ServiceGroup, free_port, http_ok
from learnstream.settings import Settings
from learnstream.topics import (
    EVENTS_CLEAN,
    EVENTS_DERIVED,
    EVENTS_INVALID,
    EVENTS_RAW,
    PROJECTION_SCHEMAS,
    PROJECTIONS_XP,
    REQUESTS_ERASURE,
)
from processors import decide
from processors.app import _codec
from projections.blind_spots import DrillAttempt, blind_spots, prune
from projections.delivery import Position
from projections.events import Event
from projections.rulebook import LEARNER, Ledger, Verdict
from schemas.catalog import default_catalog
from schemas.codec import decode, encode
from schemas.examples import example_event
from schemas.registry import FileSchemaRegistry
from schemas.validation import Accepted, validate_event
from tests.kafka_read import latest_by_key, read_all

CATALOG = default_catalog()
REGISTRY = FileSchemaRegistry.from_files(CATALOG)
NOW = datetime(2026, 2, 1, tzinfo=UTC)
YEAR_ONE = datetime(1, 1, 1, tzinfo=UTC)  # .NET DateTime.MinValue


SETUP = decide.Setup(
    catalog=CATALOG,
    registry=REGISTRY,
    projections={name: _codec(REGISTRY, f) for name, f in PROJECTION_SCHEMAS.items()},
    environment="development",
    sample_rate_overrides={},
)


def record(
    user_id: str,
    kind: str = "lesson_completed",
    timestamp: datetime | None = None,
    timezone: str = "UTC",
) -> tuple[str, bytes]:
    """(event_id, Avro bytes) of a valid event; ``timestamp`` is set after validation, as
    a writer other than the collector could."""
    event = example_event(CATALOG[kind])
    event_id = str(uuid.uuid4())
    event |= {"event_id": event_id, "user_id": user_id}
    event["device_info"] = {"platform": "desktop", "timezone": timezone}
    outcome = validate_event(CATALOG, event, NOW)
    assert isinstance(outcome, Accepted)
    datum = dict(outcome.datum)
    if timestamp is not None:
        datum["timestamp"] = timestamp
    kind_ = outcome.event_type
    return event_id, encode(REGISTRY.id_for(kind_.subject, kind_.schema), kind_.parsed, datum)


def decided(data: bytes, ledger: Ledger | None = None) -> decide.Decided | decide.Rejected:
    """The decision on a record as if it had passed ``parse``: what the later stages do
    with content that ``parse``'s own event-time rule would already refuse."""
    datum = decode(REGISTRY, data)
    event = Event.from_envelope(datum)
    parsed = decide.Parsed(data, datum, event, CATALOG[event.event_type])
    ledger = ledger if ledger is not None else Ledger(lambda table, key: None)
    return decide.decide(parsed, ledger, Position(0, 7), 0, SETUP)


def test_an_event_time_no_stage_supports_is_rejected_before_anything_else() -> None:
    """Records an older collector let into the log meet the door's rule again."""
    _, data = record("usr_a", timestamp=YEAR_ONE)
    rejected = decide.parse(data, SETUP)
    assert isinstance(rejected, decide.Rejected)
    assert rejected.stage == decide.EVENT_TIME
    assert "is before 2000-01-01" in rejected.reason
    assert json.loads(rejected.raw)["user_id"] == "usr_a"
    _, fine = record("usr_a")
    assert isinstance(decide.parse(fine, SETUP), decide.Parsed)


def test_a_record_the_fold_cannot_take_is_rejected_naming_stage_and_error() -> None:
    _, data = record("usr_a", timestamp=YEAR_ONE, timezone="America/Los_Angeles")
    rejected = decided(data)
    assert isinstance(rejected, decide.Rejected)
    assert rejected.stage == decide.FOLD
    assert rejected.reason.startswith("cannot fold into the learner's state: OverflowError(")
    kept = json.loads(rejected.raw)  # decoded, as JSON: readable, and erasable by user_id
    assert kept["user_id"] == "usr_a"
    assert kept["timestamp"] == "0001-01-01T00:00:00+00:00"


def test_a_rejected_record_leaves_no_state_behind() -> None:
    """The dedup entry and everything else it folded are taken back: a redelivery is
    rejected again, not taken for an already-applied record."""
    _, data = record("usr_a", timestamp=YEAR_ONE, timezone="America/Los_Angeles")
    ledger = Ledger(lambda table, key: None)
    assert isinstance(decided(data, ledger), decide.Rejected)
    assert ledger.writes == {}
    assert isinstance(decided(data, ledger), decide.Rejected)


def test_an_output_over_kafkas_size_limit_is_rejected_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kafka would refuse it on every retry: dead-lettered, its state taken back."""
    _, data = record("usr_a")
    assert isinstance(decided(data), decide.Decided)
    monkeypatch.setattr(decide, "MAX_OUTPUT_BYTES", len(data) - 1)
    ledger = Ledger(lambda table, key: None)
    rejected = decided(data, ledger)
    assert isinstance(rejected, decide.Rejected)
    assert rejected.stage == decide.SIZE
    assert "bytes, over Kafka's message size limit" in rejected.reason
    assert ledger.writes == {}


def test_undecodable_bytes_are_kept_as_hex() -> None:
    rejected = decide.parse(b"\x00garbage", SETUP)
    assert isinstance(rejected, decide.Rejected)
    assert rejected.stage == decide.DECODE
    assert rejected.raw == b"\x00garbage".hex()


def test_a_year_one_event_in_utc_is_folded_not_rejected() -> None:
    """The projections clamp ``timestamp - window`` at the start of the calendar."""
    for kind in ("lesson_completed", "session_completed"):
        _, data = record("usr_a", kind, timestamp=YEAR_ONE)
        ledger = Ledger(lambda table, key: None)
        outcome = decided(data, ledger)
        assert isinstance(outcome, decide.Decided), outcome
        assert outcome.outcome.verdict is Verdict.APPLIED
        assert (LEARNER, "usr_a") in ledger.writes


def test_the_blind_spot_window_is_unchanged_for_ordinary_times() -> None:
    attempts = tuple(
        DrillAttempt(datetime(2026, 1, day, tzinfo=UTC), f"e{day}", "d1", None, float(day))
        for day in (1, 2, 20)
    )
    as_of = datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert blind_spots(attempts, as_of) == [
        {"drill_id": "d1", "drill_name": None, "avg_score": 11.0, "attempts": 2}
    ]
    assert prune(attempts, datetime(2026, 2, 8, tzinfo=UTC)) == attempts[1:]  # inclusive
    assert prune(attempts, YEAR_ONE) == attempts  # nothing before the start of time


class _RegistryDown(FileSchemaRegistry):
    def parsed_by_id(self, schema_id: int) -> Any:
        raise httpx.ConnectError("registry unreachable")


def test_a_registry_outage_is_not_the_records_fault() -> None:
    """Infrastructure failing while deciding passes through: retried, never dead-lettered."""
    _, data = record("usr_a")
    down = decide.Setup(
        catalog=CATALOG,
        registry=_RegistryDown.from_files(CATALOG),
        projections=SETUP.projections,
        environment="development",
        sample_rate_overrides={},
    )
    with pytest.raises(httpx.ConnectError):
        decide.parse(data, down)


def test_an_unreadable_erasure_request_is_rejected() -> None:
    rejected = decide.parse_erasure(b'{"user_id": "usr_a"}')
    assert isinstance(rejected, decide.Rejected)
    assert "KeyError" in rejected.reason
    assert json.loads(rejected.raw) == {"user_id": "usr_a"}


async def _produce(settings: Settings, records: list[tuple[str, str, bytes]]) -> None:
    """(topic, key, value) in order; events.raw records all go to partition 0, so the
    learners after the bad record wait behind it, as learners sharing a partition do."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for topic, key, value in records:
            partition = 0 if topic == settings.topic(EVENTS_RAW) else None
            await producer.send_and_wait(topic, value, key=key.encode(), partition=partition)
    finally:
        await producer.stop()


def _clean_ids(settings: Settings) -> list[str]:
    clean = read_all(settings.kafka_bootstrap, settings.topic(EVENTS_CLEAN))
    return [str(decode(REGISTRY, m.value)["event_id"]) for m in clean]


def _letters(settings: Settings) -> list[dict[str, Any]]:
    invalid = read_all(settings.kafka_bootstrap, settings.topic(EVENTS_INVALID))
    return [json.loads(m.value) for m in invalid]


def test_a_poison_record_is_dead_lettered_and_the_partition_flows_on(settings: Settings) -> None:
    own = settings.model_copy(update={"processors_health_port": free_port()})
    poison_id, poison = record("usr_a", timestamp=YEAR_ONE, timezone="America/Los_Angeles")
    b_id, b_event = record("usr_b")
    a_id, a_event = record("usr_a")  # the same learner's next event is not blocked either
    raw, erasures = own.topic(EVENTS_RAW), own.topic(REQUESTS_ERASURE)
    asyncio.run(
        _produce(
            own,
            [
                (raw, "usr_a", poison),
                (raw, "usr_b", b_event),
                (raw, "usr_a", a_event),
                (erasures, "usr_c", b"not a request"),
            ],
        )
    )
    with open(os.devnull, "w") as quiet:
        group = ServiceGroup(env=own.as_env(), out=quiet)
        group.start("processors")
        try:
            deadline = time.monotonic() + 90
            xp: dict[str, dict[str, Any]] = {}
            while time.monotonic() < deadline:
                assert not group.exited(), "the worker exited"
                xp = latest_by_key(own.kafka_bootstrap, own.topic(PROJECTIONS_XP))
                if {"usr_a", "usr_b"} <= set(xp) and len(_letters(own)) == 2:
                    break
                time.sleep(0.5)
            assert http_ok(f"http://127.0.0.1:{own.processors_health_port}/healthz")
            assert not group.exited(), "the worker exited"
        finally:
            group.stop_all()

    assert sorted(_clean_ids(own)) == sorted([b_id, a_id])  # keyed by learner: no order across
    assert {k: v["xp"] for k, v in xp.items()} == {"usr_a": 50, "usr_b": 50}
    derived = read_all(own.kafka_bootstrap, own.topic(EVENTS_DERIVED))
    sources = {decode(REGISTRY, m.value)["properties"].get("source_event_id") for m in derived}
    assert poison_id not in sources and {a_id, b_id} <= sources
    letter, erasure_letter = sorted(_letters(own), key=lambda letter: letter["source"])
    assert letter["source"] == "processors at partition 0 offset 0"
    (error,) = letter["errors"]
    assert "event time" in error["message"] and "before 2000-01-01" in error["message"]
    assert json.loads(letter["raw"])["event_id"] == poison_id
    assert erasure_letter["source"].startswith(f"processors at {erasures} partition")
    assert erasure_letter["raw"] == "not a request"
