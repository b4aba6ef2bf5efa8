"""CORS for the collector: browsers on the allowed origins may send events to it.

The browser SDK (``sdk-browser/``) posts JSON with ``Authorization`` and
``X-User-Token`` headers, so every cross-origin send is preflighted: the ``OPTIONS``
request must be answered with the origin, the method and those headers allowed.

CORS is not authentication: write keys and user tokens are. It only decides which
pages' scripts may read the collector's answers (and send preflighted requests).
Listed origins are echoed and may send credentials (``navigator.sendBeacon`` always
does); ``"*"`` allows any origin but, as the Fetch standard demands, never with
credentials.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from learnstream.settings import Settings

ANY_ORIGIN = "*"
ALLOWED_METHODS = ("GET", "POST")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "Content-Encoding", "X-User-Token")
# The SDK waits as long as a 503's Retry-After says; a cross-origin script can read only
# the response headers listed here.
EXPOSED_HEADERS = ("Retry-After",)
# Browsers cache a preflight this long (Chromium caps it at 2 h): one OPTIONS per page
# and ten minutes, not one per batch.
PREFLIGHT_MAX_AGE_S = 600


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Answer preflights and add CORS headers for ``settings.cors_allowed_origins``;
    with none configured the app stays same-origin only. Call before the app starts."""
    origins = list(dict.fromkeys(settings.cors_allowed_origins))
    if not origins:
        return
    any_origin = ANY_ORIGIN in origins
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[ANY_ORIGIN] if any_origin else origins,
        allow_methods=list(ALLOWED_METHODS),
        allow_headers=list(ALLOWED_HEADERS),
        allow_credentials=not any_origin,
        expose_headers=list(EXPOSED_HEADERS),
        max_age=PREFLIGHT_MAX_AGE_S,
    )
