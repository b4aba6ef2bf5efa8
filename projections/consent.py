"""Per-learner consent per event category (seed 004: consent tracked per category).

Consent is granted unless the learner withdrew it with a consent_updated event; the
consent event itself is never filtered, or a learner could not opt back in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONSENT_EVENT = "consent_updated"


def updated_consent(consent: Mapping[str, bool], properties: Mapping[str, Any]) -> dict[str, bool]:
    category, granted = properties.get("consent_category"), properties.get("granted")
    if not isinstance(category, str) or not isinstance(granted, bool):
        return dict(consent)
    return {**consent, category: granted}


def allowed(consent: Mapping[str, bool], event_type: str, category: str) -> bool:
    return event_type == CONSENT_EVENT or consent.get(category, True)
