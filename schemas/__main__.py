"""``python -m schemas serve [--host H] [--port P]``: the schema files as a Confluent
Schema Registry (read API, ``schemas.registry_api``) on their own, for consumers of a
deployment that runs no sink nearby. Topic subjects take ``LEARNSTREAM_TOPIC_PREFIX``."""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI

from learnstream.logs import configure_logging
from learnstream.startup import settings_or_exit
from schemas.registry_api import file_registry_router


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m schemas")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the Confluent registry read API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8082)
    args = parser.parse_args(argv)
    settings = settings_or_exit("schema registry")
    configure_logging("schemas", settings.log_level)
    app = FastAPI(title="learnstream schema registry (read-only)", version="1")
    app.include_router(file_registry_router(settings.topic))
    uvicorn.run(app, host=args.host, port=args.port, log_config=None)


if __name__ == "__main__":
    main()
