"""Settings for an entry point: a value a setting cannot take stops the service at once,
with one line naming the variable and what it may be, never a traceback."""

from __future__ import annotations

import re
import sys

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import SettingsError

from learnstream.settings import Settings

EX_CONFIG = 78  # sysexits.h: "configuration error"; a restart cannot mend it


def _variable(error: ErrorDetails) -> str:
    name, *inner = error["loc"]
    return f"LEARNSTREAM_{str(name).upper()}" + "".join(f"[{part}]" for part in inner)


def _one(error: ErrorDetails) -> str:
    variable = _variable(error)
    if error["type"] == "literal_error":  # an enumerated setting: say what it may be
        expected = error.get("ctx", {}).get("expected", "")
        return f"{variable} must be {expected}, not {error['input']!r}"
    # other values are not echoed: a malformed secret would end up in the logs
    return f"{variable}: {error['msg']}"


def refusal(error: ValidationError) -> str:
    """Every refused setting, on one line."""
    return "; ".join(_one(e) for e in error.errors(include_url=False))


def settings_or_exit(service: str) -> Settings:
    """``Settings()`` from the environment, or exit EX_CONFIG with one line on stderr."""
    try:
        return Settings()
    except ValidationError as exc:
        reason = refusal(exc)
    except SettingsError as exc:  # a JSON setting that does not parse
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"LEARNSTREAM_{field.group(1).upper()}" if field else "a setting"
        reason = f"{name} is not valid JSON"
    print(f"{service}: refusing to start: {reason}", file=sys.stderr, flush=True)
    raise SystemExit(EX_CONFIG) from None
