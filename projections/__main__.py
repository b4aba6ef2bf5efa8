"""``python -m projections fold --input EVENTS.jsonl [--as-of ISO8601] [--environment ENV]``

Reads envelope events (the collector's JSON shape), one per line, in log order, and
prints every learner's projected state as one JSON document. The default --as-of is
the latest event timestamp in the file. Lines that are not JSON or lack event_id,
event_type, timestamp or user_id are reported on stderr with their line number and
skipped; nothing else is checked, since the input is already-accepted events.
This command's input and output are a stable contract.

Events go through the live processors' rulebook (``projections.rulebook``): duplicates,
sampling (the event catalogue's classes, for ``--environment``, default
``LEARNSTREAM_ENVIRONMENT`` or development) and consent withdrawals count exactly as
they do live. Other names of an event type (its aliases) are read as the type itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any, TextIO

from projections.events import Event, parse_instant
from projections.fold import fold_log
from projections.learner import LearnerState, summary
from projections.policy import catalog_policy
from schemas.catalog import EventCatalog

ENVIRONMENTS = ("development", "staging", "production")

REQUIRED = ("event_id", "event_type", "timestamp", "user_id")


def canonical(event: Event, catalog: EventCatalog) -> Event:
    kind = catalog.resolve(event.event_type)
    if kind is None or kind.name == event.event_type:
        return event
    return Event(
        event.event_id, kind.name, event.timestamp, event.user_id, event.timezone, event.properties
    )


def read_events(lines: IO[str], errors: TextIO) -> Iterator[Event]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            envelope = json.loads(line)
        except ValueError as exc:
            print(f"line {number}: not JSON ({exc}); skipped", file=errors)
            continue
        if not isinstance(envelope, dict):
            print(f"line {number}: not a JSON object; skipped", file=errors)
            continue
        missing = [name for name in REQUIRED if envelope.get(name) in (None, "")]
        if missing:
            print(f"line {number}: missing {', '.join(missing)}; skipped", file=errors)
            continue
        try:
            yield Event.from_envelope(envelope)
        except (ValueError, TypeError) as exc:
            print(f"line {number}: unreadable timestamp ({exc}); skipped", file=errors)


def fold_file(
    lines: IO[str], as_of: datetime | None, errors: TextIO, environment: str = "development"
) -> dict[str, Any]:
    catalog = EventCatalog.load()
    events = [canonical(event, catalog) for event in read_events(lines, errors)]
    result = fold_log(events, catalog_policy(catalog, environment))
    if as_of is None and events:
        as_of = max(event.timestamp for event in events)
    users = {
        # a learner whose every event was filtered out is there, with nothing folded
        user_id: summary(result.learners.get(user_id, LearnerState()), as_of)  # type: ignore[arg-type]  # as_of set when any user
        for user_id in sorted(result.users)
    }
    return {"users": users}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m projections",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fold = commands.add_parser("fold", help="fold a JSONL event log into learner state")
    fold.add_argument("--input", required=True, help="JSONL file of events, '-' for stdin")
    fold.add_argument("--as-of", help="ISO 8601 time to evaluate streaks and blind spots at")
    fold.add_argument(
        "--environment",
        choices=ENVIRONMENTS,
        default=os.environ.get("LEARNSTREAM_ENVIRONMENT", "development"),
        help="whose sampling rules apply (default: LEARNSTREAM_ENVIRONMENT or development)",
    )
    args = parser.parse_args(argv)
    as_of = parse_instant(args.as_of) if args.as_of else None
    if args.input == "-":
        document = fold_file(sys.stdin, as_of, sys.stderr, args.environment)
    else:
        with open(args.input, encoding="utf-8") as lines:
            document = fold_file(lines, as_of, sys.stderr, args.environment)
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
