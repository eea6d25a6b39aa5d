"""The pure parts of finding orders and merging: bigram words, the search box's
reading, the FTS5 / tsquery expressions, similarity and the FOLLOW table."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from callcenter.orders.lifecycle import (
    Actor,
    Caller,
    Deadlines,
    Reply,
    Role,
    State,
    Step,
    open_order,
)
from callcenter.orders.merge import next_step, similarity
from callcenter.orders.search import parse_query
from callcenter.orders.words import fts5_match, order_search_text, tokens, ts_match

AT = datetime(2026, 11, 23, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def test_words_are_bigrams_and_latin_words() -> None:
    assert tokens("路灯不亮 LED灯") == [["路灯", "灯不", "不亮"], ["led"], ["灯"]]
    assert order_search_text("路灯坏了", "路灯", "光明路") == "路灯 光明 明路 路灯 灯坏 坏了"
    assert fts5_match([["路灯", "灯坏"], ["灯"]]) == '"路灯 灯坏" AND "灯"*'
    assert ts_match([["路灯", "灯坏"], ["led"]]) == "('路灯' & '灯坏') & ('led')"
    # State and departments are tokens of their own, matched beside the words.
    text = order_search_text("路灯坏了", state="in_progress", departments=("urban_management",))
    assert text.split()[-2:] == ["zqsinprogress", "zqdurbanmanagement"]
    assert fts5_match([["路灯"]], states=["dispatched", "in_progress"], department="housing") \
        == '"路灯" AND ("zqsdispatched" OR "zqsinprogress") AND "zqdhousing"'
    assert ts_match([["路灯"]], states=["returned"]) == "('路灯') & ('zqsreturned')"
    # A lone character beside longer words is dropped (号 of 光明路12号).
    assert parse_query("光明路12号").words == [["光明", "明路"], ["12"]]
    assert parse_query("灯").words == [["灯"]]
    # Nothing of FTS5's or tsquery's syntax survives tokenizing.
    assert tokens('" OR * NEAR( \' & | !') == [["or"], ["near"]]


def test_the_search_box_reads_numbers_phones_names_and_words() -> None:
    assert parse_query("20261123-000123").number == "20261123-000123"
    assert parse_query("20261123000123").number == "20261123-000123"
    assert parse_query("20261123").number == "20261123"
    assert parse_query("13812345678").phone == "13812345678"
    assert parse_query("+86 138-1234-5678").phone == "13812345678"
    assert parse_query("19912345678").phone == "19912345678"  # a mobile, not a date
    q = parse_query("王小明")
    assert q.name == "王小明" and q.words == [["王小", "小明"]]
    assert parse_query("路灯 不亮").name == ""
    assert parse_query("   ").empty_text


def test_similarity() -> None:
    a = "光明路与建设路交叉口的路灯坏了，晚上一片漆黑"
    assert similarity(a, a) == 1.0
    assert similarity(a, "光明路与建设路交叉口路灯坏了一片漆黑") >= 0.6
    assert similarity(a, "广场舞音响太吵") == 0.0
    assert similarity("", a) == 0.0


def _order(state: State, department: str | None = None, replies: tuple[Reply, ...] = ()
           ) -> object:
    from dataclasses import replace

    order, _ = open_order(order_id="1", number="20261123-000001",
                          actor=Actor("op1", Role.OPERATOR, "centre"), at=AT,
                          caller=Caller("张三", "13800000000"), category="路灯", text="路灯坏了",
                          deadlines=Deadlines(AT + timedelta(hours=2), AT + timedelta(days=5)))
    return replace(order, state=state, lead_department=department, replies=replies)


def test_a_follower_takes_the_next_step_towards_its_lead() -> None:
    reply = (Reply("urban_management", "已修复。", AT, True),)
    replied = _order(State.REPLIED, "urban_management", reply)
    completed = _order(State.COMPLETED, "urban_management", reply)
    assert next_step(_order(State.ACCEPTED), _order(State.DISPATCHED, "urban_management")) \
        is None  # the lead has not replied: nothing to follow yet
    assert next_step(_order(State.ACCEPTED), replied) == (
        Step.DISPATCH, {"department": "urban_management"}, True)
    assert next_step(_order(State.DISPATCHED, "housing"), replied) == (
        Step.REDISPATCH, {"department": "urban_management"}, True)
    assert next_step(_order(State.DISPATCHED, "urban_management"), replied) == (
        Step.ACCEPT_HANDLING, {}, False)
    assert next_step(_order(State.IN_PROGRESS, "urban_management"), replied) == (
        Step.REPLY, {"text": "已修复。"}, False)
    assert next_step(_order(State.REPLIED, "urban_management", reply), replied) is None
    assert next_step(_order(State.REPLIED, "urban_management", reply), completed) == (
        Step.COMPLETE, {}, False)
    assert next_step(_order(State.RETURNED, "housing"), completed) == (
        Step.ACCEPT_RETURN, {"department": "urban_management"}, True)
    assert next_step(_order(State.EVALUATED, "urban_management"), completed) is None
