"""AMI frames to typed events: known events with bad fields are MalformedEvent, nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acd import events as ev

FIELDS = ["Queue", "Uniqueid", "Interface", "MemberName", "HoldTime", "TalkTime", "RingTime",
          "Position", "OriginalPosition", "Paused", "PausedReason", "Status", "CallsTaken",
          "CallerIDNum", "CallerIDName", "Channel", "Reason", "InCall", "ChanVariable"]


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(ev.TRANSLATORS) + ["Newexten", "VarSet", ""]),
       headers=st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=12), max_size=12))
def test_any_frame_translates_or_is_malformed(name: str, headers: dict[str, str]) -> None:
    frame = {"Event": name, **headers}
    try:
        event = ev.to_event(frame, 1.0)
    except ev.MalformedEvent as exc:
        assert name in str(exc)
        return
    assert event is None or event.at == 1.0


@pytest.mark.parametrize("frame,message", [
    ({"Event": "AgentConnect", "Queue": "q", "Uniqueid": "1", "Interface": "i"}, "HoldTime"),
    ({"Event": "AgentConnect", "Queue": "q", "Uniqueid": "1", "Interface": "i",
      "HoldTime": "abc"}, "not a number"),
    ({"Event": "QueueCallerJoin", "Uniqueid": "1"}, "missing Queue"),
    ({"Event": "QueueMemberPause", "Queue": "q"}, "missing Interface"),
])
def test_missing_or_bad_fields_are_named(frame: dict[str, str], message: str) -> None:
    with pytest.raises(ev.MalformedEvent, match=message):
        ev.to_event(frame, 1.0)


def test_unknown_events_are_ignored() -> None:
    assert ev.to_event({"Event": "RTCPSent"}, 1.0) is None
    assert ev.to_event({"Response": "Success"}, 1.0) is None


def test_unknown_caller_id_is_blank() -> None:
    e = ev.to_event({"Event": "QueueCallerJoin", "Queue": "q", "Uniqueid": "1",
                     "CallerIDNum": "<unknown>", "CallerIDName": "<unknown>"}, 2.0)
    assert isinstance(e, ev.CallerJoined) and e.caller_num == "" and e.caller_name == ""
