"""Call-back queue and return-visit scheduler: fed times, no clock."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from ivr.callbacks import (
    CallbackGaveUp,
    CallbackQueue,
    DialReturnVisit,
    HandToOperator,
    OriginateCallback,
    ReturnVisitScheduler,
)

SH = ZoneInfo("Asia/Shanghai")


def at(hour: int, minute: int = 0, day: int = 23) -> float:
    return datetime(2026, 11, day, hour, minute, tzinfo=SH).timestamp()


VARS = {"HOTLINE": "12345", "CATEGORY": "consult"}


def test_callbacks_keep_their_place() -> None:
    q = CallbackQueue()
    q.request("b", "hotline", "13900000002", 200.0)
    q.request("a", "hotline", "13900000001", 100.0, VARS)
    q.request("a", "hotline", "13900000001", 300.0)  # asking again keeps the first place
    q.request("x", "hotline-en", "13900000009", 50.0)
    assert [e.id for e in q.waiting("hotline")] == ["a", "b"]
    assert q.position("b") == 2 and q.position("nope") is None
    # a caller on the line since 90 is ahead of everybody: no call-back yet
    assert q.agent_free("hotline", "PJSIP/1001", 400.0, oldest_waiting_since=90.0) == []
    # the oldest caller on the line joined at 150: "a" (asked at 100) goes first
    assert q.agent_free("hotline", "PJSIP/1001", 400.0, oldest_waiting_since=150.0) == [
        OriginateCallback("a", "hotline", "13900000001", "PJSIP/1001", 1, VARS)]
    # "a" is being called; "b" asked after the caller on the line, so it waits
    assert q.agent_free("hotline", "PJSIP/1002", 401.0, oldest_waiting_since=150.0) == []
    assert q.agent_free("hotline", "PJSIP/1002", 401.0)[0].id == "b"
    q.answered("a")
    assert [e.id for e in q.waiting("hotline")] == ["b"]


def test_failed_callbacks_retry_then_give_up() -> None:
    q = CallbackQueue(retry_after_s=60, max_attempts=2)
    q.request("a", "hotline", "13900000001", 0.0)
    assert q.agent_free("hotline", "PJSIP/1001", 10.0)[0].attempt == 1
    assert q.failed("a", 20.0) == []
    assert q.agent_free("hotline", "PJSIP/1001", 79.0) == []  # not before 80
    assert q.position("a") == 1  # still first in line
    assert q.agent_free("hotline", "PJSIP/1001", 80.0)[0].attempt == 2
    assert q.failed("a", 90.0) == [CallbackGaveUp("a", "hotline", "13900000001", 2)]
    assert len(q) == 0
    assert q.failed("a", 91.0) == []


def test_return_visits_in_calling_hours_retry_then_hand_over() -> None:
    s = ReturnVisitScheduler(schedule=(2 * 3600, 24 * 3600), hours=(9, 20))
    v = s.add("WO-1", "13800138000", at(21, 30))  # completed in the evening
    assert v.next_at == at(9, day=24)
    assert s.due(at(23)) == []
    assert s.due(at(9, day=24)) == [DialReturnVisit("WO-1", "13800138000", 1)]
    assert s.due(at(9, 5, day=24)) == []  # in flight
    assert s.result("WO-1", "no_answer", at(9, 1, day=24)) == []
    assert s.due(at(11, day=24)) == []
    assert s.due(at(11, 1, day=24)) == [DialReturnVisit("WO-1", "13800138000", 2)]
    s.result("WO-1", "no_answer", at(11, 2, day=24))
    assert s.due(at(11, 2, day=25)) == [DialReturnVisit("WO-1", "13800138000", 3)]
    assert s.result("WO-1", "no_answer", at(11, 3, day=25)) == [
        HandToOperator("WO-1", "13800138000", 3)]
    assert s.get("WO-1") is None


def test_a_retry_falling_at_night_waits_for_the_morning() -> None:
    s = ReturnVisitScheduler(schedule=(2 * 3600,))
    s.add("WO-2", "13800138000", at(19))
    assert [d.order_id for d in s.due(at(19))] == ["WO-2"]
    s.result("WO-2", "busy", at(19, 10))
    v = s.get("WO-2")
    assert v is not None and v.next_at == at(9, day=24)
    s.due(at(9, day=24))
    assert s.result("WO-2", "answered", at(9, 5, day=24)) == []
    assert s.get("WO-2") is None
