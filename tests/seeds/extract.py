"""Extract every example payload from the seed documents into JSON fixtures.

The seeds (``../shared/seeds/*.txt`` next to the clone) are what real client apps send.
This script reads each one the way a developer integrating that app would, and writes
``tests/seeds/<seed>.json``: a list of fixtures, each an event type, the envelope-level
values the seed gives (user_id, session_id, device_info, ...) and the properties exactly
as the seed shows them. The conformance suite (``tests/test_seed_conformance.py``) sends
each one to the real stack; it reads the committed fixtures, so CI needs no seeds.

Regenerate with ``.venv/bin/python -m tests.seeds.extract [--seeds DIR]``; a test checks
that the committed fixtures equal a fresh extraction whenever the seeds are present.

Where a seed shows code rather than a literal (``len(highlighted_text)``,
``$event->user->id``), the value is a sample of the JSON type that code produces,
from ``EXPRESSIONS``; an expression missing there stops the script, so a seed change
cannot slip through with a guessed type. Where a seed describes a field instead of giving
a value (seed 004: ``"integer (0-100)"``, ``"password|sso|oauth"``), the value is a
sample of that description (``described``).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_SEEDS = HERE.parents[2] / "shared" / "seeds"

# The collector's envelope fields: a seed value for one of these goes in the envelope,
# everything else in properties.
ENVELOPE = (
    "event_id",
    "event_type",
    "timestamp",
    "user_id",
    "session_id",
    "organization_id",
    "device_info",
    "context",
    "privacy_level",
    "retention_days",
)

Fixture = dict[str, Any]

# Seed 001 (Python) and seed 000 (PHP) code -> a sample of the JSON value it produces.
EXPRESSIONS: dict[str, Any] = {
    # seed 001: "No PII in events: Only user_id (anonymized UUID)"; "Generate UUID for
    # new session"
    "user.id": "6f9c1e1a-3b7d-4e0a-9f53-0d4c2a1b7e10",
    "session_id": "b3e1c0de-5a4f-4c2e-8d1b-2f6a7c9e0d13",
    "current_session_id": "b3e1c0de-5a4f-4c2e-8d1b-2f6a7c9e0d13",
    "material_id": "material-42",
    "chunk_id": "chunk-7",
    "topic_id": "topic-cardiology",
    "chunk.topic_id": "topic-cardiology",
    "material.topic_id": "topic-cardiology",
    "question.topic_id": "topic-cardiology",
    "detected_topic_id": "topic-cardiology",
    "topic_ids": ["topic-cardiology", "topic-pharmacology"],
    "question_id": "question-17",
    "quiz_id": "quiz-3",
    "message_id": "message-99",
    "achievement.id": "first-question",
    "achievement.name": "First Question",
    "achievement.xp_reward": 25,
    "material.filename": "cardiology-notes.pdf",
    "material.page_count": 42,
    "len(highlighted_text)": 120,
    "len(question)": 86,
    "len(response)": 1240,
    "len(results)": 12,
    "chunk.chunk_index": 3,
    "position_in_chunk": 5,
    "interaction.duration_seconds": 900,
    "answer": "A",
    "question.correct_answer": "B",
    "answer == question.correct_answer": False,
    "time_spent": 45,  # the seed's own test submits time_spent 45
    "confidence": 4,
    "is_first": True,
    "attempt_number": 1,
    "hint_was_used": False,
    "question.difficulty": 3,
    "not has_seen_before": True,
    "quiz.question_count": 20,
    "correct_count": 17,
    "correct_count / quiz.question_count": 0.85,
    "quiz_duration": 1260,
    "bool(context)": True,
    "turn_number": 2,
    "response_time": 1850,
    "token_count": 640,
    "feedback": "Clear explanation, thanks",
    "seconds_since_view": 40,
    "xp_earned": 10,
    "user.total_xp": 1200,
    "user.total_xp + xp_earned": 1210,
    "user.level": 4,
    "user.level + 1": 5,
    "user_gamification.current_streak": 6,
    "user_gamification.current_streak + 1": 7,
    "new_streak > user_gamification.longest_streak": True,
    "search_query": "beta blockers",
    # a Python dict of filters: numbers, booleans and lists, not only strings
    "filters": {"topic": "cardiology", "year": 2, "include_archived": False, "types": ["pdf"]},
    "topic.name": "Cardiology",
    "topic.level": 2,
    "mastery_score": 0.62,
    "session.duration_seconds": 2700,
    "session.active_seconds": 2400,
    "session.materials_viewed": 3,
    "session.questions_attempted": 25,
    "session.xp_earned": 180,
    "request.headers.get('User-Agent')": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5)",
    "user.timezone": "Europe/Berlin",
    # seed 000 (Laravel): Eloquent ids are integers; now() serialises as ISO 8601
    "$event->user->id": 42,
    "$event->session->practice_mode_id": 3,
    "$event->session->id": 1234,
    "$event->drillsCompleted": 3,
    "$event->totalDurationSeconds": 1500,
    "now()": "2025-10-13T09:30:00.000000Z",
}


def _sample(expression: str, where: str) -> Any:
    if expression not in EXPRESSIONS:
        raise SystemExit(f"{where}: no sample value for {expression!r}; add it to EXPRESSIONS")
    return EXPRESSIONS[expression]


def _fixture(
    seed: str, name: str, event_type: str, values: dict[str, Any], note: str = ""
) -> Fixture:
    envelope = {k: v for k, v in values.items() if k in ENVELOPE and k != "event_type"}
    properties = values.get("properties")
    if not isinstance(properties, dict):
        properties = {k: v for k, v in values.items() if k not in ENVELOPE}
    fixture: Fixture = {
        "id": f"{seed}-{name}",
        "seed": seed,
        "event_type": event_type,
        "envelope": envelope,
        "properties": properties,
    }
    if note:
        fixture["note"] = note
    return fixture


# ---- seed 000: Laravel, a PHP array and a JSON block --------------------------------


def _php_value(text: str, scores: list[Any], where: str) -> Any:
    text = text.strip().rstrip(",")
    if text == "$event->scores":
        return scores
    return _sample(text, where)


def seed_000(text: str) -> list[Fixture]:
    scores = json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))["scores"]  # type: ignore[union-attr]
    fixtures = []
    # the listener's record(): 'key' => expression, as SessionCompletedEvent::create stores it
    body = re.search(r"SessionCompletedEvent::create\(\[(.*?)\]\);", text, re.S)
    assert body is not None, "seed 000: the listener's create([...]) call"
    record = {
        key: _php_value(value, scores, "seed 000 record()")
        for key, value in re.findall(r"'(\w+)'\s*=>\s*(.+)", body.group(1))
    }
    fixtures.append(_fixture("000", "listener-record", "session_completed", record))
    # the Event Schema tree: field names, the listener's values for their meaning
    tree = re.search(r"session_completed\n((?:[├└]── .*\n)+)", text)
    assert tree is not None, "seed 000: the event schema tree"
    names = re.findall(r"[├└]── (\w+)", tree.group(1))
    by_meaning = {
        "user_id": record["user_id"],
        "practice_mode_id": record["practice_mode_id"],
        "drills_completed": record["drills_completed"],
        "total_duration": record["total_duration_seconds"],
        "completed_at": record["completed_at"],
        "scores": scores,
    }
    schema_event = {name: by_meaning[name] for name in names}
    fixtures.append(_fixture("000", "event-schema", "session_completed", schema_event))
    return fixtures


# ---- seed 001: Python track_event(...) calls ------------------------------------------


def _python_value(node: ast.expr, where: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Dict):
        return {
            _python_value(k, where): _python_value(v, where)
            for k, v in zip(node.keys, node.values, strict=True)
            if k is not None
        }
    return _sample(ast.unparse(node), where)


def _heading_types(heading: str) -> list[str]:
    """``MATERIAL_HIGHLIGHT / NOTE / BOOKMARK`` -> material_highlight, material_note,
    material_bookmark: a short name shares the first name's prefix."""
    names = [n.strip().lower() for n in heading.split("/")]
    first = names[0]
    out = [first]
    for name in names[1:]:
        if "_" in name:
            out.append(name)
        else:
            out.append(first.rsplit("_", 1)[0] + "_" + name)
    return out


def seed_001(text: str) -> list[Fixture]:
    fixtures = []
    for match in re.finditer(r"^#### ([^\n]+)\n(.*?)(?=^#### |^### |^## |\Z)", text, re.S | re.M):
        heading, section = match.group(1), match.group(2)
        for block in re.findall(r"```python\n(.*?)```", section, re.S):
            if "track_event(" not in block:
                continue
            for node in ast.walk(ast.parse(block)):
                if not (
                    isinstance(node, ast.Call) and getattr(node.func, "id", "") == "track_event"
                ):
                    continue
                where = f"seed 001 {heading}"
                values = {kw.arg: _python_value(kw.value, where) for kw in node.keywords if kw.arg}
                shown = values.pop("event_type")
                properties = values.pop("properties", {})
                # ids the seed passes beside properties (material_id, topic_id, ...) are
                # properties here: the envelope has no place for them
                envelope = {k: v for k, v in values.items() if k in ENVELOPE}
                for key in [k for k in values if k not in ENVELOPE]:
                    properties = {key: values[key], **properties}
                names = _heading_types(heading)
                if shown not in names:
                    names = [shown]
                for event_type in names:
                    note = "" if event_type == shown else f"the seed's {shown} block, for {heading}"
                    fixtures.append(
                        _fixture(
                            "001",
                            event_type,
                            event_type,
                            {**envelope, "properties": properties},
                            note,
                        )
                    )
    return fixtures


# ---- seed 002: a JavaScript fetch body and a table of required fields ----------------


def _js_object(text: str) -> Any:
    """A JavaScript object literal as JSON: bare keys quoted, trailing commas dropped."""
    quoted = re.sub(r"([{,]\s*)([A-Za-z_]\w*)\s*:", r'\1"\2":', text)
    quoted = quoted.replace("'", '"')
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", quoted))


def seed_002(text: str) -> list[Fixture]:
    fixtures = []
    body = re.search(r"JSON\.stringify\((\{.*?\})\)", text, re.S)
    assert body is not None, "seed 002: the fetch body"
    sent = _js_object(body.group(1))
    event_type = sent.pop("eventType")  # the seed's own envelope field, camelCase
    fixtures.append(_fixture("002", "fetch-body", event_type, {"properties": sent}))
    # "Required Fields" column: each type with exactly what the seed requires
    for row in re.findall(r"^\| `(\w+)` \| [^|]+\| ([^|]+)\|", text, re.M):
        event_type, required = row[0], row[1].strip()
        fields = re.findall(r"`(\w+)`", required)
        example = {name: f"{event_type.split('_')[0]}-123" for name in fields}
        fixtures.append(
            _fixture("002", f"{event_type}-required-only", event_type, {"properties": example})
        )
    return fixtures


# ---- seed 003: the curl body of POST /api/sessions/save -------------------------------


def seed_003(text: str) -> list[Fixture]:
    body = re.search(r"/api/sessions/save.*?-d '(\{.*?\})'", text, re.S)
    assert body is not None, "seed 003: the save request body"
    return [
        _fixture("003", "save-session", "session_result", {"properties": json.loads(body.group(1))})
    ]


# ---- seed 004: JSON examples, described fields, JS telemetry, name-only types ---------

UUID_SAMPLE = "0190f3a0-5b1c-7cc3-9a4f-3b0e5d9a0c11"


def described(key: str, description: Any) -> Any:
    """A value of the kind a seed-004 field description names."""
    if isinstance(description, dict):
        return {k: described(k, v) for k, v in description.items()}
    if isinstance(description, list):
        return [described(key, d) for d in description]
    if description == "boolean":
        return True
    if not isinstance(description, str):
        return description
    kind = description.split(" (")[0]
    detail = description[len(kind) :].strip(" ()")
    if "|" in kind:  # an enumeration: its first value
        return kind.split("|")[0]
    if kind == "integer":
        if match := re.fullmatch(r"(\d+)-(\d+)", detail):
            low, high = int(match.group(1)), int(match.group(2))
            return (low + high) // 2
        return 2555 if key == "retention_days" else 1
    if kind == "ISO 8601 datetime":
        return "2025-01-27T14:30:45.123Z"
    if detail == "UUID":
        return UUID_SAMPLE
    if detail == "G-XXXXX format":
        return "G-01542"
    if detail == "G-XXXXX-stage format":
        return "G-01542-quiz"
    if kind == "string":
        return f"{key}-example"
    return description


def _js_telemetry(block: str) -> Iterator[dict[str, Any]]:
    """``{ event_type: "x", properties: {...} }`` literals whose values may be type words
    (``boolean``, ``integer``) or alternatives (``"a|b|c"``)."""
    for literal in re.findall(r"^\{\n.*?^\}", block, re.S | re.M):
        words = re.sub(r":\s*(boolean|integer)\b", r': "\1"', literal)
        yield _js_object(words)


def seed_004(text: str) -> list[Fixture]:
    fixtures = []
    blocks = re.findall(r"^#### ([^\n]+)\n```(\w+)\n(.*?)```", text, re.S | re.M)
    blocks += re.findall(r"^### (Event Core Schema)\n```(\w+)\n(.*?)```", text, re.S | re.M)
    for heading, language, block in blocks:
        if language == "json":
            value = json.loads(block)
            if heading == "Event Core Schema":
                fixtures.append(_fixture("004", "core-schema", value["event_type"], value))
            elif heading.startswith("Standard Properties"):
                sample = described("", value)
                sample.pop("event_type")  # "string (camelCase)": the event type is ours to pick
                fixtures.append(
                    _fixture(
                        "004",
                        "standard-properties",
                        "game_stage_complete",
                        {**sample, "properties": {}},
                        "the standard properties, as described, on a game stage",
                    )
                )
            else:  # Game-Specific / Learning Analytics: properties of a game stage
                name = heading.split(" Properties")[0].lower().replace(" ", "-")
                fixtures.append(
                    _fixture(
                        "004",
                        f"{name}-properties",
                        "game_stage_complete",
                        {"properties": described("", value)},
                        f"the {heading}, as described, on game_stage_complete",
                    )
                )
        elif language == "javascript":
            for event in _js_telemetry(block):
                event_type = event["event_type"]
                properties = described("", event.get("properties", {}))
                fixtures.append(_fixture("004", event_type, event_type, {"properties": properties}))
    # Event Categories: every type the seed only names, with the properties it gives (none)
    categories = text.split("### Event Categories", 1)[1].split("### Event Properties", 1)[0]
    for name in re.findall(r"`(\w+)`", categories):
        fixtures.append(_fixture("004", f"{name}-name-only", name, {"properties": {}}))
    return fixtures


EXTRACTORS = {"000": seed_000, "001": seed_001, "002": seed_002, "003": seed_003, "004": seed_004}


def extract(seeds: Path) -> dict[str, list[Fixture]]:
    found: dict[str, list[Fixture]] = {}
    for number, extractor in EXTRACTORS.items():
        (path,) = sorted(seeds.glob(f"{number}_*.txt"))
        fixtures = extractor(path.read_text(encoding="utf-8"))
        ids = [f["id"] for f in fixtures]
        assert len(ids) == len(set(ids)), f"seed {number}: repeated fixture ids"
        found[number] = fixtures
    return found


def render(fixtures: list[Fixture]) -> str:
    return json.dumps(fixtures, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=Path, default=DEFAULT_SEEDS)
    args = parser.parse_args(argv)
    for number, fixtures in extract(args.seeds).items():
        (HERE / f"{number}.json").write_text(render(fixtures), encoding="utf-8")
        print(f"seed {number}: {len(fixtures)} payloads -> tests/seeds/{number}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
