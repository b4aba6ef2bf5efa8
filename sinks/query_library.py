"""The analysts' named queries: ``sinks/queries/<name>.sql``.

Each file starts with comment lines describing the query, then a line declaring its
parameters, ``-- params: days UInt32 = 30; as_of Date = today``. The SQL uses them as
``{days:UInt32}``. Values are checked against their declared type and rendered as
literals, so the same text runs through the read-only query endpoint or directly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import resources

_PLACEHOLDER = re.compile(r"\{(\w+):(\w+)\}")
_PARAMS_LINE = "-- params:"


class QueryError(ValueError):
    pass


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str  # UInt32 | Date | String
    default: str | None

    def literal(self, value: str) -> str:
        if self.type == "UInt32":
            if not value.isdigit() or int(value) >= 2**32:
                raise QueryError(f"--param {self.name}: {value!r} is not a non-negative integer")
            return str(int(value))
        if self.type == "Date":
            moment = datetime.now(UTC).date() if value == "today" else None
            try:
                moment = moment or date.fromisoformat(value)
            except ValueError:
                raise QueryError(f"--param {self.name}: {value!r} is not YYYY-MM-DD") from None
            return f"toDate('{moment.isoformat()}')"
        if self.type == "String":
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        raise QueryError(f"parameter {self.name} has unsupported type {self.type}")


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str
    parameters: tuple[Parameter, ...]
    sql: str

    def render(self, given: Mapping[str, str]) -> str:
        known = {p.name: p for p in self.parameters}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise QueryError(f"{self.name} has no parameter {', '.join(unknown)}")
        literals = {}
        for p in self.parameters:
            value = given.get(p.name, p.default)
            if value is None:
                raise QueryError(f"{self.name} needs --param {p.name}=...")
            literals[p.name] = p.literal(value)
        return _PLACEHOLDER.sub(lambda m: literals[m.group(1)], self.sql)


def _parse(name: str, text: str) -> NamedQuery:
    lines = text.splitlines()
    header = [line[2:].strip() for line in lines if line.startswith("--")]
    declared = next((h for h in header if h.startswith("params:")), "params:")
    parameters = []
    for spec in filter(None, (s.strip() for s in declared.removeprefix("params:").split(";"))):
        left, _, default = spec.partition("=")
        pname, ptype = left.split()
        parameters.append(Parameter(pname, ptype, default.strip() or None))
    description = " ".join(h for h in header if not h.startswith("params:"))
    body = "\n".join(line for line in lines if not line.startswith("--")).strip()
    used = {m.group(1) for m in _PLACEHOLDER.finditer(body)}
    if used != {p.name for p in parameters}:
        raise QueryError(f"{name}.sql: placeholders {sorted(used)} differ from its params line")
    return NamedQuery(name, description, tuple(parameters), body)


def load() -> dict[str, NamedQuery]:
    folder = resources.files("sinks.queries")
    return {
        f.name.removesuffix(".sql"): _parse(f.name.removesuffix(".sql"), f.read_text("utf-8"))
        for f in sorted(folder.iterdir(), key=lambda f: f.name)
        if f.name.endswith(".sql")
    }
