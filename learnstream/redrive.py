"""``learnstream redrive``: dead letters back through validation after a fix.

What a dead letter holds (``learnstream.dead_letters``, table ``events_invalid``): the
input exactly as the collector received it (``raw``: a single post's body, or one event
of a batch as the client sent it), why it was refused, when (``received_at``) and with
which write key (``key_id``, a name, never the key). So the original event is recoverable
from every collector letter, except:

- a raw input over 512 KiB, kept only in part (it does not parse and is reported so);
- a batch event's batch-level ``sent_at``, which the letter does not keep: such an
  event is redriven without clock-skew correction (its own ``sent_at`` is kept).

Letters of later stages (``source`` other than ``collector``: processors, sink) hold
Avro records or table rows, not client input; they need a code fix and a replay, so
they are counted and left alone.

The path: letters are read with SQL through the sink's read API (with embedded chdb the
running sink holds the data folder; with the sink stopped the CLI opens it directly),
judged here with the project's validation as of their original receipt, and the ones
that validate now are posted to the collector's batch API, which validates them again
(the verdict that counts), enriches them and answers 202 only after Kafka acknowledged.

Exactly once by event_id: an event already in ``events`` is not sent; the same event_id
twice in one run is sent once; and an event sent again before it was stored (two redrives
close together) is dropped by the processors' dedup window and by the sink, which stores
each event_id once.

Event time: the letter's own receipt time stands in for "now" in the time rules (clock
correction by ``received_at - sent_at`` and the 24 h future bound), as they ran live; the
corrected timestamp is sent and ``sent_at`` is not, so today's collector does not take
the event's age for clock skew.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from tqdm import tqdm

from learnstream.importer import BatchPoster, chunks
from schemas.catalog import EventCatalog, lower_camel
from schemas.validation import Accepted, validate_event

Query = Callable[[str], tuple[list[str], list[list[Any]]]]
PAGE = 100  # letters per query; a raw input is at most 512 KiB, the result limit 64 MiB


class Verdict(StrEnum):
    SENT = "sent"  # the collector accepted it: Kafka acknowledged it
    WOULD_SEND = "would_send"  # dry run: valid now and not stored yet
    STILL_INVALID = "still_invalid"  # today's validation refuses it too
    REFUSED = "refused"  # valid here, refused by the collector (e.g. write key binding)
    ALREADY_STORED = "already_stored"  # its event_id is in events
    REPEATED = "repeated"  # its event_id came earlier in this run
    NOT_AN_EVENT = "not_an_event"  # the raw input is no JSON event (or was cut at 512 KiB)
    NO_EVENT_ID = "no_event_id"  # without an id it cannot be sent exactly once


@dataclass(frozen=True)
class Filters:
    event_types: frozenset[str] = frozenset()  # stored names; empty: every type
    since: datetime | None = None  # received_at >= since
    until: datetime | None = None  # received_at < until
    error_contains: str | None = None  # in the errors' JSON, case-insensitively
    key_id: str | None = None


@dataclass(frozen=True)
class Letter:
    letter_id: str
    received_at: datetime
    key_id: str
    raw: str
    errors: str


@dataclass(frozen=True)
class Item:
    """One event of a letter and what the redrive did or would do with it."""

    letter_id: str
    received_at: datetime
    event_id: str | None
    event_type: str | None
    verdict: Verdict
    errors: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "letter_id": self.letter_id,
            "received_at": self.received_at.isoformat(),
            "event_id": self.event_id,
            "event_type": self.event_type,
            "verdict": str(self.verdict),
            "errors": list(self.errors),
        }


@dataclass
class Report:
    dry_run: bool
    letters: int = 0
    other_stages: int = 0  # letters of processors or the sink, not redrivable here
    items: list[Item] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        return Counter(str(item.verdict) for item in self.items)

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "letters": self.letters,
            "other_stages": self.other_stages,
            "counts": dict(self.counts()),
            "items": [item.as_json() for item in self.items],
        }

    def text(self) -> str:
        lines = []
        for item in self.items:
            why = f"  {item.errors[0]}" if item.errors else ""
            lines.append(
                f"{item.verdict:<15} {item.event_type or '-':<24} {item.event_id or '-':<36} "
                f"letter {item.letter_id} ({item.received_at:%Y-%m-%d %H:%M:%S}){why}"
            )
        mode = "dry run: nothing sent" if self.dry_run else "redrive"
        counts = ", ".join(f"{n} {v}" for v, n in sorted(self.counts().items())) or "no events"
        lines.append(f"{mode}: {self.letters} letters; {counts}")
        if self.other_stages:
            lines.append(
                f"{self.other_stages} matching letters come from the processors or the sink "
                "(Avro records or rows, not client input): not redriven"
            )
        return "\n".join(lines)


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _moment(when: datetime) -> str:
    return (
        f"toDateTime64({_literal(when.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f'))}, 3, 'UTC')"
    )


def conditions(filters: Filters, catalog: EventCatalog) -> list[str]:
    """The WHERE conditions of a filter, every value a quoted literal."""
    where = []
    if filters.since is not None:
        where.append(f"received_at >= {_moment(filters.since)}")
    if filters.until is not None:
        where.append(f"received_at < {_moment(filters.until)}")
    if filters.error_contains:
        where.append(f"positionCaseInsensitiveUTF8(errors, {_literal(filters.error_contains)}) > 0")
    if filters.key_id is not None:
        where.append(f"key_id = {_literal(filters.key_id)}")
    if filters.event_types:
        # an event's type is read from its raw input (under any of its names); a letter
        # of a whole batch body (refused before its events were looked at) may hold any
        names = {
            spelling
            for spelling in _all_names(catalog)
            if (found := catalog.resolve(spelling)) and found.name in filters.event_types
        }
        listed = ", ".join(_literal(n) for n in sorted(names))
        where.append(
            f"(JSONExtractString(raw, 'event_type') IN ({listed}) OR JSONHas(raw, 'events'))"
        )
    return where


def _all_names(catalog: EventCatalog) -> Iterator[str]:
    for name in catalog:
        yield name
        yield lower_camel(name)
        yield from catalog[name].aliases


def _pages(query: Query, where: list[str]) -> Iterator[list[Letter]]:
    """Letters in (received_at, letter_id) order, a page at a time (keyset paging)."""
    after: tuple[str, str] | None = None
    while True:
        page_where = list(where)
        if after is not None:
            page_where.append(
                f"(toString(received_at), letter_id) > ({_literal(after[0])}, {_literal(after[1])})"
            )
        sql = (
            "SELECT letter_id, toString(received_at) AS received, key_id, raw, errors "
            "FROM events_invalid WHERE " + " AND ".join(page_where) + " "
            "ORDER BY received, letter_id LIMIT 1 BY letter_id LIMIT " + str(PAGE)
        )
        _, rows = query(sql)
        if not rows:
            return
        yield [
            Letter(
                str(r[0]),
                datetime.fromisoformat(str(r[1])).replace(tzinfo=UTC),
                str(r[2]),
                str(r[3]),
                str(r[4]),
            )
            for r in rows
        ]
        last = rows[-1]
        after = (str(last[1]), str(last[0]))
        if len(rows) < PAGE:
            return


def events_of(letter: Letter) -> list[dict[str, Any]] | None:
    """The events a letter's raw input holds: one event, or each event of a whole batch
    body (refused as a whole, e.g. for its write key) with the batch's sent_at."""
    try:
        value = json.loads(letter.raw)
    except ValueError:
        return None
    if (
        isinstance(value, dict)
        and "event_type" not in value
        and isinstance(value.get("events"), list)
    ):
        sent_at = value.get("sent_at")
        found = []
        for event in value["events"]:
            if not isinstance(event, dict):
                return None
            if sent_at is not None and "sent_at" not in event:
                event = {**event, "sent_at": sent_at}
            found.append(event)
        return found
    return [value] if isinstance(value, dict) else None


def _errors(result: Any) -> tuple[str, ...]:
    return tuple(f"{e.field}: {e.message}" for e in result.errors)


def _to_send(payload: dict[str, Any], accepted: Accepted) -> dict[str, Any]:
    """The event as its app sent it, with the event time it got at its receipt and
    without sent_at (see the module's doc)."""
    event = {k: v for k, v in payload.items() if k != "sent_at"}
    moment: datetime = accepted.datum["timestamp"]
    event["timestamp"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return event


@dataclass
class _Candidate:
    letter: Letter
    event_id: str
    event_type: str
    event: dict[str, Any]


class Redrive:
    def __init__(
        self,
        query: Query,
        catalog: EventCatalog,
        tolerance: timedelta,
        poster: BatchPoster | None,  # None: a dry run
    ) -> None:
        self._query = query
        self._catalog = catalog
        self._tolerance = tolerance
        self._poster = poster
        self._seen: set[str] = set()

    def count(self, where: Sequence[str]) -> int:
        _, rows = self._query("SELECT count() FROM events_invalid WHERE " + " AND ".join(where))
        return int(rows[0][0])

    def run(self, filters: Filters, progress: bool | None = None) -> Report:
        where = conditions(filters, self._catalog)
        report = Report(dry_run=self._poster is None)
        report.other_stages = self.count([*where, "source != 'collector'"])
        mine = [*where, "source = 'collector'"]
        with tqdm(
            total=self.count(mine),
            unit=" letters",
            desc="redrive",
            disable=None if progress is None else not progress,
        ) as bar:
            for page in _pages(self._query, mine):
                report.letters += len(page)
                report.items.extend(self._page(page, filters))
                bar.update(len(page))
        return report

    def _page(self, letters: list[Letter], filters: Filters) -> list[Item]:
        items: list[Item] = []
        candidates: list[_Candidate] = []
        for letter in letters:
            events = events_of(letter)
            if events is None:
                items.append(
                    Item(letter.letter_id, letter.received_at, None, None, Verdict.NOT_AN_EVENT)
                )
                continue
            for payload in events:
                judged = self._judge(letter, payload, filters)
                if isinstance(judged, _Candidate):
                    candidates.append(judged)
                elif judged is not None:
                    items.append(judged)
        stored = self._stored([c.event_id for c in candidates])
        to_send = []
        for c in candidates:
            if c.event_id in stored:
                items.append(self._item(c, Verdict.ALREADY_STORED))
            else:
                to_send.append(c)
        items.extend(self._send(to_send))
        return items

    def _judge(
        self, letter: Letter, payload: dict[str, Any], filters: Filters
    ) -> _Candidate | Item | None:
        name = payload.get("event_type")
        found = self._catalog.resolve(name) if isinstance(name, str) else None
        type_name = found.name if found else (name if isinstance(name, str) else None)
        if filters.event_types and type_name not in filters.event_types:
            return None  # another type in a batch body's letter
        raw_id = payload.get("event_id")
        try:
            event_id = str(uuid.UUID(raw_id)) if isinstance(raw_id, str) else None
        except ValueError:
            event_id = None
        outcome = validate_event(self._catalog, payload, letter.received_at, self._tolerance)
        if not isinstance(outcome, Accepted):
            shown = raw_id if isinstance(raw_id, str) else None
            return Item(
                letter.letter_id,
                letter.received_at,
                shown,
                type_name,
                Verdict.STILL_INVALID,
                _errors(outcome),
            )
        if event_id is None:
            return Item(letter.letter_id, letter.received_at, None, type_name, Verdict.NO_EVENT_ID)
        if event_id in self._seen:
            return Item(letter.letter_id, letter.received_at, event_id, type_name, Verdict.REPEATED)
        self._seen.add(event_id)
        return _Candidate(letter, event_id, outcome.event_type.name, _to_send(payload, outcome))

    def _stored(self, event_ids: list[str]) -> set[str]:
        """Which of these event_ids ``events`` holds, asked a thousand at a time."""
        found: set[str] = set()
        for start in range(0, len(event_ids), 1000):
            listed = ", ".join(f"toUUID({_literal(i)})" for i in event_ids[start : start + 1000])
            _, rows = self._query(
                f"SELECT DISTINCT toString(event_id) FROM events WHERE event_id IN ({listed})"
            )
            found.update(str(r[0]) for r in rows)
        return found

    @staticmethod
    def _item(c: _Candidate, verdict: Verdict, errors: tuple[str, ...] = ()) -> Item:
        return Item(
            c.letter.letter_id, c.letter.received_at, c.event_id, c.event_type, verdict, errors
        )

    def _send(self, candidates: list[_Candidate]) -> list[Item]:
        if self._poster is None:
            return [self._item(c, Verdict.WOULD_SEND) for c in candidates]
        items = []
        offset = 0
        for batch in chunks([c.event for c in candidates]):
            refused = {r.index: r.errors for r in self._poster.post(batch)}
            for index in range(len(batch)):
                c = candidates[offset + index]
                if index in refused:
                    errors = tuple(f"{e.get('field')}: {e.get('message')}" for e in refused[index])
                    items.append(self._item(c, Verdict.REFUSED, errors))
                else:
                    items.append(self._item(c, Verdict.SENT))
            offset += len(batch)
        return items
