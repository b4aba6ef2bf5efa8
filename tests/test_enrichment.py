"""The collector's server-side fields: IPs never whole, clock skew taken out, user
agents parsed by the maintained uap-core rules."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from collector.enrichment import (
    EnrichmentPolicy,
    Sender,
    enrich,
    parsed_user_agent,
    truncate_ip,
)
from schemas.catalog import default_catalog
from schemas.event_time import corrected_timestamp
from schemas.validation import Accepted, validate_event

CATALOG = default_catalog()
TOLERANCE = timedelta(seconds=5)
RECEIVED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.91 Safari/537.36"
)


def test_ipv4_keeps_its_24_and_ipv6_its_48() -> None:
    assert truncate_ip("203.0.113.77") == "203.0.113.0"
    assert truncate_ip("2001:db8:abcd:12:34:56:78:9a") == "2001:db8:abcd::"
    assert truncate_ip("::ffff:198.51.100.9") == "198.51.100.0"  # IPv4-mapped is IPv4
    assert truncate_ip("not an ip") is None
    assert truncate_ip(None) is None


@given(st.ip_addresses())
def test_a_truncated_address_never_reveals_the_host_part(address: object) -> None:
    ip = ipaddress.ip_address(str(address))
    kept = truncate_ip(str(ip))
    assert kept is not None
    network = ipaddress.ip_address(kept)
    if network.version == 4:
        expected_bits = 24
        host = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    else:
        expected_bits, host = 48, ip
    assert int(network) & ((1 << (network.max_prefixlen - expected_bits)) - 1) == 0
    assert ipaddress.ip_address(host) in ipaddress.ip_network(f"{kept}/{expected_bits}")


def test_user_agents_become_platform_browser_and_version() -> None:
    assert parsed_user_agent(IPHONE_SAFARI) == ("iOS", "Mobile Safari", "17.4")
    assert parsed_user_agent(WINDOWS_CHROME) == ("Windows", "Chrome", "124.0")
    assert parsed_user_agent("definitely not a browser") == (None, None, None)


def test_small_differences_are_transit_time_not_skew() -> None:
    ts = RECEIVED - timedelta(minutes=3)
    sent = RECEIVED - timedelta(seconds=2)
    assert corrected_timestamp(ts, sent, RECEIVED, TOLERANCE) == (ts, None)
    assert corrected_timestamp(ts, None, RECEIVED, TOLERANCE) == (ts, None)


@given(
    skew_s=st.integers(min_value=-86_400 * 3, max_value=86_400 * 3).filter(lambda s: abs(s) > 5),
    age_s=st.integers(min_value=0, max_value=86_400),
)
def test_a_skewed_device_clock_is_corrected_by_its_own_error(skew_s: int, age_s: int) -> None:
    """The device clock runs skew_s ahead: its timestamps and its sent_at are both off."""
    true_time = RECEIVED - timedelta(seconds=age_s)
    device_ts = true_time + timedelta(seconds=skew_s)
    device_sent = RECEIVED + timedelta(seconds=skew_s)
    assert corrected_timestamp(device_ts, device_sent, RECEIVED, TOLERANCE) == (
        true_time,
        device_ts,
    )


def test_validation_takes_the_device_clock_error_out_of_the_timestamp() -> None:
    sent = {
        "event_id": "0b0d7d3e-6c1a-4f4e-9d55-1a1e3b9c2a10",
        "event_type": "lesson_completed",
        "timestamp": "2026-11-23T11:00:00Z",
        "sent_at": "2026-11-23T11:50:00Z",  # device clock 10 minutes slow
        "user_id": "ada",
        "properties": {"content_id": "lesson-1"},
    }
    outcome = validate_event(CATALOG, sent, RECEIVED, TOLERANCE)
    assert isinstance(outcome, Accepted)
    assert outcome.datum["timestamp"] == RECEIVED - timedelta(minutes=50)
    assert outcome.datum["original_timestamp"] == datetime(2026, 11, 23, 11, 0, tzinfo=UTC)


def test_enrich_fills_only_what_the_client_left_empty() -> None:
    lesson = CATALOG["lesson_completed"]
    datum = {
        "event_id": "e",
        "timestamp": RECEIVED - timedelta(hours=1),
        "privacy_level": "standard",
        "retention_days": None,
        "device_info": {"platform": "my-kiosk", "timezone": "Europe/Paris"},
    }
    policy = EnrichmentPolicy(ip_handling="truncate")
    enriched = enrich(lesson, datum, RECEIVED, Sender("192.0.2.200", WINDOWS_CHROME), policy)
    assert enriched["client_ip"] == "192.0.2.0"
    assert enriched["timestamp"] == datum["timestamp"]  # corrected by validation, before
    assert enriched["received_at"] == RECEIVED
    assert enriched["retention_days"] == 2555
    assert enriched["device_info"]["platform"] == "my-kiosk"  # the client's word stands
    assert enriched["device_info"]["browser"] == "Chrome"
    assert enriched["device_info"]["timezone"] == "Europe/Paris"

    dropped = EnrichmentPolicy(ip_handling="drop")
    assert (
        enrich(lesson, datum, RECEIVED, Sender("192.0.2.200", None), dropped)["client_ip"] is None
    )
