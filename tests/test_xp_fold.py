"""XP rules and the fold's algebra."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.events import Event
from projections.rounding import round_half_up
from projections.xp import LESSON_XP, XpState, apply_xp, xp_for

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(event_type: str, **properties: object) -> Event:
    return Event("e1", event_type, T0, "u1", None, properties)


@pytest.mark.parametrize(
    ("value", "rounded"),
    [(0.5, 1), (1.5, 2), (2.5, 3), (84.5, 85), (84.49, 84), (0.49999999999999994, 0), (100, 100)],
)
def test_round_half_up(value: float, rounded: int) -> None:
    assert round_half_up(value) == rounded


def test_rules() -> None:
    assert xp_for(event("lesson_completed", content_id="l")) == LESSON_XP == 50
    assert xp_for(event("quiz_completed", score=72.5)) == 73
    assert xp_for(event("session_started")) == 0


events = st.lists(
    st.one_of(
        st.builds(lambda: event("lesson_completed")),
        st.builds(lambda s: event("quiz_completed", score=s), st.floats(0, 100)),
        st.builds(lambda: event("page_view")),
    ),
    max_size=40,
)


@given(events)
def test_total_is_the_sum_of_awards_in_any_order(log: list[Event]) -> None:
    def fold(items: list[Event]) -> XpState:
        state = XpState()
        for item in items:
            state, _ = apply_xp(state, item)
        return state

    forward, backward = fold(log), fold(list(reversed(log)))
    assert forward == backward
    assert forward.xp == sum(xp_for(e) for e in log)
    assert forward.events_applied == len(log)


@given(events)
def test_every_award_is_announced_with_the_running_total(log: list[Event]) -> None:
    state = XpState()
    for item in log:
        before = state.xp
        state, outputs = apply_xp(state, item)
        awarded = xp_for(item)
        if awarded:
            assert len(outputs) == 1
            assert outputs[0].amount == awarded and outputs[0].total_xp == before + awarded
        else:
            assert outputs == []


def test_event_from_json_and_avro_shapes_agree() -> None:
    from_json = Event.from_envelope(
        {
            "event_id": "e",
            "event_type": "quiz_completed",
            "timestamp": "2026-01-01T01:00:00+01:00",
            "user_id": "u",
            "device_info": {"timezone": "Europe/Paris"},
            "properties": {"score": 3.0},
        }
    )
    from_avro = Event.from_envelope(
        {
            "event_id": "e",
            "event_type": "quiz_completed",
            "timestamp": T0,
            "user_id": "u",
            "device_info": {"timezone": "Europe/Paris"},
            "properties": {"score": 3.0},
        }
    )
    assert from_json == from_avro
