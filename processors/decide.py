"""What one raw record does, decided apart from doing it.

Everything here depends only on the record's content and the state read for it:
decoding, the rulebook (``projections.rulebook``: erasure, dedup, sampling, consent,
the fold), and shaping and Avro-encoding every record that will be sent. Nothing here
writes a table or sends (no Faust, no Kafka, no awaits): state changes go into the
batch's ``Ledger``. So an exception while deciding is the record's own doing and would
recur on every retry: the record is ``Rejected`` (the caller dead-letters it and moves
on), the ledger takes back whatever it had written, and nothing of it is sent. Only the
effects carried out afterwards, table writes and sends, can fail for reasons outside
the record, and those are retried by restarting from the committed offset.

One kind of I/O is reachable from here: a Confluent schema registry, asked over HTTP
(memoized) for schemas and ids. Its failures are infrastructure and pass through
(``is_infrastructure``), so a registry outage never dead-letters good records.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

import httpx

from learnstream.erasure import ErasureRequest
from learnstream.topics import (
    PROJECTIONS_BLIND_SPOTS,
    PROJECTIONS_MODE_PROGRESS,
    PROJECTIONS_TOPIC_MASTERY,
    PROJECTIONS_USER_PROGRESS,
    PROJECTIONS_XP,
)
from processors import outputs
from projections.delivery import Position
from projections.events import Event
from projections.learner import Derived, Needs, Summary, TopicMastery
from projections.policy import Policy, catalog_policy
from projections.rulebook import (
    DRILLS,
    LEARNER,
    TOPIC,
    Incoming,
    LearnerEntry,
    Ledger,
    Outcome,
    Rulebook,
    piece_key,
)
from schemas.catalog import EventCatalog, EventType
from schemas.codec import encode
from schemas.event_time import unsupported
from schemas.reader import decode  # compiled per schema; fastavro's values (tests)
from schemas.registry import SchemaRegistry

# The stages a record can fail in; a dead letter reads "cannot <stage>: <exception>".
DECODE = "decode"
EVENT_TIME = "take its event time"
FILTER = "look up its consent category and sample rate"
FOLD = "fold into the learner's state"  # the rulebook: erasure, dedup, sampling, consent, fold
RESAMPLE = "re-encode with its sample rate"
OUTPUTS = "build its derived events"
SIZE = "fit its outputs in Kafka records"
SNAPSHOT = "build a projection snapshot"
MAX_ERROR_CHARS = 1000


@dataclass(frozen=True)
class Codec:
    """One Avro record type in the Confluent framing, its schema id resolved up front."""

    schema_id: int
    parsed: Any

    def encode(self, record: dict[str, Any]) -> bytes:
        return encode(self.schema_id, self.parsed, record)


@dataclass(frozen=True)
class Setup:
    """What deciding needs besides the record and the state: fixed for a worker's life."""

    catalog: EventCatalog
    registry: SchemaRegistry
    projections: Mapping[str, Codec]  # by unprefixed projection topic name
    environment: str
    sample_rate_overrides: Mapping[str, float]
    book: Rulebook = field(default_factory=Rulebook)
    policy: Policy = field(init=False)

    def __post_init__(self) -> None:
        policy = catalog_policy(self.catalog, self.environment, self.sample_rate_overrides)
        object.__setattr__(self, "policy", policy)


@dataclass(frozen=True)
class Parsed:
    data: bytes  # the record as it came
    datum: dict[str, Any]
    event: Event
    event_type: EventType


@dataclass(frozen=True)
class Decided:
    """What processing one record sends; its state changes are in the batch's ledger."""

    outcome: Outcome
    clean: bytes | None = None  # the record for events.clean
    derived: tuple[bytes, ...] = ()  # for events.derived, in order


@dataclass(frozen=True)
class Snapshot:
    projection: str  # unprefixed topic name
    key: str
    value: bytes


@dataclass(frozen=True)
class Rejected:
    """A record that can never be processed: it goes to events.invalid, nothing else."""

    stage: str
    error: str  # the exception's repr: its type and message
    raw: str  # the record, for the dead letter (see ``raw_record``)

    @property
    def reason(self) -> str:
        return f"cannot {self.stage}: {self.error}"


def _named(exc: Exception) -> str:
    """The exception's type and message, bounded: a message may quote a whole record."""
    text = repr(exc)
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "..."


def is_infrastructure(exc: BaseException) -> bool:
    """Whether a failure while deciding lies outside the record: the schema registry
    unreachable, overloaded or failing. Those are retried, never dead-lettered."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return isinstance(exc, httpx.TransportError)


class _Failure(Exception):
    def __init__(self, stage: str, cause: Exception) -> None:
        super().__init__(stage, cause)
        self.stage = stage
        self.cause = cause


@contextmanager
def _stage(name: str) -> Iterator[None]:
    """Name the stage of a content failure inside the block."""
    try:
        yield
    except _Failure:
        raise
    except Exception as exc:
        if is_infrastructure(exc):
            raise
        raise _Failure(name, exc) from exc


def raw_record(data: bytes, datum: Mapping[str, Any] | None) -> str:
    """The rejected record as the dead letter keeps it. Decoded, as JSON: a person can
    read it, and the sink's erasure finds a learner's dead letters by ``raw``'s
    ``user_id`` (as hex, a learner's data would escape erasure). Undecodable, the bytes
    as hex: they may not be text, and hex keeps every one of them."""
    if datum is None:
        return data.hex()
    return json.dumps(_plain(datum), allow_nan=False)


def _plain(value: Any) -> Any:
    """A decoded Avro value as plain JSON: times as ISO 8601, bytes as hex, and non-finite
    numbers as text (bare NaN is not JSON, and ClickHouse would not read it)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def parse(data: bytes, setup: Setup) -> Parsed | Rejected:
    datum: dict[str, Any] | None = None
    try:
        datum = decode(setup.registry, data)
        event = Event.from_envelope(datum)
        parsed = Parsed(data, datum, event, setup.catalog[event.event_type])
    except Exception as exc:
        if is_infrastructure(exc):
            raise
        return Rejected(DECODE, _named(exc), raw_record(data, datum))
    # the door refuses these now; a record an older collector let in is refused here,
    # by the same rule, before any state or output takes its time
    problem = unsupported(event.timestamp, datum.get("received_at"))
    if problem is not None:
        return Rejected(
            EVENT_TIME,
            f"timestamp {event.timestamp.isoformat()} {problem}",
            raw_record(data, datum),
        )
    return parsed


def parse_erasure(data: bytes | None) -> ErasureRequest | Rejected:
    """An erasure request, or why it can never be one."""
    try:
        request = ErasureRequest.from_json(data if data is not None else b"")
        _ = request.requested_at_ms  # erasing needs it: a time it cannot use is content too
    except Exception as exc:
        return Rejected(DECODE, _named(exc), _text(data or b""))
    return request


def _text(data: bytes) -> str:
    """As text when it is (a request is JSON, whose user_id the sink's erasure finds),
    else as hex."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.hex()


def decide(
    parsed: Parsed, ledger: Ledger, here: Position, arrived_ms: int, setup: Setup
) -> Decided | Rejected:
    """What the record at ``here`` does; its state changes go into ``ledger``, which
    takes them back if the record is rejected."""
    ledger.begin()
    try:
        return _decide(parsed, ledger, here, arrived_ms, setup)
    except _Failure as failure:
        ledger.rollback()
        return Rejected(failure.stage, _named(failure.cause), raw_record(parsed.data, parsed.datum))


def _decide(
    parsed: Parsed, ledger: Ledger, here: Position, arrived_ms: int, setup: Setup
) -> Decided:
    event = parsed.event
    stage = FILTER  # one handler for every stage: a context manager per stage cost ~8 us
    try:
        category, rate = setup.policy(event.event_type)
        stage = FOLD
        outcome = setup.book.step(ledger, Incoming(event, here, arrived_ms, category, rate))
        if not outcome.kept:
            return Decided(outcome)
        stage = RESAMPLE
        clean = _clean(parsed, rate, setup)
        stage = OUTPUTS
        derived = tuple(_derived_record(d, parsed.datum, setup) for d in outcome.derived)
        stage = SIZE
        too_large = [len(r) for r in (clean, *derived) if len(r) > MAX_OUTPUT_BYTES]
        if too_large:
            raise ValueError(
                f"an output record would be {max(too_large)} bytes, over Kafka's message "
                f"size limit ({MAX_OUTPUT_BYTES}); no retry could send it"
            )
    except Exception as exc:
        if is_infrastructure(exc):
            raise
        raise _Failure(stage, exc) from exc
    return Decided(outcome, clean, derived)


# Kafka's default message size limits (broker max.message.bytes, producer
# max.request.size) are ~1 MiB per record batch; a record over this would be refused on
# every retry. events.raw took the input, so only an output that grew (a sample rate
# stamped on an input at the limit) can get here.
MAX_OUTPUT_BYTES = 1_000_000


def _clean(parsed: Parsed, rate: float, setup: Setup) -> bytes:
    """The record for events.clean: as it came, or stamped with the rate it was kept at."""
    if rate >= 1.0:
        return parsed.data
    kind = parsed.event_type
    schema_id = setup.registry.id_for(kind.subject, kind.schema)
    return encode(schema_id, kind.parsed, {**parsed.datum, "sample_rate": rate})


def _derived_record(derived: Derived, source: dict[str, Any], setup: Setup) -> bytes:
    kind = setup.catalog[derived.kind]
    record = outputs.derived_datum(setup.catalog, derived, source)
    return encode(setup.registry.id_for(kind.subject, kind.schema), kind.parsed, record)


# ---- projection snapshots: one per touched key per batch ---------------------------


@dataclass
class Touched:
    """The projection keys a batch changed, in first-touched order."""

    users: dict[str, None] = field(default_factory=dict)
    topics: dict[tuple[str, str], None] = field(default_factory=dict)
    modes: dict[tuple[str, str], None] = field(default_factory=dict)
    blind_spots: dict[str, None] = field(default_factory=dict)

    def add(self, event: Event, needs: Needs) -> None:
        """What ``event`` (folded, or redelivered) touched. Snapshots go out on a
        redelivery too: they may not have gone out before a crash, and on a compacted
        topic the same snapshot twice is harmless."""
        user = event.user_id
        assert user is not None
        self.users[user] = None
        if needs.topic is not None:
            self.topics[(user, needs.topic)] = None
        if event.event_type == "session_completed":
            mode = event.properties.get("practice_mode_id")
            if mode is not None:
                self.modes[(user, str(mode))] = None
            self.blind_spots[user] = None


def snapshots(ledger: Ledger, touched: Touched, setup: Setup) -> list[Snapshot | Rejected]:
    """The latest snapshot of every key the batch touched, from the ledger's state."""
    records: list[tuple[str, str, Any]] = []
    summaries: dict[str, Summary] = {}
    for user in touched.users:
        entry: LearnerEntry | None = ledger.get(LEARNER, user)
        if entry is None:  # erased meanwhile: its tombstones are the last word
            continue
        summary = summaries[user] = entry.summary
        xp = {"user_id": user, "xp": summary.xp, "events_applied": summary.events_applied}
        records.append((PROJECTIONS_XP, user, lambda xp=xp: xp))
        records.append(
            (PROJECTIONS_USER_PROGRESS, user, lambda u=user, s=summary: outputs.user_progress(u, s))
        )
    for user, topic in touched.topics:
        mastery: TopicMastery | None = ledger.get(TOPIC, piece_key(user, topic))
        if mastery is None or user not in summaries:
            continue
        summary = summaries[user]
        records.append(
            (
                PROJECTIONS_TOPIC_MASTERY,
                f"{user}:{topic}",
                lambda u=user, t=topic, m=mastery, s=summary: outputs.topic_mastery(u, t, m, s),
            )
        )
    for user, mode in touched.modes:
        if user not in summaries or mode not in summaries[user].modes:
            continue
        summary = summaries[user]
        records.append(
            (
                PROJECTIONS_MODE_PROGRESS,
                f"{user}:{mode}",
                lambda u=user, m=mode, s=summary: outputs.mode_progress(u, m, s),
            )
        )
    for user in touched.blind_spots:
        if user not in summaries:
            continue
        drills = ledger.get(DRILLS, user) or ()
        summary = summaries[user]
        records.append(
            (
                PROJECTIONS_BLIND_SPOTS,
                user,
                lambda u=user, s=summary, d=drills: outputs.learner_blind_spots(u, s, d),
            )
        )
    built: list[Snapshot | Rejected] = []
    for projection, key, shape in records:
        try:
            with _stage(SNAPSHOT):
                value = setup.projections[projection].encode(shape())
            built.append(Snapshot(projection, key, value))
        except _Failure as failure:
            where = json.dumps({"projection": projection, "key": key})
            built.append(Rejected(failure.stage, _named(failure.cause), where))
    return built
