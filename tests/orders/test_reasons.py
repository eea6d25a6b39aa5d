"""System reasons on the trail: stored as codes, said in Chinese and English from one
table, old text rows still read; a person's reason stays as typed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from callcenter.orders.lifecycle import IllegalStep, Role, State, Step, apply
from callcenter.orders.reasons import (
    OUTCOMES,
    REASONS,
    SystemReason,
    from_legacy,
    parse,
    render,
    rendered,
)
from callcenter.orders.store import record_json
from tests.orders.test_lifecycle import SUPERVISOR, SYSTEM, URBAN, reach

UNREACHABLE = SystemReason("visit_unreachable", {"attempt": 2, "outcome": "busy"})


def test_each_code_is_said_in_both_languages_with_its_parameters() -> None:
    assert render(UNREACHABLE) == "第 2 次回访外呼未接通：占线"
    assert render(UNREACHABLE, "en") == "Return-visit call 2 not reached: busy"
    merged = SystemReason("merge_follow", {"lead": "202611300007"})
    assert render(merged) == "并案：随主件 202611300007 办理"
    assert render(merged, "en") == "Merged: handled with lead order 202611300007"
    assert render(SystemReason("visit_auto"), "en") == "Automatic return-visit call"
    # The PBX's own words come after, as they are.
    odd = SystemReason("visit_unreachable", {"attempt": 1, "outcome": "failed"}, "No route")
    assert render(odd) == "第 1 次回访外呼未接通：呼叫失败（No route）"
    assert render(odd, "en") == "Return-visit call 1 not reached: call failed (No route)"
    for code, (params, zh, en) in REASONS.items():  # no sentence misses a parameter
        values = {p: "no_answer" if p == "outcome" else 1 for p in params}
        assert "{" not in render(SystemReason(code, values)) + render(SystemReason(code, values), "en")
    assert all(zh and en and zh != en for zh, en in OUTCOMES.values())


def test_codes_and_parameters_are_checked_where_made_and_where_read() -> None:
    with pytest.raises(ValueError, match="unknown system reason"):
        SystemReason("because")
    with pytest.raises(ValueError, match="takes attempt, outcome"):
        SystemReason("visit_unreachable", {"attempt": 1})
    with pytest.raises(ValueError, match="unknown call outcome"):
        SystemReason("visit_unreachable", {"attempt": 1, "outcome": "exploded"})
    assert parse(UNREACHABLE.as_dict()) == UNREACHABLE
    for bad in (None, "visit_auto", {"code": 3}, {"code": "nope"},
                {"code": "visit_unreachable", "attempt": [1], "outcome": "busy"}):
        assert parse(bad) is None


def test_a_system_step_stores_the_code_and_a_persons_reason_stays_text() -> None:
    flow = reach(State.COMPLETED)
    flow.do(Step.START_RETURN_VISIT, SYSTEM, SystemReason("visit_auto"))
    flow.do(Step.VISIT_UNREACHABLE, SYSTEM, UNREACHABLE)
    auto, unreachable = flow.records[-2:]
    assert auto.data["reason_code"] == {"code": "visit_auto"}
    assert unreachable.data["reason_code"] == {"code": "visit_unreachable", "attempt": 2,
                                              "outcome": "busy"}
    assert unreachable.reason == "第 2 次回访外呼未接通：占线"  # for readers without codes
    doc = record_json(unreachable)
    assert (doc["reason"], doc["reason_en"]) == ("第 2 次回访外呼未接通：占线",
                                                 "Return-visit call 2 not reached: busy")

    returned = reach(State.RETURNED).records[-1]
    assert returned.reason == "不在管辖范围" and "reason_code" not in returned.data
    doc = record_json(returned)
    assert doc["reason"] == "不在管辖范围" and "reason_en" not in doc


def test_a_person_cannot_slip_a_code_in_through_the_data() -> None:
    flow = reach(State.RETURNED)
    with pytest.raises(IllegalStep, match="unexpected data"):
        apply(flow.order, Step.REFUSE_RETURN, SUPERVISOR, flow.clock + timedelta(minutes=1),
              "请继续办理", reason_code={"code": "visit_auto"})


def test_old_rows_written_as_text_read_as_their_codes() -> None:
    cases = {
        "automatic return-visit call": {"code": "visit_auto"},
        "并案：随主件 202611300007 办理": {"code": "merge_follow", "lead": "202611300007"},
        "return-visit call 3: no answer": {"code": "visit_unreachable", "attempt": 3,
                                           "outcome": "no_answer"},
        "return-visit call 1: no keys pressed": {"code": "visit_unreachable", "attempt": 1,
                                                 "outcome": "no_keys"},
        "return-visit call 2: failed: Channel unavailable": {
            "code": "visit_unreachable", "attempt": 2, "outcome": "failed",
            "detail": "Channel unavailable"},
        "return-visit call 1: reason 7": {"code": "visit_unreachable", "attempt": 1,
                                          "outcome": "other", "detail": "reason 7"},
    }
    for text, code in cases.items():
        got = from_legacy(text)
        assert got is not None and got.as_dict() == code, text
    for typed in ("不在管辖范围", "", None, "automatic return-visit call, please"):
        assert from_legacy(typed) is None
    assert rendered({}, "return-visit call 3: no answer") == {
        "zh": "第 3 次回访外呼未接通：无人接听", "en": "Return-visit call 3 not reached: no answer"}


def test_old_text_is_read_as_a_code_only_on_the_systems_own_steps() -> None:
    flow = reach(State.COMPLETED)
    flow.do(Step.START_RETURN_VISIT, SYSTEM, "automatic return-visit call")  # as stored before
    assert record_json(flow.records[-1])["reason_en"] == "Automatic return-visit call"
    flow = reach(State.RETURNED)
    flow.do(Step.REFUSE_RETURN, SUPERVISOR, "return-visit call 1: busy")  # a person typed it
    doc = record_json(flow.records[-1])
    assert doc["reason"] == "return-visit call 1: busy" and "reason_en" not in doc
    assert URBAN.role is Role.DEPARTMENT
