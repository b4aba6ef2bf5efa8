"""What one raw record does, decided apart from doing it.

Everything here depends only on the record's content and the state read for it:
decoding, the erasure / dedup / sampling / consent gates, the fold, and shaping and
Avro-encoding every record that will be sent. Nothing here writes a table or sends
(no Faust, no Kafka, no awaits). So an exception while deciding is the record's own
doing and would recur on every retry: the record is ``Rejected`` (the caller
dead-letters it and moves on) and nothing of it is written or sent. Only the effects
carried out afterwards, table writes and sends, can fail for reasons outside the
record, and those are retried by restarting from the committed offset.

One kind of I/O is reachable from here: a Confluent schema registry, asked over HTTP
(memoized) for schemas and ids. Its failures are infrastructure and pass through
(``is_infrastructure``), so a registry outage never dead-letters good records.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

import httpx

from learnstream.erasure import ErasureRequest, erased_before
from learnstream.topics import (
    PROJECTIONS_BLIND_SPOTS,
    PROJECTIONS_MODE_PROGRESS,
    PROJECTIONS_TOPIC_MASTERY,
    PROJECTIONS_USER_PROGRESS,
    PROJECTIONS_XP,
)
from processors import outputs
from processors.consent import CONSENT_EVENT, allowed, updated_consent
from processors.delivery import Position, Seen, already_applied, classify
from processors.sampling import keeps, sample_rate
from projections.events import Event
from projections.learner import LearnerState, apply, from_json, to_json
from schemas.catalog import EventCatalog, EventType
from schemas.codec import decode, encode
from schemas.event_time import unsupported
from schemas.registry import SchemaRegistry

# The stages a record can fail in; a dead letter reads "cannot <stage>: <exception>".
DECODE = "decode"
EVENT_TIME = "take its event time"
FILTER = "check erasure, duplicates, sampling and consent"
RESAMPLE = "re-encode with its sample rate"
FOLD = "fold into the learner's state"
OUTPUTS = "build its derived events and projection snapshots"
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


@dataclass(frozen=True)
class Parsed:
    data: bytes  # the record as it came
    datum: dict[str, Any]
    event: Event
    event_type: EventType


@dataclass(frozen=True)
class Known:
    """What the tables hold about one record, read before deciding on it."""

    erased_at_ms: int | None  # the learner's latest erasure, if any
    first_seen: Position | None  # where its event_id was first seen, within the window
    consent: Mapping[str, bool]
    learner: Mapping[str, Any] | None  # the learners table's value for its user


@dataclass(frozen=True)
class Snapshot:
    projection: str  # unprefixed topic name
    key: str
    value: bytes


@dataclass(frozen=True)
class LearnerOutcome:
    user_id: str
    stored: dict[str, Any] | None  # the learner's new table value; None: already applied
    derived: tuple[bytes, ...]  # for events.derived, in order
    snapshots: tuple[Snapshot, ...]  # for the projection topics, in order


@dataclass(frozen=True)
class Outcome:
    """What processing one record writes and sends; every field is optional."""

    event: Event
    dropped: str | None = None  # the counter that says why nothing is sent
    first_time: bool = False  # its position goes into the dedup table
    consent: dict[str, bool] | None = None  # the learner's consent after it
    clean: bytes | None = None  # the record for events.clean
    learner: LearnerOutcome | None = None


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


def decide(parsed: Parsed, known: Known, here: Position, setup: Setup) -> Outcome | Rejected:
    """What the record at ``here`` does, given what the tables hold for it."""
    try:
        return _decide(parsed, known, here, setup)
    except _Failure as failure:
        return Rejected(failure.stage, _named(failure.cause), raw_record(parsed.data, parsed.datum))


def _decide(parsed: Parsed, known: Known, here: Position, setup: Setup) -> Outcome:
    event, kind = parsed.event, parsed.event_type
    with _stage(FILTER):
        if known.erased_at_ms is not None and erased_before(known.erased_at_ms, event.timestamp):
            return Outcome(event, dropped="erased")  # a late copy of an erased learner's event
        verdict = classify(known.first_seen, here)
        if verdict is Seen.DUPLICATE:
            return Outcome(event, dropped="duplicates")
        first_time = verdict is Seen.FIRST_TIME
        rate = sample_rate(kind, setup.environment, setup.sample_rate_overrides)
        if not keeps(event.event_id, rate):
            return Outcome(event, dropped="sampled_out", first_time=first_time)
        consent = _consent_after(event, known.consent)
        if not allowed(known.consent, event.event_type, kind.category):
            return Outcome(
                event, dropped="consent_filtered", first_time=first_time, consent=consent
            )
    with _stage(RESAMPLE):
        clean = _clean(parsed, rate, setup)
    learner = None if event.user_id is None else _learner(parsed, known.learner, here, setup)
    return Outcome(event, first_time=first_time, consent=consent, clean=clean, learner=learner)


def _consent_after(event: Event, consent: Mapping[str, bool]) -> dict[str, bool] | None:
    """The learner's consent as this event leaves it; None when it does not change it."""
    if event.user_id is None or event.event_type != CONSENT_EVENT:
        return None
    return updated_consent(consent, event.properties)


def _clean(parsed: Parsed, rate: float, setup: Setup) -> bytes:
    """The record for events.clean: as it came, or stamped with the rate it was kept at."""
    if rate >= 1.0:
        return parsed.data
    kind = parsed.event_type
    schema_id = setup.registry.id_for(kind.subject, kind.schema)
    return encode(schema_id, kind.parsed, {**parsed.datum, "sample_rate": rate})


def _learner(
    parsed: Parsed, stored: Mapping[str, Any] | None, here: Position, setup: Setup
) -> LearnerOutcome:
    event = parsed.event
    assert event.user_id is not None
    with _stage(FOLD):
        state, write, derived = _fold(event, stored, here)
    with _stage(OUTPUTS):
        return LearnerOutcome(
            event.user_id,
            write,
            tuple(_derived_record(item, parsed.datum, setup) for item in derived),
            _snapshots(event, state, setup.projections),
        )


def _fold(
    event: Event, stored: Mapping[str, Any] | None, here: Position
) -> tuple[LearnerState, dict[str, Any] | None, list[dict[str, Any]]]:
    """(state after the event, the table value to write or None, its derived outputs)."""
    state = from_json(stored["state"]) if stored else LearnerState()
    applied = Position.from_json(stored["applied"]) if stored else None
    if stored and already_applied(applied, here):
        # redelivered: the same outputs again, their ids make them idempotent
        return state, None, list(stored["derived"])
    state, produced = apply(state, event)
    derived = [outputs.derived_to_json(d) for d in produced]
    return state, {"state": to_json(state), "applied": here.as_json(), "derived": derived}, derived


def _derived_record(item: dict[str, Any], source: dict[str, Any], setup: Setup) -> bytes:
    derived = outputs.derived_from_json(item)
    kind = setup.catalog[derived.kind]
    record = outputs.derived_datum(setup.catalog, derived, source)
    return encode(setup.registry.id_for(kind.subject, kind.schema), kind.parsed, record)


def _snapshots(
    event: Event, state: LearnerState, codecs: Mapping[str, Codec]
) -> tuple[Snapshot, ...]:
    """The projection snapshots this event touches. They are sent on redelivery too:
    they may not have gone out before a crash, and on a compacted topic the same
    snapshot twice is harmless."""
    user = event.user_id
    assert user is not None
    records: list[tuple[str, str, dict[str, Any]]] = [
        (
            PROJECTIONS_XP,
            user,
            {"user_id": user, "xp": state.xp, "events_applied": state.events_applied},
        ),
        (PROJECTIONS_USER_PROGRESS, user, outputs.user_progress(user, state)),
    ]
    topic = event.properties.get("topic_id")
    if event.event_type == "question_submit" and topic is not None and str(topic) in state.mastery:
        records.append(
            (
                PROJECTIONS_TOPIC_MASTERY,
                f"{user}:{topic}",
                outputs.topic_mastery(user, str(topic), state),
            )
        )
    if event.event_type == "session_completed":
        mode_id = event.properties.get("practice_mode_id")
        if mode_id is not None:
            records.append(
                (
                    PROJECTIONS_MODE_PROGRESS,
                    f"{user}:{mode_id}",
                    outputs.mode_progress(user, str(mode_id), state),
                )
            )
        records.append((PROJECTIONS_BLIND_SPOTS, user, outputs.learner_blind_spots(user, state)))
    return tuple(Snapshot(name, key, codecs[name].encode(record)) for name, key, record in records)
