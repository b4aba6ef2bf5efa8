"""What a rejected event becomes on ``events.invalid``: the raw input plus why."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from schemas.validation import FieldError


def dead_letter(raw: str, errors: Sequence[FieldError], received_at: datetime) -> bytes:
    return json.dumps(
        {
            "raw": raw,
            "errors": [{"field": e.field, "message": e.message} for e in errors],
            "received_at": received_at.isoformat(),
            "source": "collector",
        }
    ).encode()
