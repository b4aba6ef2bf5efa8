"""The rulebook: what each event does to learner state, decided in one place.

The live processors (``processors.batch``) and the batch fold (``projections.fold``,
``python -m projections fold``) both run every event through ``Rulebook.step``, so they
cannot disagree: erasure, dedup by event_id, sampling, consent, then the learner fold.

State lives in named tables of keyed pieces (``TABLES``). ``step`` reads and writes
them through a ``Ledger``: reads fall through to a loader once per key, writes stay in
the ledger, so a caller can store each touched key once per batch. A savepoint
(``begin`` / ``rollback``) takes back everything one event wrote when something about
that event fails after its state was folded (an output that cannot be encoded, say).
Pure: no Kafka, no Faust, no I/O.

A redelivered message whose state is already written writes that state again. A store
that keeps state on disk (RocksDB, production's) writes a batch locally before its
changelog records are acknowledged: a worker killed in between restarts with local
state its changelog lacks, and the state says the batch's messages were applied. Without
a second write that state would never reach the changelog, and a worker that recovers
the partition from it later would miss it for good (the messages are committed by then).
Every key a batch writes is a key one of its messages touches, and all of them are
redelivered, so writing again what a redelivered message touches is enough. With the
memory store the writes repeat what the changelog holds: harmless, and only after a
restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import msgspec

from learnstream.erasure import erased_before
from projections.blind_spots import DrillAttempt
from projections.consent import CONSENT_EVENT, allowed, updated_consent
from projections.delivery import Position, Seen, already_applied, classify
from projections.events import Event
from projections.learner import Derived, Needs, Pieces, Summary, TopicMastery, needs, step
from projections.sampling import keeps

# ---- the tables and their pieces ---------------------------------------------------

SEEN = "seen"  # event_id -> FirstSeen: where the event_id was first seen
CONSENT = "consent"  # user_id -> {category: granted}
ERASED = "erased"  # user_id -> Erasure: their latest erasure
LEARNER = "learner"  # user_id -> LearnerEntry: the summary and its delivery bookkeeping
TOPIC = "topic"  # user_id + SEPARATOR + topic_id -> TopicMastery
COURSE = "course"  # user_id + SEPARATOR + course_id -> frozenset of content ids
DRILLS = "drills"  # user_id -> tuple of recent DrillAttempt
SEPARATOR = "\x1f"  # ASCII unit separator: ids never hold it, so keys never collide


class FirstSeen(msgspec.Struct, frozen=True, array_like=True):
    partition: int
    offset: int
    arrived_ms: int  # when the broker took it: the dedup window counts from here
    user_id: str | None  # so that an erasure finds the learner's entries


class Erasure(msgspec.Struct, frozen=True, array_like=True):
    at_ms: int  # requested_at of the learner's latest erasure: older events are dropped
    topics: list[str]  # the projection keys it tombstoned, to repeat after a crash
    modes: list[str]


class LearnerEntry(msgspec.Struct, frozen=True, array_like=True):
    summary: Summary
    applied: tuple[int, int]  # (partition, offset) of the last message folded in
    # derived events of the messages of the last batch that touched this learner, by
    # offset: a redelivery of one of them sends exactly its outputs again
    pending: dict[int, list[Derived]]


TABLES: dict[str, Any] = {
    SEEN: FirstSeen,
    CONSENT: dict[str, bool],
    ERASED: Erasure,
    LEARNER: LearnerEntry,
    TOPIC: TopicMastery,
    COURSE: frozenset[str],
    DRILLS: tuple[DrillAttempt, ...],
}

_encoder = msgspec.msgpack.Encoder()
_decoders = {table: msgspec.msgpack.Decoder(kind) for table, kind in TABLES.items()}


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode(table: str, data: bytes) -> Any:
    return _decoders[table].decode(data)


def piece_key(user_id: str, item: str) -> str:
    return f"{user_id}{SEPARATOR}{item}"


def split_key(key: str) -> tuple[str, str]:
    user_id, _, item = key.partition(SEPARATOR)
    return user_id, item


# ---- the ledger --------------------------------------------------------------------

Loader = Callable[[str, str], Any]  # (table, key) -> the stored piece, or None
_ABSENT = object()


class Ledger:
    """The pieces one batch reads and writes (see the module docstring)."""

    def __init__(self, load: Loader) -> None:
        self._load = load
        self._values: dict[tuple[str, str], Any] = {}
        # (table, key) -> (value or None for a deletion, the partition it belongs to)
        self.writes: dict[tuple[str, str], tuple[Any, int]] = {}
        self._undo: list[tuple[tuple[str, str], Any, Any]] | None = None

    def get(self, table: str, key: str) -> Any:
        slot = (table, key)
        value = self._values.get(slot, _ABSENT)
        if value is _ABSENT:
            value = self._values[slot] = self._load(table, key)
        return value

    def written(self, table: str, key: str) -> bool:
        return (table, key) in self.writes

    def put(self, table: str, key: str, value: Any, partition: int) -> None:
        """Write ``value`` (None deletes the key) on the state partition ``partition``."""
        slot = (table, key)
        if self._undo is not None:
            self._undo.append(
                (slot, self._values.get(slot, _ABSENT), self.writes.get(slot, _ABSENT))
            )
        self._values[slot] = value
        self.writes[slot] = (value, partition)

    def begin(self) -> None:
        self._undo = []

    def rollback(self) -> None:
        for slot, value, write in reversed(self._undo or []):
            if value is _ABSENT:
                self._values.pop(slot, None)
            else:
                self._values[slot] = value
            if write is _ABSENT:
                self.writes.pop(slot, None)
            else:
                self.writes[slot] = write
        self._undo = None

    def values(self, table: str) -> Iterator[tuple[str, Any]]:
        """Every present piece of ``table`` this ledger holds (the batch fold's result)."""
        for (name, key), value in self._values.items():
            if name == table and value is not None:
                yield key, value


# ---- the rules ---------------------------------------------------------------------


@dataclass(frozen=True)
class Incoming:
    """One event and what the rules need to know about where it came from."""

    event: Event
    here: Position  # its message in the source log
    arrived_ms: int
    category: str | None  # its consent category; None: no consent applies
    sample_rate: float


class Verdict(Enum):
    APPLIED = "applied"
    REDELIVERED = "redelivered"  # the same message again after a crash: same outputs
    DUPLICATE = "duplicates"
    SAMPLED_OUT = "sampled_out"
    CONSENT_WITHHELD = "consent_filtered"
    ERASED = "erased"  # a late copy of an erased learner's event


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    derived: tuple[Derived, ...] = ()
    touched: Needs | None = None  # the learner pieces it changed (for snapshots)

    @property
    def kept(self) -> bool:
        """It goes on to events.clean (and, with a learner, to the fold)."""
        return self.verdict in (Verdict.APPLIED, Verdict.REDELIVERED)


@dataclass(frozen=True)
class Rulebook:
    # Live: keep each batch's derived events, so a redelivered message sends its own
    # outputs again. The batch fold never sees a message twice.
    remember_outputs: bool = True

    def step(self, ledger: Ledger, incoming: Incoming) -> Outcome:
        event, here = incoming.event, incoming.here
        user = event.user_id
        if user is not None:
            erasure: Erasure | None = ledger.get(ERASED, user)
            if erasure is not None and erased_before(erasure.at_ms, event.timestamp):
                return Outcome(Verdict.ERASED)
        seen: FirstSeen | None = ledger.get(SEEN, event.event_id)
        found = classify(None if seen is None else Position(seen.partition, seen.offset), here)
        if found is Seen.DUPLICATE:
            return Outcome(Verdict.DUPLICATE)
        if found is Seen.FIRST_TIME:
            first = FirstSeen(here.partition, here.offset, incoming.arrived_ms, user)
            ledger.put(SEEN, event.event_id, first, here.partition)
        else:  # redelivered: written again (the module docstring says why)
            ledger.put(SEEN, event.event_id, seen, here.partition)
        if not keeps(event.event_id, incoming.sample_rate):
            return Outcome(Verdict.SAMPLED_OUT)
        verdict = Verdict.APPLIED if found is Seen.FIRST_TIME else Verdict.REDELIVERED
        if user is None:
            return Outcome(verdict)
        consent: dict[str, bool] = ledger.get(CONSENT, user) or {}
        if event.event_type == CONSENT_EVENT:
            ledger.put(CONSENT, user, updated_consent(consent, event.properties), here.partition)
        if incoming.category is not None and not allowed(
            consent, event.event_type, incoming.category
        ):
            return Outcome(Verdict.CONSENT_WITHHELD)
        derived, touched = self._fold(ledger, event, user, here)
        return Outcome(verdict, derived, touched)

    def _fold(
        self, ledger: Ledger, event: Event, user: str, here: Position
    ) -> tuple[tuple[Derived, ...], Needs]:
        entry: LearnerEntry | None = ledger.get(LEARNER, user)
        wanted = needs(event)
        if entry is not None and already_applied(Position(*entry.applied), here):
            # redelivered after its state was written: its own outputs again, if they
            # may not have gone out (older batches' did before the next one began), and
            # the state it touched written again (the module docstring says why)
            self._write_again(ledger, user, entry, wanted, here.partition)
            return tuple(entry.pending.get(here.offset, ())), wanted
        topic_key = None if wanted.topic is None else piece_key(user, wanted.topic)
        course_key = None if wanted.course is None else piece_key(user, wanted.course)
        before = Pieces(
            Summary() if entry is None else entry.summary,
            None if topic_key is None else ledger.get(TOPIC, topic_key),
            None if course_key is None else ledger.get(COURSE, course_key),
            ledger.get(DRILLS, user) if wanted.drills else None,
        )
        after, derived = step(before, event, wanted)
        pending: dict[int, list[Derived]] = {}
        if self.remember_outputs:
            if entry is not None and ledger.written(LEARNER, user):  # earlier in this batch
                pending = dict(entry.pending)
            pending[here.offset] = derived
        partition = here.partition
        ledger.put(
            LEARNER, user, LearnerEntry(after.summary, (partition, here.offset), pending), partition
        )
        if topic_key is not None:
            ledger.put(TOPIC, topic_key, after.topic, partition)
        if course_key is not None and after.course != before.course:
            ledger.put(COURSE, course_key, after.course, partition)
        if wanted.drills:
            ledger.put(DRILLS, user, after.drills, partition)
        return tuple(derived), wanted

    @staticmethod
    def _write_again(
        ledger: Ledger, user: str, entry: LearnerEntry, wanted: Needs, partition: int
    ) -> None:
        """Write the current value of every piece a message of ``user`` touches."""
        ledger.put(LEARNER, user, entry, partition)
        pieces = [
            (TOPIC, None if wanted.topic is None else piece_key(user, wanted.topic)),
            (COURSE, None if wanted.course is None else piece_key(user, wanted.course)),
            (DRILLS, user if wanted.drills else None),
        ]
        for table, key in pieces:
            if key is not None:
                value = ledger.get(table, key)
                if value is not None:
                    ledger.put(table, key, value, partition)
