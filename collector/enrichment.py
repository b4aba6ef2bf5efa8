"""Server-side fields added to an accepted event before it is published.

The event time is already corrected for the device's clock by validation
(``schemas.event_time``): a corrected time is checked against the supported range
before it is accepted, so correcting here, after the checks, would be too late."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property, lru_cache
from typing import Any

from ua_parser import parse as parse_ua

from schemas.catalog import EventType

# Seed 004: standard 7 years, sensitive 3 years, PII 1 year, system events 1 year.
RETENTION_DAYS = {"standard": 2555, "sensitive": 1095, "pii": 365}
SYSTEM_RETENTION_DAYS = 365
IPV4_KEPT_BITS = 24
IPV6_KEPT_BITS = 48


@dataclass(frozen=True)
class Sender:
    """What the request itself says about the device, beyond the payload."""

    ip: str | None  # as seen by the collector (or the trusted proxy header); never stored
    user_agent: str | None  # the request's User-Agent header

    @cached_property
    def network(self) -> str | None:
        """The truncated address, worked out once per request, not once per event."""
        return truncate_ip(self.ip)


@dataclass(frozen=True)
class EnrichmentPolicy:
    ip_handling: str  # "truncate" | "drop"


def default_retention_days(event_type: EventType, privacy_level: str) -> int:
    if event_type.category == "system_performance":
        return SYSTEM_RETENTION_DAYS
    return RETENTION_DAYS[privacy_level]


def truncate_ip(address: str | None) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) network an address is in; None if it isn't one."""
    if not address:
        return None
    octets = address.strip().split(".")
    if len(octets) == 4 and all(_is_octet(o) for o in octets):
        # a dotted quad, the usual case: by hand, 20x quicker than ipaddress, same result
        return f"{octets[0]}.{octets[1]}.{octets[2]}.0"
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = IPV4_KEPT_BITS if ip.version == 4 else IPV6_KEPT_BITS
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False).network_address)


def _is_octet(text: str) -> bool:
    """One part of a dotted quad as ipaddress reads it: 0-255, ASCII digits, no leading
    zero (ipaddress refuses 010: octal or decimal is ambiguous)."""
    return (
        0 < len(text) <= 3
        and text.isascii()
        and text.isdigit()
        and (text == "0" or text[0] != "0")
        and int(text) <= 255
    )


@lru_cache(maxsize=4096)  # apps send the same few user agents over and over
def parsed_user_agent(user_agent: str) -> tuple[str | None, str | None, str | None]:
    """(platform, browser, version) from a user agent, by the uap-core rules."""
    result = parse_ua(user_agent)
    # cut to the envelope's field limits; uap-core names are far shorter in practice
    platform = result.os.family[:32] if result.os and result.os.family != "Other" else None
    agent = result.user_agent
    if agent is None or agent.family == "Other":
        return platform, None, None
    version = ".".join(p for p in (agent.major, agent.minor) if p)[:64] or None
    return platform, agent.family[:64], version


def enrich(
    event_type: EventType,
    datum: dict[str, Any],
    received_at: datetime,
    sender: Sender,
    policy: EnrichmentPolicy,
) -> dict[str, Any]:
    enriched = dict(datum)
    enriched["received_at"] = received_at
    if enriched.get("retention_days") is None:
        enriched["retention_days"] = default_retention_days(event_type, enriched["privacy_level"])
    enriched["client_ip"] = sender.network if policy.ip_handling == "truncate" else None
    enriched["device_info"] = _with_parsed_user_agent(datum.get("device_info"), sender.user_agent)
    return enriched


def _with_parsed_user_agent(
    device_info: dict[str, Any] | None, header_user_agent: str | None
) -> dict[str, Any] | None:
    """Fill platform/browser/version the client left empty from its user agent (the
    payload's, else the request's header, which is the browser's own for web apps)."""
    info = dict(device_info) if device_info else {}
    user_agent = info.get("user_agent") or header_user_agent
    if not user_agent:
        return device_info
    platform, browser, version = parsed_user_agent(user_agent[:1024])
    info.setdefault("user_agent", None)
    info["user_agent"] = info["user_agent"] or user_agent[:1024]
    for name, value in (("platform", platform), ("browser", browser), ("version", version)):
        if info.get(name) is None:
            info[name] = value
    for name in ("screen_resolution", "timezone"):
        info.setdefault(name, None)
    return info


def partition_key(datum: dict[str, Any]) -> bytes:
    """One learner's events share a partition; anonymous ones group by session."""
    key = datum.get("user_id") or datum.get("session_id") or datum["event_id"]
    return str(key).encode()
