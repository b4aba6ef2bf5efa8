"""The one shape of a record on ``events.invalid``: the raw input, why it was refused,
when, who refused it and which write key sent it. The collector and the processors
write it; the sink reads it into ``events_invalid``.

A dead letter always fits in one Kafka record (1 MB by default), whatever was refused:
otherwise the refusal itself would fail and a client would be told to retry for ever.
So the raw input is kept whole up to ``MAX_RAW_BYTES``; beyond that its first part is
kept with its full size and SHA-256, and at most ``MAX_ERRORS`` errors are listed.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from schemas.validation import FieldError

MAX_RAW_BYTES = 512 * 1024
MAX_ERRORS = 100
LETTER_NAMESPACE = uuid.UUID("8f3b9a54-2f0e-4c71-b7a3-5d2c9e61f0b4")


def letter_id(source: str, key_id: str | None, event_id: str | None, raw: str) -> str:
    """The same refusal gets the same id, however often it is sent: by the event's id
    when it has one (a retried batch re-sends it), else by the exact input, per write key
    and stage (``source``). The sink keeps one dead letter per id."""
    what = event_id if event_id else hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()
    return str(uuid.uuid5(LETTER_NAMESPACE, f"{source}|{key_id or ''}|{what}"))


def bounded_errors(errors: Sequence[FieldError]) -> list[FieldError]:
    """The first ``MAX_ERRORS`` errors, and one more saying how many were left out."""
    if len(errors) <= MAX_ERRORS:
        return list(errors)
    left_out = len(errors) - MAX_ERRORS
    return [*errors[:MAX_ERRORS], FieldError("(more)", f"and {left_out} more errors")]


def _bounded_raw(raw: str) -> dict[str, Any]:
    # "replace": JSON may carry lone surrogates ("\ud800"), which UTF-8 cannot
    encoded = raw.encode("utf-8", errors="replace")
    if len(encoded) <= MAX_RAW_BYTES:
        return {"raw": encoded.decode("utf-8")}
    return {
        "raw": encoded[:MAX_RAW_BYTES].decode("utf-8", errors="ignore"),
        "raw_truncated": True,
        "raw_bytes": len(encoded),
        "raw_sha256": hashlib.sha256(encoded).hexdigest(),
    }


def dead_letter(
    raw: str,
    errors: Sequence[FieldError],
    received_at: datetime,
    source: str = "collector",
    key_id: str | None = None,
    event_id: str | None = None,
) -> bytes:
    return json.dumps(
        {
            **_bounded_raw(raw),
            "letter_id": letter_id(source, key_id, event_id, raw),
            "errors": [{"field": e.field, "message": e.message} for e in bounded_errors(errors)],
            "received_at": received_at.isoformat(),
            "source": source,
            "key_id": key_id,
        },
        ensure_ascii=False,  # UTF-8: \\u escapes would make CJK text six bytes a character
    ).encode()
