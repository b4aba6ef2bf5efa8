"""The schema files served as a Confluent Schema Registry (schemas.registry_api), checked
with confluent-kafka's own client and deserializer: on the sink's read API against the
running pipeline, and on ``python -m schemas serve``."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastapi import FastAPI
from fastapi.testclient import TestClient

from devstack.services import free_port, http_ok
from learnstream.settings import Settings
from learnstream.topics import (
    EVENTS_CLEAN,
    EVENTS_INVALID,
    EVENTS_RAW,
    PROJECTIONS_USER_PROGRESS,
    REQUESTS_ERASURE,
    TOPIC_SPECS,
)
from processors.outputs import user_progress
from projections.events import Event
from projections.fold import fold_log
from schemas.catalog import default_catalog, load_named_schema
from schemas.codec import decode, encode
from schemas.registry import (
    ConfluentSchemaRegistry,
    FileSchemaRegistry,
    SchemaRegistry,
    registry_for,
)
from schemas.registry_api import (
    EVENT_TOPICS,
    MEDIA_TYPE,
    PROJECTION_TOPIC_SCHEMAS,
    SCHEMA_REGISTRY_PATH,
    file_registry_router,
    registry_router_for,
)
from tests.kafka_read import latest_by_key, read_all
from tests.live_stack import LiveStack, live_stack

REPO = Path(__file__).resolve().parent.parent
AVRO_TOPICS = (*EVENT_TOPICS, *PROJECTION_TOPIC_SCHEMAS)
PREFIX = "p."


@pytest.fixture(scope="module")
def api() -> TestClient:
    app = FastAPI()
    app.include_router(file_registry_router(lambda name: PREFIX + name))
    return TestClient(app)


def test_every_avro_topic_has_a_value_subject_and_others_hold_json() -> None:
    # events.invalid carries dead letters and requests.erasure erasure requests, as JSON
    assert {spec.name for spec in TOPIC_SPECS} == {*AVRO_TOPICS, EVENTS_INVALID, REQUESTS_ERASURE}


def test_subjects_versions_and_schemas(api: TestClient) -> None:
    subjects = api.get("/subjects")
    assert subjects.headers["content-type"] == MEDIA_TYPE
    listed = subjects.json()
    assert {f"{PREFIX}{t}-value" for t in AVRO_TOPICS} <= set(listed)
    assert {t.subject for t in default_catalog().values()} <= set(listed)
    assert api.get("/subjects", params={"subjectPrefix": "p.proj"}).json() == sorted(
        f"{PREFIX}{t}-value" for t in PROJECTION_TOPIC_SCHEMAS
    )

    # a projection topic's subject: its record's versions, the released one first
    subject = f"{PREFIX}{PROJECTIONS_USER_PROGRESS}-value"
    assert api.get(f"/subjects/{subject}/versions").json() == [1, 2]
    latest = api.get(f"/subjects/{subject}/versions/latest").json()
    current = load_named_schema("projections/user_progress.avsc")
    assert json.loads(latest.pop("schema")) == current
    assert latest == {"subject": subject, "version": 2, "id": latest["id"]}
    assert api.get(f"/subjects/{subject}/versions/-1").json()["id"] == latest["id"]
    assert api.get(f"/schemas/ids/{latest['id']}").json() == {
        "schema": json.dumps(current, separators=(",", ":"))
    }
    assert api.get(f"/schemas/ids/{latest['id']}/schema").json() == current
    assert api.get(f"/subjects/{subject}/versions/2/schema").json() == current
    assert (
        api.get("/subjects/learnstream.projections.UserProgress/versions/2").json()["id"]
        == latest["id"]
    )
    assert subject in api.get(f"/schemas/ids/{latest['id']}/subjects").json()
    old = api.get(f"/subjects/{subject}/versions/1").json()
    found = api.post(f"/subjects/{subject}", json={"schema": old["schema"]}).json()
    assert (found["version"], found["id"]) == (1, old["id"])

    # the event topics: one union of every event record, by reference
    union = api.get(f"/subjects/{PREFIX}{EVENTS_CLEAN}-value/versions/latest").json()
    references = union["references"]
    assert json.loads(union["schema"]) == [r["name"] for r in references]
    assert {r["subject"] for r in references} == {t.subject for t in default_catalog().values()}
    for reference in references[:3]:
        named = api.get(f"/subjects/{reference['subject']}/versions/{reference['version']}")
        assert json.loads(named.json()["schema"])["name"] == reference["name"].rsplit(".", 1)[1]
    assert api.get(f"/schemas/ids/{union['id']}").json()["references"] == references
    assert api.get("/config").json() == {"compatibilityLevel": "BACKWARD"}


def test_every_id_a_record_can_carry_is_served(api: TestClient) -> None:
    registry = FileSchemaRegistry.from_files()
    for ids in registry.subjects().values():
        for schema_id in ids:
            served = api.get(f"/schemas/ids/{schema_id}", params={"subject": "ignored-value"})
            assert served.status_code == 200, schema_id
            assert json.loads(served.json()["schema"]) == registry.schema_by_id(schema_id)


def test_errors_are_confluents(api: TestClient) -> None:
    def error(path: str) -> tuple[int, int, str]:
        response = api.get(path)
        assert response.headers["content-type"] == MEDIA_TYPE
        body = response.json()
        return response.status_code, body["error_code"], body["message"]

    assert error("/schemas/ids/7") == (404, 40403, "Schema 7 not found.")
    assert error("/subjects/nope/versions") == (404, 40401, "Subject 'nope' not found.")
    assert error("/subjects/nope/versions/1")[:2] == (404, 40401)
    subject = f"{PREFIX}{EVENTS_RAW}-value"
    assert error(f"/subjects/{subject}/versions/2") == (404, 40402, "Version 2 not found.")
    assert error(f"/subjects/{subject}/versions/0")[:2] == (422, 42202)
    assert error(f"/subjects/{subject}/versions/first")[:2] == (422, 42202)
    assert error(f"/config/{subject}")[:2] == (404, 40408)
    unknown = api.post(f"/subjects/{subject}", json={"schema": '"string"'})
    assert (unknown.status_code, unknown.json()["error_code"]) == (404, 40403)


# ---- confluent-kafka against the running pipeline ---------------------------------


def _event(
    event_type: str, user: str, properties: dict[str, Any], minutes_ago: int
) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "timestamp": (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat(),
        "user_id": user,
        "device_info": {"timezone": "Europe/Berlin"},
        "properties": properties,
    }


def events_touching_every_projection() -> list[dict[str, Any]]:
    """Events that touch every projection: XP, progress, topic mastery, practice-mode
    progress and blind spots."""
    session = {
        "practice_mode_id": "flashcards",
        "drills_completed": 2,
        "total_duration": 300,
        "scores": [{"drill_id": "d1", "drill_name": "Verbs", "score": 35}],
    }
    return [
        _event("quiz_completed", user, {"content_id": "quiz-1", "score": 84.5}, 50)
        for user in ("ada", "bob")
    ] + [
        _event(
            "question_submit",
            "ada",
            {"question_id": "q1", "topic_id": "algebra", "is_correct": True},
            40,
        ),
        *(_event("session_completed", "ada", session, minutes) for minutes in (30, 20, 10)),
    ]


def readme_example() -> str:
    """The Python block of README's "Consuming projections from another service"."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Consuming projections from another service", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def run_readme_example(settings: Settings, registry_url: str) -> dict[str, Any]:
    """The README's code, as written, on this test's broker, topics and registry."""
    code = readme_example()
    assert "http://localhost:8081/schema-registry" in code
    code = code.replace("http://localhost:8081/schema-registry", registry_url)
    namespace: dict[str, Any] = {}
    environment = {
        "LEARNSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LEARNSTREAM_TOPIC_PREFIX": settings.topic_prefix,
    }
    with mock.patch.dict(os.environ, environment), contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def wait_for_every_topic(stack: LiveStack, registry: SchemaRegistry) -> None:
    """Until every Avro topic has records and the learners' progress shows every event
    (so no more snapshots of it are coming). ``registry`` decodes what was written."""
    bootstrap = stack.settings.kafka_bootstrap
    for topic in AVRO_TOPICS:
        name = stack.settings.topic(topic)
        stack.wait_for(name, lambda n=name: bool(read_all(bootstrap, n)))  # type: ignore[misc]
    progress = stack.settings.topic(PROJECTIONS_USER_PROGRESS)

    def applied() -> dict[str, int]:
        snapshots = (decode(registry, m.value) for m in read_all(bootstrap, progress))
        return {p["user_id"]: p["events_applied"] for p in snapshots}  # the last one wins

    stack.wait_for("every event in user_progress", lambda: applied() == {"ada": 5, "bob": 1})


def same_records_and_more(read: list[Any], earlier: list[Any]) -> bool:
    """Whether ``read`` holds every record of ``earlier``, read before it: a topic only
    grows, and outputs still in flight (derived events) may have landed in between."""
    return Counter(map(repr, earlier)) <= Counter(map(repr, read))


@pytest.fixture
def served_pipeline(settings: Settings) -> Iterator[LiveStack]:
    with live_stack(settings) as stack:
        for event in events_touching_every_projection():
            response = stack.collector.post("/v1/events", json=event)
            assert response.status_code == 202, response.text
        wait_for_every_topic(stack, FileSchemaRegistry.from_files())
        yield stack


def test_confluent_deserializer_decodes_every_topic_through_the_sink(
    served_pipeline: LiveStack,
) -> None:
    settings = served_pipeline.settings
    registry_url = settings.query_url + SCHEMA_REGISTRY_PATH
    bootstrap = settings.kafka_bootstrap
    example = run_readme_example(settings, registry_url)
    assert example["progress"] == latest_by_key(
        bootstrap, settings.topic(PROJECTIONS_USER_PROGRESS)
    )
    assert set(example["progress"]) == {"ada", "bob"}

    read_topic = example["read_topic"]
    files = FileSchemaRegistry.from_files()
    for topic in AVRO_TOPICS:
        name = settings.topic(topic)
        # the same records as the project's own codec reads
        expected = [(m.key.decode(), decode(files, m.value)) for m in read_all(bootstrap, name)]
        decoded = read_topic(bootstrap, registry_url, name)
        assert expected and same_records_and_more(decoded, expected), topic


@pytest.fixture
def standalone(settings: Settings) -> Iterator[str]:
    """``python -m schemas serve`` with this test's settings (its topic prefix)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "schemas", "serve", "--port", str(port)],
        env={**settings.as_env(), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not http_ok(f"{url}/config"):
            assert process.poll() is None, "python -m schemas serve exited"
            assert time.monotonic() < deadline, "python -m schemas serve never answered"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_confluent_client_resolves_topic_subjects_on_the_standalone_server(
    settings: Settings, standalone: str
) -> None:
    client = SchemaRegistryClient({"url": standalone})
    subject = f"{settings.topic(PROJECTIONS_USER_PROGRESS)}-value"
    assert subject in client.get_subjects()
    assert client.get_versions(subject) == [1, 2]
    latest = client.get_latest_version(subject)
    assert latest.schema.schema_str is not None and latest.schema_id is not None
    assert json.loads(latest.schema.schema_str) == load_named_schema(
        "projections/user_progress.avsc"
    )
    assert client.get_compatibility() == "BACKWARD"

    events = client.get_latest_version(f"{settings.topic(EVENTS_CLEAN)}-value")
    references = events.schema.references or []
    assert len(references) == len(default_catalog())
    first = references[0]
    assert first.subject is not None and first.version is not None
    named = client.get_version(first.subject, first.version)
    assert named.schema_id == FileSchemaRegistry.from_files().subjects()[first.subject][-1]

    # a snapshot as the processors write it, read through the subject's latest version
    # (use.latest.version looks the writer's schema up under the subject: POST /subjects/…)
    event = _event("quiz_completed", "ada", {"content_id": "quiz-1", "score": 84.5}, 5)
    summary = fold_log([Event.from_envelope(event)]).learners["ada"].summary
    files = FileSchemaRegistry.from_files()
    data = encode(
        latest.schema_id, files.parsed_by_id(latest.schema_id), user_progress("ada", summary)
    )
    deserialize = AvroDeserializer(client, conf={"use.latest.version": True})
    context = SerializationContext(settings.topic(PROJECTIONS_USER_PROGRESS), MessageField.VALUE)
    read = deserialize(data, context)
    assert read == decode(files, data)
    assert read["xp"] > 0


def test_with_a_registry_server_the_sink_says_where_it_is() -> None:
    app = FastAPI()
    remote = "http://registry.example:8081"
    app.include_router(registry_router_for(lambda name: name, remote, SCHEMA_REGISTRY_PATH))
    for path, code in (("/schemas/ids/5", 40403), ("/subjects", 40401)):
        response = TestClient(app).get(SCHEMA_REGISTRY_PATH + path)
        assert response.status_code == 404
        assert response.json() == {
            "error_code": code,
            "message": f"this deployment's schemas are in the registry at {remote}",
        }


def test_a_registry_server_not_up_yet_leaves_registration_to_first_use(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    with caplog.at_level(logging.WARNING, logger="schemas.registry"):
        registry = registry_for(url)
    assert isinstance(registry, ConfluentSchemaRegistry)
    assert f"could not register the schemas at {url} at start-up" in caplog.text
