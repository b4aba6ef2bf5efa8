"""The whole pipeline on a real schema registry: Apicurio Registry 3.3 (devstack.apicurio,
kafkasql storage on the test broker), through its Confluent-compatible API, as
``LEARNSTREAM_SCHEMA_REGISTRY_URL``. Skipped only when Maven cannot fetch the app."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack import apicurio
from learnstream.settings import Settings
from learnstream.topics import EVENTS_CLEAN
from schemas.codec import decode, schema_id_of
from schemas.registry import ConfluentSchemaRegistry, FileSchemaRegistry, written_schemas
from schemas.registry_api import EVENT_TOPICS, PROJECTION_TOPIC_SCHEMAS
from tests.kafka_read import read_all
from tests.live_stack import LiveStack, live_stack
from tests.test_registry_api import (
    events_touching_every_projection,
    run_readme_example,
    same_records_and_more,
    wait_for_every_topic,
)

REPO = Path(__file__).resolve().parent.parent
AVRO_TOPICS = (*EVENT_TOPICS, *PROJECTION_TOPIC_SCHEMAS)


@pytest.fixture(scope="module")
def registry(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Apicurio's Confluent-compatible URL, its journal on topics of this module's own."""
    home = (REPO / ".devstack").resolve()
    try:
        apicurio.fetch(home)
    except apicurio.ArtifactUnavailable as exc:
        pytest.skip(f"Apicurio Registry {apicurio.VERSION} cannot be fetched here: {exc}")
    prefix = f"ap{uuid.uuid4().hex[:8]}."
    with apicurio.running(
        home, tmp_path_factory.mktemp("apicurio"), kafka_bootstrap, prefix
    ) as running:
        yield running.ccompat_url


@pytest.fixture
def stack(settings: Settings, registry: str) -> Iterator[LiveStack]:
    on_apicurio = settings.model_copy(update={"schema_registry_url": registry})
    with live_stack(on_apicurio) as running:
        yield running


def test_the_pipeline_runs_on_apicurio(stack: LiveStack, registry: str) -> None:
    # the services registered everything they write at start-up, by record name
    subjects = httpx.get(f"{registry}/subjects", timeout=10).json()
    assert set(subjects) >= set(written_schemas())

    events = events_touching_every_projection()
    for event in events:
        response = stack.collector.post("/v1/events", json=event)
        assert response.status_code == 202, response.text
    settings = stack.settings
    bootstrap = settings.kafka_bootstrap

    remote = ConfluentSchemaRegistry(registry)
    wait_for_every_topic(stack, remote)
    # the sink decoded what the processors wrote, with the ids Apicurio gave
    stack.wait_for(
        "every event in ClickHouse",
        lambda: (
            stack.sql(
                "SELECT count() FROM events WHERE source_topic = {t}",
                t=settings.topic(EVENTS_CLEAN),
            )
            == [[len(events)]]
        ),
    )
    stack.wait_for(
        "the user_progress table",
        lambda: (
            stack.sql("SELECT user_id, events_applied FROM user_progress_current ORDER BY 1")
            == [["ada", 5], ["bob", 1]]
        ),
    )

    # the ids on the wire are Apicurio's, not the file registry's fingerprints
    fingerprints = {i for ids in FileSchemaRegistry.from_files().subjects().values() for i in ids}
    # README's example, pointed at Apicurio: a stock Confluent deserializer reads them too
    example = run_readme_example(settings, registry)
    assert example["progress"]["ada"]["xp"] > 0
    for topic in AVRO_TOPICS:
        messages = read_all(bootstrap, settings.topic(topic))
        assert not {schema_id_of(m.value) for m in messages} & fingerprints, topic
        expected = [(m.key.decode(), decode(remote, m.value)) for m in messages]
        read = example["read_topic"](bootstrap, registry, settings.topic(topic))
        assert expected and same_records_and_more(read, expected), topic
