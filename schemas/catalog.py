"""The event catalogue: one full Avro schema per event type, composed from the files.

``avro/envelope.avsc`` holds the fields every event carries, with a ``"PROPERTIES"``
placeholder; ``avro/properties/<event_type>.avsc`` holds each type's typed properties
record plus its ``ls.*`` metadata (category, ids it requires). Composing them gives
each event type a standalone schema whose record name is its registry subject.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema

AVRO_DIR = Path(__file__).parent / "avro"
PROPERTIES_PLACEHOLDER = "PROPERTIES"
EVENT_NAMESPACE = "learnstream.events"

Schema = dict[str, Any]

# How an event type is sampled (seed 004): never (learning progress, user actions,
# errors), performance (10 % in production), high_volume (1 %), debug (dropped in
# production).
SAMPLING_CLASSES = frozenset({"never", "performance", "high_volume", "debug"})

CATEGORIES = frozenset(
    {"user_interaction", "learning_progress", "system_performance", "business_intelligence"}
)


@dataclass(frozen=True)
class EventType:
    """One event type: its name, category and the composed schema (raw and parsed)."""

    name: str
    category: str
    sampling: str
    requires: tuple[str, ...]
    schema: Schema
    parsed: Any
    aliases: tuple[str, ...] = ()  # other names apps send it under (ls.aliases)

    @property
    def subject(self) -> str:
        return str(self.schema["namespace"]) + "." + str(self.schema["name"])


def _camel(event_type: str) -> str:
    return "".join(part.capitalize() for part in event_type.split("_"))


def lower_camel(name: str) -> str:
    """``game_stage_complete`` -> ``gameStageComplete``: seed 004 declares event_type as
    "string (camelCase)", while every example it gives is snake_case."""
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def _load_json(path: Path) -> Schema:
    loaded: Schema = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def compose(envelope: Schema, properties: Schema) -> Schema:
    """Fill the envelope's properties slot with one event type's properties record."""
    event_type = properties["ls.event_type"]
    composed = copy.deepcopy(envelope)
    composed["name"] = _camel(event_type)
    composed["namespace"] = EVENT_NAMESPACE
    composed["doc"] = properties.get("doc", "")
    slots = [f for f in composed["fields"] if f["type"] == PROPERTIES_PLACEHOLDER]
    if len(slots) != 1:
        raise ValueError("envelope.avsc must have exactly one PROPERTIES field")
    slots[0]["type"] = copy.deepcopy(properties)
    return composed


def _records(schema: Any) -> Iterator[Schema]:
    """Every record schema inside ``schema`` (itself included), however nested."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _records(branch)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            yield schema
            for spec in schema["fields"]:
                yield from _records(spec["type"])
        elif schema.get("type") in ("array", "map"):
            yield from _records(schema.get("items", schema.get("values")))
        elif isinstance(schema.get("type"), dict | list):
            yield from _records(schema["type"])


def check_spellings(schema: Schema, where: str) -> None:
    """Aliases are other JSON spellings of a field (validation reads keys through them),
    so each spelling must name one field only: an alias equal to another field's name, or
    shared by two fields, would make a key mean two things."""
    for record in _records(schema):
        owner: dict[str, str] = {}
        for spec in record["fields"]:
            for spelling in (spec["name"], *spec.get("aliases", ())):
                if spelling in owner and owner[spelling] != spec["name"]:
                    raise ValueError(
                        f"{where}: {spelling!r} spells both {owner[spelling]!r} "
                        f"and {spec['name']!r}"
                    )
                owner[spelling] = spec["name"]


class EventCatalog(Mapping[str, EventType]):
    """Read-only mapping event_type -> EventType."""

    def __init__(self, event_types: Mapping[str, EventType]) -> None:
        self._types = dict(event_types)
        # Other names an app may send an event type under: its ls.aliases (seed 001's
        # heading "QUESTION_ATTEMPT / QUESTION_SUBMIT" names one event twice) and its
        # camelCase spelling. Validation stores the type's own name, so one kind of event
        # is one event_type in every stage and query.
        self._aliases: dict[str, EventType] = {}
        for event_type in self._types.values():
            for alias in (*event_type.aliases, lower_camel(event_type.name)):
                if alias == event_type.name:
                    continue
                taken = self._types.get(alias) or self._aliases.get(alias)
                if taken is not None and taken.name != event_type.name:
                    raise ValueError(f"{alias!r} names both {taken.name} and {event_type.name}")
                self._aliases[alias] = event_type

    def resolve(self, name: str) -> EventType | None:
        """The event type by its name or by one of its other names."""
        return self._types.get(name) or self._aliases.get(name)

    @classmethod
    def load(cls, avro_dir: Path = AVRO_DIR) -> EventCatalog:
        envelope = _load_json(avro_dir / "envelope.avsc")
        types: dict[str, EventType] = {}
        for path in sorted((avro_dir / "properties").glob("*.avsc")):
            properties = _load_json(path)
            name = properties.get("ls.event_type")
            if name != path.stem:
                raise ValueError(f"{path}: ls.event_type must equal the file name ({path.stem})")
            category = properties.get("ls.category")
            if category not in CATEGORIES:
                raise ValueError(f"{path}: ls.category must be one of {sorted(CATEGORIES)}")
            sampling = properties.get("ls.sampling")
            if sampling not in SAMPLING_CLASSES:
                raise ValueError(f"{path}: ls.sampling must be one of {sorted(SAMPLING_CLASSES)}")
            schema = compose(envelope, properties)
            check_spellings(schema, str(path))
            types[name] = EventType(
                name=name,
                category=category,
                sampling=sampling,
                requires=tuple(properties.get("ls.requires", ())),
                schema=schema,
                parsed=parse_schema(copy.deepcopy(schema)),
                aliases=tuple(properties.get("ls.aliases", ())),
            )
        return cls(types)

    def __getitem__(self, name: str) -> EventType:
        return self._types[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)


def load_named_schema(relative_path: str, avro_dir: Path = AVRO_DIR) -> Schema:
    """A standalone schema file, e.g. ``projections/user_xp.avsc``."""
    return _load_json(avro_dir / relative_path)


@cache
def default_catalog() -> EventCatalog:
    return EventCatalog.load()
