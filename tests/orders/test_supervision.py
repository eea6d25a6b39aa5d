"""Anomaly detectors on histories built through the work-order core itself."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.orders import supervision
from callcenter.orders.lifecycle import (
    Actor,
    AuditRecord,
    Caller,
    Deadlines,
    Order,
    OrderError,
    Role,
    Step,
    apply,
    open_order,
)
from callcenter.orders.lifecycle import Attempt as RefusedAttempt
from callcenter.orders.supervision import (
    SupervisionConfig,
    detect_all,
    dispatch_cycle,
    false_completion,
    jaccard,
    near_duplicate_groups,
    overdue,
    ping_pong,
    repeat_after_completion,
    shingles,
    staff_entered_satisfaction,
    template_reply,
)

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=TZ)  # a Monday

OPERATOR = Actor("op-07", Role.OPERATOR, "centre")
SUPERVISOR = Actor("sup-01", Role.SUPERVISOR, "centre")
CITIZEN = Actor("citizen", Role.CITIZEN)
SYSTEM = Actor("timers", Role.SYSTEM, "system")


def dept(unit: str) -> Actor:
    return Actor(f"h-{unit}", Role.DEPARTMENT, unit)


GREEN, POWER, URBAN, HOUSING = (
    dept("landscaping"),
    dept("power_supply"),
    dept("urban_management"),
    dept("housing"),
)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


class History:
    """Orders of a small city, with every audit record and every refused attempt."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.records: list[AuditRecord] = []
        self.attempts: list[RefusedAttempt] = []

    def open(
        self,
        order_id: str,
        at: datetime,
        *,
        caller: str = "13812345678",
        category: str = "园林绿化",
        text: str = "人行道上的树木歪枝和高压线十分接近，存在安全隐患，希望修剪",
    ) -> History:
        order, record = open_order(
            order_id=order_id,
            number=order_id,
            actor=OPERATOR,
            at=at,
            caller=Caller("李四", caller, ""),
            category=category,
            text=text,
            deadlines=Deadlines(at + timedelta(minutes=30), at + timedelta(days=5)),
        )
        self.orders[order_id] = order
        self.records.append(record)
        return self

    def do(
        self,
        order_id: str,
        step: Step,
        actor: Actor,
        at: datetime,
        reason: str | None = None,
        **data: Any,
    ) -> History:
        self.orders[order_id], record = apply(
            self.orders[order_id], step, actor, at, reason, **data
        )
        self.records.append(record)
        return self

    def attempt(
        self,
        order_id: str,
        step: Step,
        actor: Actor,
        at: datetime,
        reason: str | None = None,
        **data: Any,
    ) -> None:
        with pytest.raises(OrderError) as err:
            apply(self.orders[order_id], step, actor, at, reason, **data)
        assert err.value.attempt is not None
        self.attempts.append(err.value.attempt)

    def handled(
        self, order_id: str, at: datetime, who: Actor = GREEN, text: str = "已修剪完毕"
    ) -> History:
        """Dispatched to ``who``, who signs, replies and completes within the hour."""
        return (
            self.do(order_id, Step.DISPATCH, OPERATOR, at, department=who.unit)
            .do(order_id, Step.ACCEPT_HANDLING, who, at + timedelta(minutes=10))
            .do(order_id, Step.REPLY, who, at + timedelta(minutes=40), text=text)
            .do(order_id, Step.COMPLETE, who, at + timedelta(minutes=50))
        )

    def visited(self, order_id: str, at: datetime, resolved: bool) -> History:
        step = Step.EVALUATE if resolved else Step.REOPEN
        return self.do(order_id, Step.START_RETURN_VISIT, SYSTEM, at).do(
            order_id,
            step,
            CITIZEN,
            at + timedelta(minutes=2),
            source="citizen_keys",
            resolved=resolved,
            satisfaction_operator=3,
        )


def kinds(anomalies: list[supervision.Anomaly]) -> list[str]:
    return [a.kind for a in anomalies]


# --------------------------------------------------------------------------- ping-pong


class TestPingPong:
    def returned_twice(self) -> History:
        h = History().open("o1", T0)
        h.do("o1", Step.DISPATCH, OPERATOR, day(0.01), department="landscaping")
        h.do("o1", Step.RETURN, GREEN, day(0.1), "不在管辖范围")
        h.do("o1", Step.REFUSE_RETURN, SUPERVISOR, day(0.2), "依据不充分")
        h.do("o1", Step.RETURN, GREEN, day(1), "树木已修剪，不存在隐患")
        return h

    def test_two_returns_are_ping_pong(self) -> None:
        (found,) = ping_pong(self.returned_twice().records)
        assert found.kind == "ping_pong" and found.order_ids == ("o1",)
        assert found.evidence["returns"] == 2
        assert [s["reason"] for s in found.evidence["steps"]] == [
            "不在管辖范围",
            "树木已修剪，不存在隐患",
        ]
        assert {s["department"] for s in found.evidence["steps"]} == {"landscaping"}
        assert found.at == day(1)

    def test_one_return_is_not(self) -> None:
        h = History().open("o1", T0)
        h.do("o1", Step.DISPATCH, OPERATOR, day(0.01), department="landscaping")
        h.do("o1", Step.RETURN, GREEN, day(0.1), "不在管辖范围")
        assert ping_pong(h.records) == []
        assert kinds(ping_pong(h.records, min_returns=1)) == ["ping_pong"]
        assert ping_pong(self.returned_twice().records, min_returns=3) == []


class TestDispatchCycle:
    def test_a_b_a_is_a_cycle(self) -> None:
        h = History().open("o1", T0)
        h.do("o1", Step.DISPATCH, OPERATOR, day(0.01), department="landscaping")
        h.do("o1", Step.RETURN, GREEN, day(0.1), "属供电公司")
        h.do("o1", Step.ACCEPT_RETURN, SUPERVISOR, day(0.2), "同意", department="power_supply")
        h.do("o1", Step.REDISPATCH, SUPERVISOR, day(1), "树木归园林", department="landscaping")
        (found,) = dispatch_cycle(h.records)
        assert found.evidence["lead_path"] == ["landscaping", "power_supply", "landscaping"]
        (cycle,) = found.evidence["cycles"]
        assert cycle["departments"] == ["landscaping", "power_supply", "landscaping"]
        assert [s["step"] for s in cycle["steps"]] == ["dispatch", "accept_return", "redispatch"]

    def test_a_b_c_is_not(self) -> None:
        h = History().open("o1", T0)
        h.do("o1", Step.DISPATCH, OPERATOR, day(0.01), department="landscaping")
        h.do("o1", Step.REDISPATCH, OPERATOR, day(0.1), "属供电", department="power_supply")
        h.do("o1", Step.REDISPATCH, OPERATOR, day(0.2), "属城管", department="urban_management")
        assert dispatch_cycle(h.records) == []


# --------------------------------------------------------------------------- false completion


class TestFalseCompletion:
    def test_citizen_says_not_solved(self) -> None:
        h = (
            History()
            .open("o1", T0)
            .handled("o1", day(0.01), text="已修剪")
            .visited("o1", day(1), resolved=False)
        )
        (found,) = false_completion(h.records, now=day(2))
        assert found.evidence["reason"] == "citizen_unsolved"
        assert found.evidence["reply_text"] == "已修剪"
        assert found.evidence["completion"]["department"] == "landscaping"
        assert found.evidence["followed_by"]["source"] == "citizen_keys"
        assert found.evidence["followed_by"]["resolved"] is False

    def test_solved_is_not_false(self) -> None:
        h = History().open("o1", T0).handled("o1", day(0.01)).visited("o1", day(1), resolved=True)
        assert false_completion(h.records, now=day(30)) == []

    def test_completion_sent_back_by_the_centre(self) -> None:
        h = History().open("o1", T0).handled("o1", day(0.01))
        h.do("o1", Step.REJECT_COMPLETION, SUPERVISOR, day(0.5), "未现场核实")
        (found,) = false_completion(h.records, now=day(0.6))
        assert found.evidence["reason"] == "completion_rejected"
        assert found.evidence["followed_by"]["reason"] == "未现场核实"

    def test_nobody_asked_the_citizen(self) -> None:
        h = History().open("o1", T0).handled("o1", day(0.01))
        h.do("o1", Step.START_RETURN_VISIT, SYSTEM, day(1))
        h.do("o1", Step.VISIT_UNREACHABLE, SYSTEM, day(1.1), "无人接听")
        assert false_completion(h.records, now=day(2)) == []
        (found,) = false_completion(h.records, now=day(4))
        assert found.evidence["reason"] == "no_citizen_contact"
        assert found.evidence["return_visit_steps"] == 2
        assert found.evidence["days_without_contact"] > 3
        assert false_completion(h.records, now=day(4), no_contact_after=timedelta(days=7)) == []

    def test_an_answer_on_the_call_that_did_not_solve_it(self) -> None:
        h = History().open("o1", T0)
        h.do("o1", Step.RESOLVE_ON_CALL, OPERATOR, day(0.01), answer="请联系物业")
        h.do("o1", Step.START_RETURN_VISIT, SYSTEM, day(1))
        h.do("o1", Step.REOPEN_AT_CENTRE, CITIZEN, day(1.1), source="citizen_keys", resolved=False)
        (found,) = false_completion(h.records, now=day(2))
        assert found.evidence["reply_text"] == "请联系物业"


# --------------------------------------------------------------------------- template replies

TEMPLATE = "您好，您反映的问题已收悉，我局已安排工作人员于{}月{}日前往现场核查处理，感谢您对城市管理工作的支持。"


class TestTemplateReply:
    def replies(self, texts: list[tuple[str, Actor, str]]) -> list[AuditRecord]:
        h = History()
        for i, (order_id, who, text) in enumerate(texts):
            if order_id not in h.orders:
                h.open(order_id, day(i))
                h.do(order_id, Step.DISPATCH, OPERATOR, day(i), department=who.unit)
                h.do(order_id, Step.ACCEPT_HANDLING, who, day(i))
            h.do(order_id, Step.REPLY, who, day(i) + timedelta(hours=1), text=text)
            h.do(order_id, Step.COMPLETE, who, day(i) + timedelta(hours=2))
            h.do(order_id, Step.REJECT_COMPLETION, SUPERVISOR, day(i) + timedelta(hours=3), "重办")
        return h.records

    def test_one_template_over_three_orders(self) -> None:
        records = self.replies(
            [
                ("o1", URBAN, TEMPLATE.format(3, 5)),
                ("o2", URBAN, TEMPLATE.format(3, 12)),
                ("o3", URBAN, TEMPLATE.format(4, 1) + "谢谢！"),
                ("o4", URBAN, "经现场核查，该路段井盖破损已于今日更换，并设置警示标志。"),
            ]
        )
        (found,) = template_reply(records)
        assert found.order_ids == ("o1", "o2", "o3")
        assert found.evidence["department"] == "urban_management"
        assert len(found.evidence["replies"]) == 3
        assert all(r["similarity_to_leader"] >= 0.8 for r in found.evidence["replies"])

    def test_the_same_words_from_different_departments_or_one_order_are_not(self) -> None:
        records = self.replies(
            [
                ("o1", URBAN, TEMPLATE.format(3, 5)),
                ("o2", HOUSING, TEMPLATE.format(3, 5)),
                ("o3", GREEN, TEMPLATE.format(3, 5)),
                ("o3", GREEN, TEMPLATE.format(3, 6)),  # the same order, answered again
            ]
        )
        assert template_reply(records) == []

    def test_threshold_is_configurable(self) -> None:
        a = "经核查，您反映的小区路灯不亮问题已维修完毕，现已恢复正常照明。"
        b = "经核查，您反映的小区水管漏水问题已维修完毕，现已恢复正常供水。"
        records = self.replies([("o1", URBAN, a), ("o2", URBAN, b)])
        similarity = jaccard(shingles(a), shingles(b))
        assert 0.4 < similarity < 0.8
        assert template_reply(records) == []
        assert kinds(template_reply(records, threshold=0.4)) == ["template_reply"]

    def test_normalisation_ignores_digits_spaces_and_punctuation(self) -> None:
        assert shingles("已于3月5日 处理。") == shingles("已于12月25日处理")
        assert shingles("好") == {"好"}
        assert shingles(" ，。") == frozenset()

    def test_scales_without_comparing_all_pairs(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """20,000 replies in 10 departments: half from two templates, half unique."""
        rng = random.Random(12345)
        alphabet = [chr(c) for c in range(0x4E00, 0x4E00 + 800)]
        # 300 street names, so that a family has hundreds of distinct near-duplicates
        streets = ["".join(rng.choices(alphabet, k=2)) + "路" for _ in range(300)]
        families = [
            "您好，您反映的{}问题已收悉，我局已安排工作人员于{}月{}日前往现场核查处理，感谢您对城市管理工作的支持。",
            "经核实，您反映的{}问题不属于我单位职责范围，建议您联系相关部门反映，电话{}{}，谢谢您的理解。",
        ]
        records = []
        for i in range(20_000):
            if i % 2:
                family = rng.choice(families)
                text = family.format(rng.choice(streets), rng.randint(1, 12), rng.randint(1, 28))
            else:
                text = "".join(rng.choice(alphabet) for _ in range(rng.randint(30, 120)))
            records.append(
                AuditRecord(
                    order_id=f"o{i}",
                    seq=4,
                    step=Step.REPLY,
                    actor_id="h",
                    role=Role.DEPARTMENT,
                    unit=f"d{(i // 2) % 10}",
                    at=T0 + timedelta(minutes=i),
                    from_state=None,  # type: ignore[arg-type]
                    to_state=None,  # type: ignore[arg-type]
                    reason=None,
                    data={"text": text},
                )
            )
        comparisons = 0

        def counting(a: frozenset[str], b: frozenset[str]) -> float:
            nonlocal comparisons
            comparisons += 1
            return jaccard(a, b)

        monkeypatch.setattr(supervision, "jaccard", counting)
        found = template_reply(records)
        flagged = [int(order_id[1:]) for a in found for order_id in a.order_ids]
        assert len(flagged) == len(set(flagged)) == 10_000  # every templated reply, once
        assert all(i % 2 for i in flagged)  # and no unique one
        assert {a.evidence["department"] for a in found} == {f"d{n}" for n in range(10)}
        assert len(found) == 20  # one cluster per template family per department
        assert comparisons < 20_000  # all pairs of distinct texts would be ~1.8 million

    @settings(max_examples=200, deadline=None)
    @given(
        sets=st.lists(
            st.frozensets(st.sampled_from("abcdefghij"), min_size=0, max_size=8), max_size=25
        ),
        threshold=st.sampled_from([0.3, 0.5, 0.8, 1.0]),
    )
    def test_index_agrees_with_a_full_scan(
        self, sets: list[frozenset[str]], threshold: float
    ) -> None:
        assert near_duplicate_groups(sets, threshold) == full_scan_groups(sets, threshold)


def full_scan_groups(sets: list[frozenset[str]], threshold: float) -> list[list[tuple[int, float]]]:
    """The same leader clustering as near_duplicate_groups, comparing with every leader."""
    uniques = sorted(dict.fromkeys(s for s in sets if s), key=len)
    leaders: list[int] = []
    leader_of, similarity = [], []
    for u, tokens in enumerate(uniques):
        scored = [(jaccard(tokens, uniques[v]), -v) for v in leaders]
        matches = [m for m in scored if m[0] >= threshold]
        if matches:
            sim, v = max(matches)
            leader_of.append(-v)
            similarity.append(sim)
        else:
            leaders.append(u)
            leader_of.append(u)
            similarity.append(1.0)
    groups: dict[int, list[tuple[int, float]]] = {}
    for u, tokens in enumerate(uniques):
        groups.setdefault(leader_of[u], []).extend(
            (i, similarity[u]) for i, s in enumerate(sets) if s == tokens
        )
    return [g for _, g in sorted(groups.items()) if len(g) > 1]


# --------------------------------------------------------------------------- deadlines


class TestOverdue:
    def test_never_completed(self) -> None:
        h = History().open("o1", T0)
        h.do("o1", Step.DISPATCH, OPERATOR, day(0.01), department="landscaping")
        h.do("o1", Step.ACCEPT_HANDLING, GREEN, day(0.015))
        assert overdue(h.records, now=day(4)) == []
        (found,) = overdue(h.records, now=day(6))
        assert (found.evidence["deadline"], found.evidence["met_at"]) == ("handling", None)
        assert found.evidence["late_by_hours"] == 24.0
        assert found.at == day(5)

    def test_late_first_response(self) -> None:
        h = History().open("o1", T0)
        h.do("o1", Step.DISPATCH, OPERATOR, day(0.01), department="landscaping")
        h.do("o1", Step.ACCEPT_HANDLING, GREEN, T0 + timedelta(hours=2))
        (found,) = overdue(h.records, now=day(1))
        assert found.evidence["deadline"] == "first_response"
        assert found.evidence["met_by"]["step"] == "accept_handling"
        assert found.evidence["late_by_hours"] == 1.5

    def test_in_time_is_not_overdue(self) -> None:
        h = History().open("o1", T0).handled("o1", day(0.001)).visited("o1", day(1), True)
        assert overdue(h.records, now=day(60)) == []

    def test_supervision_deadline_missed(self) -> None:
        h = History().open("o1", T0)
        h.do("o1", Step.DISPATCH, OPERATOR, day(0.001), department="landscaping")
        h.do("o1", Step.ACCEPT_HANDLING, GREEN, day(0.002))
        h.do("o1", Step.SUPERVISE, SUPERVISOR, day(1), "群众多次来电", deadline=day(2))
        h.do("o1", Step.REPLY, GREEN, day(3), text="已修剪")
        h.do("o1", Step.COMPLETE, GREEN, day(3))
        (found,) = overdue(h.records, now=day(10))
        assert found.evidence["deadline"] == "supervision"
        assert found.evidence["clock_from"]["reason"] == "群众多次来电"
        assert found.evidence["met_at"] == day(3).isoformat()

    def test_a_reopen_renews_the_handling_deadline(self) -> None:
        h = History().open("o1", T0).handled("o1", day(0.001))
        h.do("o1", Step.START_RETURN_VISIT, SYSTEM, day(1))
        h.do(
            "o1",
            Step.REOPEN,
            CITIZEN,
            day(1.1),
            source="citizen_keys",
            resolved=False,
            handling_due=day(8),
        )
        h.do("o1", Step.ACCEPT_HANDLING, GREEN, day(1.2))
        h.do("o1", Step.REPLY, GREEN, day(7), text="已彻底修剪")
        h.do("o1", Step.COMPLETE, GREEN, day(7))
        assert overdue(h.records, now=day(20)) == []
        late = History().open("o1", T0).handled("o1", day(0.001))
        late.do("o1", Step.START_RETURN_VISIT, SYSTEM, day(1))
        late.do("o1", Step.REOPEN, CITIZEN, day(1.1), source="citizen_keys", resolved=False)
        (found,) = overdue(late.records, now=day(6))  # the old deadline (day 5) still holds
        assert found.evidence["clock_from"]["step"] == "reopen"


# --------------------------------------------------------------------------- repeats


class TestRepeatAfterCompletion:
    def test_same_caller_same_matter_after_completion(self) -> None:
        h = History().open("o1", T0).handled("o1", day(0.01)).visited("o1", day(1), True)
        h.open("o2", day(10), text="上次反映的树枝又碰到电线了，还是没有修剪")
        (found,) = repeat_after_completion(h.records)
        assert found.order_ids == ("o1", "o2")
        assert found.evidence["caller"] == "138****5678"
        assert found.evidence["same_category"] is True
        assert 9 < found.evidence["days_after_completion"] < 10

    def test_similar_text_in_another_category(self) -> None:
        text = "幸福路8号门口污水横流好一阵子了，臭味很大"
        h = History().open("o1", T0, category="市政设施", text=text).handled("o1", day(0.01), URBAN)
        h.open(
            "o2", day(5), category="环境卫生", text="幸福路8号门口污水横流好一阵子了，还是臭味很大"
        )
        (found,) = repeat_after_completion(h.records)
        assert found.evidence["same_category"] is False
        assert found.evidence["text_similarity"] >= 0.5

    @pytest.mark.parametrize(
        ("caller", "after_days", "category", "text"),
        [
            ("13900000000", 10, "园林绿化", "树枝碰电线"),  # someone else
            ("13812345678", 40, "园林绿化", "树枝碰电线"),  # long after
            ("13812345678", 10, "社会保险", "社保断缴怎么办"),  # another matter
        ],
    )
    def test_not_a_repeat(self, caller: str, after_days: int, category: str, text: str) -> None:
        h = History().open("o1", T0).handled("o1", day(0.01))
        h.open("o2", day(after_days), caller=caller, category=category, text=text)
        assert repeat_after_completion(h.records) == []

    def test_calling_again_before_completion_is_not_a_repeat_after_completion(self) -> None:
        h = History().open("o1", T0).open("o2", day(1))
        h.handled("o1", day(2))
        assert repeat_after_completion(h.records) == []


# --------------------------------------------------------------------------- 被满意


class TestStaffEnteredSatisfaction:
    def test_refused_attempts_are_evidence(self) -> None:
        h = History().open("o1", T0).handled("o1", day(0.01))
        h.attempt("o1", Step.COMPLETE, GREEN, day(0.1), satisfaction_operator=3)  # wrong state
        h.do("o1", Step.START_RETURN_VISIT, SYSTEM, day(1))
        h.attempt("o1", Step.EVALUATE, GREEN, day(1), source="citizen_keys", resolved=True)
        h.attempt("o1", Step.EVALUATE, OPERATOR, day(1), source="operator_call", resolved=True)
        h.attempt("o1", Step.EVALUATE, SUPERVISOR, day(1), source="staff_entry", resolved=True)
        # legitimate or not staff: an answer heard on a recorded call; the citizen's own slip
        h.attempt(
            "o1",
            Step.EVALUATE,
            OPERATOR,
            day(1),
            source="operator_call",
            call_id="c-9",
            resolved=True,
            satisfaction_operator=7,
        )
        h.attempt("o1", Step.EVALUATE, CITIZEN, day(1), source="operator_call", resolved=True)
        found = staff_entered_satisfaction(h.attempts)
        assert [(a.evidence["actor_id"], a.evidence["step"]) for a in found] == [
            ("h-landscaping", "complete"),
            ("h-landscaping", "evaluate"),
            ("op-07", "evaluate"),
            ("sup-01", "evaluate"),
        ]
        assert found[0].evidence["data"] == {"satisfaction_operator": 3}
        assert found[0].evidence["refused_with"].startswith("IllegalStep")
        assert found[1].evidence["refused_with"].startswith("NotAllowed")


# --------------------------------------------------------------------------- everything


def test_detect_all_on_the_jiading_tree_case() -> None:
    """Returned, refused, completed twice without basis, then the citizen says no."""
    h = History().open("o1", T0)
    h.do("o1", Step.DISPATCH, OPERATOR, day(0.01), department="landscaping")
    h.do("o1", Step.RETURN, GREEN, day(0.1), "不在管辖范围")
    h.do("o1", Step.REFUSE_RETURN, SUPERVISOR, day(0.2), "依据不充分")
    for n in (1, 2):
        h.do("o1", Step.REPLY, GREEN, day(n), text="该处树木已修剪，不存在压倒高压线情况")
        h.do("o1", Step.COMPLETE, GREEN, day(n))
        h.do("o1", Step.REJECT_COMPLETION, SUPERVISOR, day(n + 0.1), "依据不充分")
    h.do("o1", Step.RETURN, GREEN, day(3), "请供电公司处理")
    h.do("o1", Step.ACCEPT_RETURN, SUPERVISOR, day(3.1), "涉及电力线", department="power_supply")
    h.do("o1", Step.REDISPATCH, SUPERVISOR, day(3.2), "树木修剪归园林", department="landscaping")
    found = detect_all(h.records, now=day(8), config=SupervisionConfig())
    assert sorted(set(kinds(found))) == [
        "dispatch_cycle",
        "false_completion",
        "overdue",
        "ping_pong",
    ]
    assert [a.at for a in found] == sorted(a.at for a in found)
    assert detect_all(History().open("o2", T0).records, now=T0) == []
