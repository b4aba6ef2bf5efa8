"""``python -m collector``: serve the collector with settings from the environment.

``python -m collector --workers N`` runs N uvicorn worker processes on one socket (one per
core is the production setting: a worker is one Python process, one core at most);
``--workers auto`` takes the number of cores. ``python -m collector openapi`` prints the
OpenAPI document instead (the committed ``collector/openapi.json`` is its output; a test
keeps the two equal)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import uvicorn
from fastapi import FastAPI

from collector.app import create_app
from collector.publisher import KafkaPublisher
from collector.workers import exit_with_parent
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


def app_from_environment() -> FastAPI:
    """One worker's app, its settings read in the worker (uvicorn's factory)."""
    settings = settings_or_exit("collector")
    configure_logging("collector", settings.log_level)
    return create_app(
        settings,
        default_catalog(),
        registry_for(settings.schema_registry_url),
        KafkaPublisher(settings.kafka_bootstrap, settings.publish_timeout_s),
    )


def worker_app() -> FastAPI:
    """A worker process's app: the worker leaves when its supervisor is gone (a SIGKILL
    of the supervisor would otherwise leave workers serving the port)."""
    exit_with_parent()
    return app_from_environment()


def _workers(text: str) -> int:
    count = (os.cpu_count() or 1) if text == "auto" else int(text)
    if count < 1:
        raise argparse.ArgumentTypeError("needs at least one worker")
    return count


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["openapi"]:
        sys.stdout.write(openapi_document())
        return
    parser = argparse.ArgumentParser(prog="python -m collector", description=__doc__)
    parser.add_argument(
        "--workers",
        type=_workers,
        default=None,
        help="worker processes, or 'auto': one per core (default: LEARNSTREAM_COLLECTOR_WORKERS)",
    )
    asked: int | None = parser.parse_args(argv).workers
    settings = settings_or_exit("collector")
    workers = asked if asked is not None else _workers(str(settings.collector_workers))
    configure_logging("collector", settings.log_level)
    ensure_topics_or_exit(settings)
    logging.getLogger(__name__).info(
        "collector on %s, %d worker(s)", settings.collector_url, workers
    )
    host, port = settings.collector_host, settings.collector_port
    # access_log=False: a log line per request costs more than validating its event
    if workers == 1:
        app = app_from_environment()
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
        return
    uvicorn.run(
        "collector.__main__:worker_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
