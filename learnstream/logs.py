"""One readable log format for every learnstream process."""

from __future__ import annotations

import logging


def configure_logging(service: str, level: str) -> None:
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {service:<10} %(levelname)-7s %(name)s: %(message)s",
        force=True,
    )
    # aiokafka narrates every coordinator hiccup at WARNING; the pipeline's own
    # logs say what matters.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
