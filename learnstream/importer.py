"""``learnstream import FILE|-``: historical events into the running pipeline.

Records go through the collector's batch API (``POST /v1/events/batch``), the door every
live event takes: the same validation, write-key binding, enrichment and durable publish
(202 only after Kafka acknowledged every accepted event). So an import is a client like
any app, and a batch re-sent after an interruption is safe for the reason a re-posted
batch is: the processors drop a repeated event_id within the dedup window and the sink
stores each event_id once.

Resumable: one batch is in flight at a time, and after its 202 the state file
(``FILE.import-state``) records the number of the last record the collector answered
for, with the size the rejects file had then. A run that finds the state skips what was
answered, cuts the rejects file back to that size (a batch answered but not recorded
is sent again and would otherwise be listed twice) and goes on.

Event time as it would have been live. The collector corrects a device's clock by
``received_at - sent_at``; given a historical event's ``sent_at`` today, it would take
the event's age for clock skew and move it to now. So ``sent_at`` never reaches the
collector: when a record carries its historical ``received_at`` the correction and the
range check run here, against that receipt, with the collector's own code
(``schemas.event_time``); without one the timestamp is taken as it is.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Literal, cast

import httpx
from tqdm import tqdm

from schemas.catalog import EventCatalog, Schema
from schemas.event_time import EventTime, event_time
from schemas.validation import parse_timestamp

Format = Literal["jsonl", "csv", "parquet"]
FORMATS: tuple[Format, ...] = ("jsonl", "csv", "parquet")
# The collector's limits (collector.app): 500 events and 5 MB a batch; a margin for the
# wrapper keeps a full batch under the byte limit.
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 4_500_000
# Envelope fields only the collector sets. A record exported from a learnstream (or
# another pipeline) may hold them; received_at is read for the time rules, the rest
# would only be refused ("is set by the server").
SERVER_OWNED = ("received_at", "original_timestamp", "client_ip", "sample_rate", "category")
GZIP_MAGIC = b"\x1f\x8b"


class ImportFailed(Exception):
    """The import cannot go on (the collector refuses the requests, or stays down)."""


# --- the collector's batch API --------------------------------------------------------


@dataclass(frozen=True)
class Refused:
    """One event the collector refused: its index in the batch and the reasons."""

    index: int
    errors: tuple[dict[str, str], ...]


class BatchPoster:
    """Posts batches to the collector; retries only what the collector says to retry
    (503, or no answer), with backoff, for at most ``retry_for_s``."""

    def __init__(
        self, collector_url: str, write_key: str | None, retry_for_s: float = 300.0
    ) -> None:
        headers = {"content-type": "application/json"}
        if write_key:
            headers["authorization"] = f"Bearer {write_key}"
        self._client = httpx.Client(base_url=collector_url, headers=headers, timeout=60)
        self._retry_for_s = retry_for_s

    def close(self) -> None:
        self._client.close()

    def post(self, events: list[dict[str, Any]]) -> list[Refused]:
        """Post one batch; the refused events, once the collector answered 202."""
        # ASCII JSON: text the collector refuses (a lone surrogate) is refused for its own
        # event, with a reason, rather than failing the whole batch here
        body = json.dumps({"events": events}).encode()
        deadline = time.monotonic() + self._retry_for_s
        pause = 0.5
        while True:
            try:
                response = self._client.post("/v1/events/batch", content=body)
            except httpx.TransportError as exc:
                problem = f"the collector did not answer: {exc!r}"
            else:
                if response.status_code == 202:
                    answer = response.json()
                    return [
                        Refused(int(r["index"]), tuple(r.get("errors") or ()))
                        for r in answer.get("rejected", ())
                    ]
                if response.status_code != 503:  # 4xx: final, a resend cannot help
                    raise ImportFailed(
                        f"the collector refused the batch ({response.status_code}): "
                        f"{response.text.strip()[:500]}"
                    )
                problem = f"the collector could not store it now (503): {response.text[:200]}"
            if time.monotonic() + pause > deadline:
                raise ImportFailed(f"{problem}; gave up after {self._retry_for_s:g} s")
            time.sleep(pause)
            pause = min(pause * 2, 10.0)


def chunks(events: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Batches within the collector's limits of events and bytes."""
    batch: list[dict[str, Any]] = []
    size = 0
    for event in events:
        length = len(json.dumps(event))
        if batch and (len(batch) == MAX_BATCH_EVENTS or size + length > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(event)
        size += length + 1
    if batch:
        yield batch


# --- records from files ---------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One line or row: its number (from 1), the event read from it or why none could
    be, and what to write to the rejects file if it is refused."""

    number: int
    event: dict[str, Any] | None
    problem: str | None
    original: Any


def detect_format(name: str) -> Format:
    stem = name[:-3] if name.endswith(".gz") else name
    suffix = stem.rsplit(".", 1)[-1].lower() if "." in stem else ""
    found: dict[str, Format] = {
        "jsonl": "jsonl",
        "ndjson": "jsonl",
        "json": "jsonl",
        "csv": "csv",
        "parquet": "parquet",
        "pq": "parquet",
    }
    if suffix not in found:
        raise ImportFailed(
            f"cannot tell the format of {name!r} from its name; pass --format "
            f"({', '.join(FORMATS)})"
        )
    return found[suffix]


def open_input(source: str) -> tuple[IO[bytes], IO[bytes]]:
    """(stream of the records' bytes, the underlying file), gunzipped when the bytes
    start with gzip's magic number, whatever the name says."""
    raw: IO[bytes]
    if source == "-":
        raw = sys.stdin.buffer
        head = sys.stdin.buffer.peek(2)[:2] if hasattr(sys.stdin.buffer, "peek") else b""
    else:
        raw = open(source, "rb")  # noqa: SIM115 - closed by the caller, with the stream
        head = raw.read(2)
        raw.seek(0)
    if head == GZIP_MAGIC:
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")), raw
    return raw, raw


def _jsonl(stream: IO[bytes]) -> Iterator[tuple[int, Any, str | None, Any]]:
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
    try:
        for number, line in enumerate(text, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                yield number, json.loads(line), None, line
            except ValueError as exc:
                yield number, None, f"not JSON: {exc}", line
    finally:
        text.detach()  # a wrapper closes the file it wraps when it goes; the caller owns it


def _csv(stream: IO[bytes]) -> Iterator[tuple[int, Any, str | None, Any]]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    try:
        for number, row in enumerate(csv.DictReader(text), start=1):
            if None in row:  # more cells than the header has names
                yield number, None, "has more cells than the header has columns", row
                continue
            yield number, dict(row), None, row
    finally:
        text.detach()  # as in _jsonl


def _plain(value: Any) -> Any:
    """A Parquet cell as JSON takes it: times as ISO 8601 in UTC (a zone-less time is
    taken as UTC), decimals as numbers, nested values item by item."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        # pyarrow gives a map column as [(key, value), ...]
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return {str(k): _plain(v) for k, v in value}
        return [_plain(v) for v in value]
    return value


def _parquet(stream: IO[bytes]) -> Iterator[tuple[int, Any, str | None, Any]]:
    import pyarrow.parquet as pq  # comes with chdb; only Parquet imports need it

    data = stream if stream.seekable() else io.BytesIO(stream.read())
    number = 0
    for batch in pq.ParquetFile(data).iter_batches(batch_size=MAX_BATCH_EVENTS):
        for row in batch.to_pylist():
            number += 1
            plain = {str(k): _plain(v) for k, v in row.items()}
            yield number, plain, None, plain


def parquet_rows(source: str) -> int | None:
    """How many rows a Parquet file has (for the progress bar), if it is a plain file."""
    if source == "-":
        return None
    import pyarrow.parquet as pq

    with open(source, "rb") as raw:
        if raw.read(2) == GZIP_MAGIC:
            return None
    return int(pq.ParquetFile(source).metadata.num_rows)


# --- cells to an event ------------------------------------------------------------------


def _nested(cells: Mapping[str, Any]) -> dict[str, Any]:
    """Flat cells to an object: ``properties.score`` goes into ``properties``; empty
    cells (CSV) and nulls (Parquet) are left out, as an absent field."""
    event: dict[str, Any] = {}
    for name, value in cells.items():
        if value is None or value == "":
            continue
        *parents, leaf = name.split(".")
        here = event
        for parent in parents:
            inner = here.setdefault(parent, {})
            if not isinstance(inner, dict):
                raise ValueError(f"column {name!r} goes inside {parent!r}, which has a value")
            here = inner
        if leaf in here:
            raise ValueError(f"column {name!r} is given twice")
        here[leaf] = value
    return event


def _branch(spec_type: Any) -> Any:
    """The non-null type of an optional field."""
    if isinstance(spec_type, list):
        others = [t for t in spec_type if t != "null"]
        return others[0] if len(others) == 1 else others
    return spec_type


def _typed(text: str, field_spec: Schema, schema_type: Any) -> Any:
    """A text cell as the value the field's type takes; text that is not one is left
    as it is, for validation to explain with the field's name."""
    kind = schema_type.get("type") if isinstance(schema_type, dict) else schema_type
    if field_spec.get("ls.json") or kind in ("record", "map", "array"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    if isinstance(schema_type, dict) and schema_type.get("logicalType"):
        return text  # timestamps and UUIDs travel as text
    if kind in ("int", "long"):
        try:
            return int(text)
        except ValueError:
            return text
    if kind in ("float", "double"):
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    if kind == "boolean":
        lowered = text.strip().lower()
        return {"true": True, "false": False, "1": True, "0": False}.get(lowered, text)
    return text


def _coerced(record: Schema, value: dict[str, Any]) -> dict[str, Any]:
    """Text cells turned into the types the record's fields (or their aliases) take."""
    specs: dict[str, Schema] = {}
    for spec in record["fields"]:
        for spelling in (spec["name"], *spec.get("aliases", ())):
            specs.setdefault(spelling, spec)
    out: dict[str, Any] = {}
    for key, item in value.items():
        spec = specs.get(key)
        if spec is None:
            out[key] = item  # unknown: validation names it
            continue
        schema_type = _branch(spec["type"])
        if isinstance(item, str):
            item = _typed(item, spec, schema_type)
        nested_record = isinstance(schema_type, dict) and schema_type.get("type") == "record"
        if isinstance(item, dict) and nested_record and not spec.get("ls.json"):
            item = _coerced(schema_type, item)
        out[key] = item
    return out


def event_from_cells(catalog: EventCatalog, cells: Mapping[str, Any]) -> dict[str, Any]:
    """A CSV row or Parquet row as the collector's JSON event: dotted columns nested,
    JSON text in object columns parsed, and text cells typed by the event type's schema
    (``"84.5"`` for a score is 84.5, ``"42"`` for a content id stays text)."""
    event = _nested(cells)
    name = event.get("event_type")
    event_type = catalog.resolve(name) if isinstance(name, str) else None
    if event_type is None:
        return event  # validation explains the event type
    return _coerced(event_type.schema, event)


# --- event time -------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def as_live(event: dict[str, Any], tolerance: timedelta) -> dict[str, Any] | str:
    """The event to send now so that it gets the event time it would have got live, or
    why live would have refused it.

    With its historical ``received_at`` and ``sent_at``: corrected for the device's
    clock and range-checked against that receipt, by ``schemas.event_time``. Without a
    receipt time, the timestamp as it is. Either way ``sent_at`` is not sent (unless it
    is not a timestamp, which the collector then explains), nor are fields only the
    collector sets."""
    out = {k: v for k, v in event.items() if k not in SERVER_OWNED}
    received = _moment(event.get("received_at"))
    sent = _moment(out.get("sent_at"))
    if out.get("sent_at") is not None and sent is None:
        return out
    out.pop("sent_at", None)
    timestamp = _moment(out.get("timestamp"))
    if received is None or timestamp is None:
        return out
    when = event_time(timestamp, sent, received, tolerance)
    if not isinstance(when, EventTime):
        return f"{when.field}: {when.message} (received at {_iso(received)})"
    out["timestamp"] = _iso(when.timestamp)
    return out


# --- state and rejects -----------------------------------------------------------------


def reason_of(errors: Any) -> str:
    """The reason a refusal is counted under: its first error, with the values taken out
    (``properties.score: must be <= 100, got 150.0`` counts as ``…got N``)."""
    if isinstance(errors, str):
        first = errors
    elif errors:
        error = errors[0]
        first = f"{error.get('field', '?')}: {error.get('message', '')}"
    else:
        first = "refused"
    first = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", first)
    return re.sub(r"-?\d+(\.\d+)?", "N", first)[:200]


def fingerprint(source: str) -> dict[str, Any]:
    """What tells a file from another: its size and the SHA-256 of its first 1 MiB.
    Standard input has none; its state file is the caller's choice."""
    if source == "-":
        return {"stdin": True}
    with open(source, "rb") as raw:
        head = raw.read(2**20)
    return {"size": os.path.getsize(source), "head_sha256": hashlib.sha256(head).hexdigest()}


@dataclass
class ImportState:
    """What a run has had answered, as the state file holds it."""

    fingerprint: dict[str, Any]
    done_through: int = 0  # the last record the collector answered for
    accepted: int = 0
    rejected: int = 0
    rejects_bytes: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    complete: bool = False

    def save(self, path: Path) -> None:
        """Atomically: a crash leaves the old state or the new one, never half."""
        temporary = path.with_name(path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as out:
            json.dump(
                {
                    "fingerprint": self.fingerprint,
                    "done_through": self.done_through,
                    "accepted": self.accepted,
                    "rejected": self.rejected,
                    "rejects_bytes": self.rejects_bytes,
                    "reasons": dict(self.reasons),
                    "complete": self.complete,
                },
                out,
                indent=1,
            )
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path) -> ImportState:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            fingerprint=data["fingerprint"],
            done_through=int(data["done_through"]),
            accepted=int(data["accepted"]),
            rejected=int(data["rejected"]),
            rejects_bytes=int(data["rejects_bytes"]),
            reasons=Counter(data.get("reasons", {})),
            complete=bool(data.get("complete", False)),
        )


# --- the import -----------------------------------------------------------------------


@dataclass(frozen=True)
class ImportOptions:
    source: str  # a path, or "-" for standard input
    fmt: Format
    state_path: Path
    rejects_path: Path
    batch_size: int = MAX_BATCH_EVENTS
    rate: float | None = None  # events per second at most
    progress: bool | None = None  # None: a bar when stderr is a terminal


def _records(
    catalog: EventCatalog, stream: IO[bytes], fmt: Format, tolerance: timedelta
) -> Iterator[Record]:
    read = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}[fmt]
    for number, value, problem, original in read(stream):
        if problem is not None:
            yield Record(number, None, problem, original)
            continue
        if not isinstance(value, dict):
            yield Record(number, None, "not a JSON object", original)
            continue
        try:
            event = value if fmt == "jsonl" else event_from_cells(catalog, value)
        except ValueError as exc:
            yield Record(number, None, str(exc), original)
            continue
        timed = as_live(event, tolerance)
        if isinstance(timed, str):
            yield Record(number, None, timed, original)
        elif len(json.dumps(timed)) > MAX_BATCH_BYTES:  # no batch could carry it
            yield Record(number, None, f"is over {MAX_BATCH_BYTES} bytes as JSON", original)
        else:
            yield Record(number, timed, None, original)


class _Run:
    """One run of an import: batches out, answers into the state and rejects file."""

    def __init__(
        self, options: ImportOptions, state: ImportState, poster: BatchPoster, bar: Any
    ) -> None:
        self.options = options
        self.state = state
        self.poster = poster
        self.bar = bar
        self.started = time.monotonic()
        self.sent_this_run = 0

    def finish_batch(self, records: list[Record], rejects: IO[str]) -> None:
        events = [r for r in records if r.event is not None]
        refused: dict[int, tuple[dict[str, str], ...]] = {}
        offset = 0
        for batch in chunks([r.event for r in events if r.event is not None]):
            for refusal in self.poster.post(batch):
                refused[offset + refusal.index] = refusal.errors
            offset += len(batch)
        self.state.accepted += len(events) - len(refused)
        refused_by_number = {events[i].number: errors for i, errors in refused.items()}
        for record in records:
            errors: Any
            if record.problem is not None:
                errors = record.problem
            elif record.number in refused_by_number:
                errors = list(refused_by_number[record.number])
            else:
                continue
            self.state.rejected += 1
            self.state.reasons[reason_of(errors)] += 1
            line = {"number": record.number, "errors": errors, "record": record.original}
            rejects.write(json.dumps(line, default=str) + "\n")  # ASCII: any text survives
        rejects.flush()
        os.fsync(rejects.fileno())
        self.state.rejects_bytes = rejects.tell()
        self.state.done_through = records[-1].number
        self.state.save(self.options.state_path)  # only now is the batch done
        self.sent_this_run += len(events)
        self.bar.set_postfix(accepted=self.state.accepted, rejected=self.state.rejected)
        self._keep_rate()

    def _keep_rate(self) -> None:
        if self.options.rate:
            ahead = self.sent_this_run / self.options.rate - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)


def _state_for(options: ImportOptions) -> ImportState:
    found = fingerprint(options.source)
    if not options.state_path.exists():
        return ImportState(found)
    state = ImportState.load(options.state_path)
    if state.fingerprint != found:
        raise ImportFailed(
            f"{options.state_path} is the state of another file (its size or first MiB "
            "differ); delete it to import this file from its start"
        )
    return state


def run_import(
    options: ImportOptions, catalog: EventCatalog, poster: BatchPoster, tolerance: timedelta
) -> ImportState:
    """Import what the state does not show as done; the state at the end."""
    state = _state_for(options)
    if state.complete:
        return state
    stream, raw = open_input(options.source)
    total = None
    if options.source != "-":
        total = parquet_rows(options.source) if options.fmt == "parquet" else None
    by_bytes = options.source != "-" and options.fmt != "parquet"
    with (
        stream,
        raw,
        open(options.rejects_path, "a+", encoding="utf-8") as rejects,
        tqdm(
            total=os.path.getsize(options.source) if by_bytes else total,
            unit="B" if by_bytes else " events",
            unit_scale=by_bytes,
            disable=None if options.progress is None else not options.progress,
            desc="import",
        ) as bar,
    ):
        rejects.truncate(state.rejects_bytes)  # lines of a batch answered, not recorded
        rejects.seek(state.rejects_bytes)
        run = _Run(options, state, poster, bar)
        pending: list[Record] = []
        events = 0

        def flush() -> None:
            run.finish_batch(pending, rejects)
            bar.update(raw.tell() - bar.n if by_bytes else len(pending))
            pending.clear()

        for record in _records(catalog, stream, options.fmt, tolerance):
            if record.number <= state.done_through:
                continue  # answered in an earlier run
            pending.append(record)
            events += record.event is not None
            if events >= options.batch_size:
                flush()
                events = 0
        if pending:
            flush()
        state.complete = True
        state.save(options.state_path)
    return state


def summary(state: ImportState, rejects_path: Path) -> str:
    lines = [f"accepted {state.accepted} events, rejected {state.rejected}"]
    if state.rejected:
        lines.append(f"rejected records, with their reasons: {rejects_path}")
        for reason, count in state.reasons.most_common():
            lines.append(f"  {count:>8}  {reason}")
    return "\n".join(lines)
