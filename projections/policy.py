"""Which consent category and sample rate each event type gets: the one policy the live
processors and the batch fold share (from the event catalogue's ``ls.*`` metadata)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Protocol

from projections.sampling import Sampled, sample_rate

# event_type -> (consent category or None, sample rate)
Policy = Callable[[str], tuple[str | None, float]]


class Catalogued(Sampled, Protocol):
    @property
    def category(self) -> str: ...


class Catalogue(Protocol):
    def resolve(self, name: str) -> Catalogued | None: ...


def everything_kept(event_type: str) -> tuple[str | None, float]:
    return None, 1.0


def catalog_policy(
    catalog: Catalogue, environment: str, overrides: Mapping[str, float] | None = None
) -> Policy:
    """A type the catalogue does not know has no consent category and is never sampled."""
    fixed = dict(overrides or {})

    @cache
    def policy(event_type: str) -> tuple[str | None, float]:
        kind = catalog.resolve(event_type)
        if kind is None:
            return None, 1.0
        return kind.category, sample_rate(kind, environment, fixed)

    return policy
