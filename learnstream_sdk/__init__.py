"""learnstream's Python client: ``Tracker.track`` events; they reach the collector
even across network outages and restarts of the app's own process."""

from learnstream_sdk.client import FlushResult, Tracker
from learnstream_sdk.ids import uuid7

__all__ = ["FlushResult", "Tracker", "uuid7"]
