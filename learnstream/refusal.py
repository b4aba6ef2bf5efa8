"""The one shape of a request refused for its own fault: an HTTP 4xx and why, in words."""

from __future__ import annotations


class Refusal(Exception):
    """Raised where the reason is found; the HTTP edge answers ``status`` with ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
