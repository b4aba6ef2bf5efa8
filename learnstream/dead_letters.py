"""The one shape of a record on ``events.invalid``: the raw input, why it was refused,
when, who refused it and which write key sent it. The collector and the processors
write it; the sink reads it into ``events_invalid``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from schemas.validation import FieldError


def dead_letter(
    raw: str,
    errors: Sequence[FieldError],
    received_at: datetime,
    source: str = "collector",
    key_id: str | None = None,
) -> bytes:
    return json.dumps(
        {
            "raw": raw,
            "errors": [{"field": e.field, "message": e.message} for e in errors],
            "received_at": received_at.isoformat(),
            "source": source,
            "key_id": key_id,
        }
    ).encode()
