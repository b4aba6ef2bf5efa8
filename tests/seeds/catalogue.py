"""The README's event catalogue, generated from the schemas and the seed fixtures.

Each event type with its fields, the spellings apps may use for them and the seed that
names each one, so the README cannot drift from ``schemas/avro`` or from the seeds: a
test compares the README's section with ``render()``. Print it with
``.venv/bin/python -m tests.seeds.catalogue``.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from schemas.catalog import EventCatalog, EventType, Schema, default_catalog

HERE = Path(__file__).resolve().parent
START = "<!-- event-catalogue:start (generated: python -m tests.seeds.catalogue) -->"
END = "<!-- event-catalogue:end -->"
# seed 004's property sets that no single event type owns (its "Game-Specific" and
# "Learning Analytics" properties): they name a field for every seed-004 type that has it
SHARED_SETS = ("004-game-specific-properties", "004-learning-analytics-properties")


def fixtures() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(HERE.glob("[0-9][0-9][0-9].json")):
        found += json.loads(path.read_text(encoding="utf-8"))
    return found


def properties_schema(event_type: EventType) -> Schema:
    (slot,) = [f for f in event_type.schema["fields"] if f["name"] == "properties"]
    schema: Schema = slot["type"]
    return schema


def stored_name(event_type: EventType, key: str) -> str:
    """The field a JSON key is stored as (through its aliases); the key when unknown."""
    for spec in properties_schema(event_type)["fields"]:
        if key == spec["name"] or key in spec.get("aliases", ()):
            return str(spec["name"])
    return key


def _kind(spec: Schema) -> str:
    if spec.get("ls.json"):
        return "JSON object"
    branches = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    (branch, *more) = [b for b in branches if b != "null"]
    if more:
        return "int or text"
    if isinstance(branch, dict):
        if branch.get("logicalType") == "timestamp-millis":
            return "time"
        if branch["type"] == "array":
            return "list"
        return str(branch["type"])
    words = {"string": "text", "long": "int", "double": "number", "boolean": "bool"}
    text = words.get(branch, branch)
    if "ls.enum" in spec:
        return "/".join(spec["ls.enum"])
    if spec.get("ls.coerce") == "string":
        return "id"
    low, high = spec.get("ls.minimum"), spec.get("ls.maximum")
    if low is not None and high is not None:
        return f"{text} {low:g} to {high:g}"
    return str(text)


def render(catalog: EventCatalog | None = None) -> str:
    catalog = catalog or default_catalog()
    type_seeds: dict[str, set[str]] = defaultdict(set)
    field_seeds: dict[tuple[str, str], set[str]] = defaultdict(set)
    shared: dict[str, set[str]] = defaultdict(set)  # field -> seeds naming it for all
    for fixture in fixtures():
        kind = catalog.resolve(fixture["event_type"])
        assert kind is not None, fixture["id"]
        seed = fixture["seed"]
        type_seeds[kind.name].add(seed)
        for key in fixture["properties"]:
            name = stored_name(kind, key)
            field_seeds[(kind.name, name)].add(seed)
            if fixture["id"] in SHARED_SETS:
                shared[name].add(seed)
    lines = [
        START,
        "",
        "| event type | seeds | properties: **required**, other spellings, `[seed]` naming it |",
        "|---|---|---|",
    ]
    for name in sorted(catalog):
        kind = catalog[name]
        seeds = type_seeds.get(name, set())
        cells = []
        for spec in properties_schema(kind)["fields"]:
            field = spec["name"]
            named = set(field_seeds.get((name, field), set()))
            named |= {s for s in shared.get(field, set()) if s in seeds}
            label = f"**`{field}`**" if "default" not in spec else f"`{field}`"
            aliases = "".join(f" = `{a}`" for a in spec.get("aliases", ()))
            origin = f" [{', '.join(sorted(named))}]" if named else ""
            cells.append(f"{label}{aliases} {_kind(spec)}{origin}")
        also = [a for a in kind.aliases]
        title = f"`{name}`" + "".join(f" (also `{a}`)" for a in also)
        origin = ", ".join(sorted(seeds)) or "learnstream"
        lines.append(f"| {title} | {origin} | {' · '.join(cells) or '(none)'} |")
    lines += ["", END]
    return "\n".join(lines)


def main() -> int:
    print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
