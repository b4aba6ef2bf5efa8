"""What the collector's OpenAPI document says about its endpoints.

The endpoints read the raw body themselves (so that a bad body is explained field by
field and dead-lettered rather than bounced by a framework), which means the request
and response shapes have to be declared here. The event shape is derived from the
envelope schema, so the document cannot drift from what validation enforces.
"""

from __future__ import annotations

from typing import Any

from schemas.catalog import default_catalog, load_named_schema

DESCRIPTION = """\
Event intake for learnstream. Send one event to `/v1/events` or up to 500 to
`/v1/events/batch`. `202` means Kafka has acknowledged every accepted event. Refused
events are answered with each failing field and kept in the dead-letter topic.

With write keys configured, send `Authorization: Bearer <write key>`; the key decides
the organization. Organizations with end-user tokens also need `X-User-Token: <JWT>`
(HS256, `sub` and `exp` required); `sub` becomes the user_id."""

_ERRORS: dict[str, Any] = {
    "type": "object",
    "required": ["errors"],
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        }
    },
}
_UNAVAILABLE = {
    "description": "Kafka did not acknowledge in time; retry after Retry-After seconds",
    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    "content": {"application/json": {"schema": {"type": "object"}}},
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERRORS}}}


def _avro_to_json_schema(avro: Any) -> dict[str, Any]:
    """Enough of Avro -> JSON Schema for the envelope: records, nullable unions, enums,
    timestamps (ISO 8601 strings on the wire) and primitives."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        inner = _avro_to_json_schema(branches[0]) if len(branches) == 1 else {}
        return {"anyOf": [inner, {"type": "null"}]} if "null" in avro else inner
    if isinstance(avro, str):
        return {
            "string": {"type": "string"},
            "int": {"type": "integer"},
            "long": {"type": "integer"},
            "double": {"type": "number"},
            "float": {"type": "number"},
            "boolean": {"type": "boolean"},
        }.get(avro, {})
    kind = avro.get("type")
    if avro.get("logicalType") == "timestamp-millis":
        return {"type": "string", "format": "date-time"}
    if avro.get("logicalType") == "uuid":
        return {"type": "string", "format": "uuid"}
    if kind == "enum":
        return {"type": "string", "enum": list(avro["symbols"])}
    if kind == "record":
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                f["name"]: {**_field_json_schema(f), "description": f.get("doc", "")}
                for f in avro["fields"]
                if not f.get("ls.server_owned")
            },
            "required": [f["name"] for f in avro["fields"] if "default" not in f],
        }
    return _avro_to_json_schema(kind) if isinstance(kind, str | list) else {}


def _field_json_schema(field: dict[str, Any]) -> dict[str, Any]:
    """A field's JSON schema; ids that take integers (``ls.coerce``) say so."""
    schema = _avro_to_json_schema(field["type"])
    if field.get("ls.coerce") == "string":
        return {"anyOf": [schema, {"type": "integer"}]}
    return schema


def event_json_schema() -> dict[str, Any]:
    schema = _avro_to_json_schema(load_named_schema("envelope.avsc"))
    schema["properties"]["event_type"] = {"type": "string", "enum": sorted(default_catalog())}
    schema["properties"]["properties"] = {
        "type": "object",
        "description": "Typed per event_type: schemas/avro/properties/<event_type>.avsc",
    }
    return schema


_EVENT = event_json_schema()
_BATCH_BODY = {
    "type": "object",
    "required": ["events"],
    "additionalProperties": False,
    "properties": {
        "sent_at": {"type": "string", "format": "date-time", "description": "device clock"},
        "events": {"type": "array", "maxItems": 500, "items": _EVENT},
    },
}
_COMMON_ERRORS = {
    "400": _error(
        "Body is not JSON: malformed, not UTF-8, a duplicate key, nested over 32 levels, "
        "or bad gzip"
    ),
    "401": _error("Missing or unknown write key, or a missing or invalid end-user token"),
    "413": _error("Body (decompressed), batch or encoded event too large"),
    "415": _error("Content-Type is not JSON, or Content-Encoding is not gzip"),
    "503": _UNAVAILABLE,
}

SINGLE: dict[str, Any] = {
    "openapi_extra": {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _EVENT}}}
    },
    "responses": {
        "202": {
            "description": "Stored in Kafka",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "status": {"type": "string", "enum": ["accepted"]},
                            "event_id": {"type": "string", "format": "uuid"},
                        },
                    }
                }
            },
        },
        **_COMMON_ERRORS,
        "403": _error("The event names another organization or learner than the credentials"),
        "422": _error("The event fails validation; each failing field is named"),
    },
}

BATCH: dict[str, Any] = {
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _BATCH_BODY}},
        }
    },
    "responses": {
        "202": {
            "description": "Every accepted event is stored in Kafka; the rest are explained",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "accepted": {"type": "integer"},
                            "rejected": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "index": {"type": "integer"},
                                        "event_id": {
                                            "anyOf": [{"type": "string"}, {"type": "null"}]
                                        },
                                        "errors": _ERRORS["properties"]["errors"],
                                    },
                                },
                            },
                        },
                    }
                }
            },
        },
        **_COMMON_ERRORS,
        "422": _error("The body is not an object with an events array"),
    },
}
