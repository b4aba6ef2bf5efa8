"""``python -m collector``: serve the collector with settings from the environment.

``python -m collector openapi`` prints the OpenAPI document instead (the committed
``collector/openapi.json`` is its output; a test keeps the two equal)."""

from __future__ import annotations

import json
import logging
import sys

import uvicorn

from collector.app import create_app
from collector.publisher import KafkaPublisher
from learnstream.logs import configure_logging
from learnstream.settings import Settings
from learnstream.startup import settings_or_exit
from learnstream.topics import ensure_topics_or_exit
from schemas.catalog import default_catalog
from schemas.registry import registry_for


def openapi_document() -> str:
    app = create_app(
        Settings(environment="development"),
        default_catalog(),
        registry_for(None),
        KafkaPublisher("unused:9092", 1.0),
    )
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    if sys.argv[1:] == ["openapi"]:
        sys.stdout.write(openapi_document())
        return
    settings = settings_or_exit("collector")
    configure_logging("collector", settings.log_level)
    ensure_topics_or_exit(settings)
    app = create_app(
        settings,
        default_catalog(),
        registry_for(settings.schema_registry_url),
        KafkaPublisher(settings.kafka_bootstrap, settings.publish_timeout_s),
    )
    logging.getLogger(__name__).info("collector on %s", settings.collector_url)
    uvicorn.run(app, host=settings.collector_host, port=settings.collector_port, log_config=None)


if __name__ == "__main__":
    main()
