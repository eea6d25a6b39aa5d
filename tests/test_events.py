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


def test_attended_transfer_names_the_caller_and_every_channel() -> None:
    frame = {"Event": "AttendedTransfer", "Result": "Success",
             "OrigTransfererChannel": "Local/1001@agents-0001;1",
             "OrigTransfererUniqueid": "1795000006.3",
             "SecondTransfererChannel": "Local/hotline-en@transfer-0002;1",
             "SecondTransfererUniqueid": "1795000014.9",
             "TransfereeChannel": "Local/12345@from-pstn-0000;2",
             "TransfereeUniqueid": "1795000005.1",
             "TransferTargetChannel": "Local/1002@agents-0003;1",
             "TransferTargetUniqueid": "1795000015.12", "DestType": "Bridge"}
    e = ev.to_event(frame, 3.0)
    assert isinstance(e, ev.AttendedTransferred) and e.transferee == "1795000005.1"
    assert e.uniqueids == ("1795000006.3", "1795000014.9", "1795000005.1", "1795000015.12")
    assert "Local/hotline-en@transfer-0002;1" in e.channels and len(e.channels) == 4
    # A failed transfer joined nobody; nor did one without a transferee (Asterisk sends
    # the Transferee fields only when there is one).
    assert ev.to_event({**frame, "Result": "Fail"}, 3.0) is None
    assert ev.to_event({k: v for k, v in frame.items() if k != "TransfereeUniqueid"},
                       3.0) is None
