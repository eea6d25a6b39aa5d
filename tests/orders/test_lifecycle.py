"""The work-order lifecycle: transition table, roles, citizen answers, deadlines, privacy."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from callcenter.orders.calendar import WorkCalendar
from callcenter.orders.lifecycle import (
    TRANSITIONS,
    Actor,
    AnswerSource,
    AuditRecord,
    Caller,
    DeadlinePolicy,
    Deadlines,
    Directory,
    Evaluation,
    IllegalStep,
    NotAllowed,
    Order,
    OrderError,
    Role,
    State,
    Step,
    TimerKind,
    Urgency,
    apply,
    apply_timer,
    deadlines_for,
    due_timers,
    mask_name,
    mask_number,
    open_order,
    order_number,
    order_view,
    record_answer,
    redact,
    suggest_departments,
    work_order_figures,
)

TZ = ZoneInfo("Asia/Shanghai")
ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=TZ)

OPERATOR = Actor("op-07", Role.OPERATOR, "centre")
SUPERVISOR = Actor("sup-01", Role.SUPERVISOR, "centre")
ADMIN = Actor("admin", Role.ADMIN, "centre")
CITIZEN = Actor("citizen", Role.CITIZEN)
SYSTEM = Actor("timers", Role.SYSTEM, "system")
URBAN = Actor("h-urban", Role.DEPARTMENT, "urban_management")
HOUSING = Actor("h-housing", Role.DEPARTMENT, "housing")
STREET = Actor("h-street", Role.DEPARTMENT, "subdistrict_office")
DEPARTMENTS = {a.unit: a for a in (URBAN, HOUSING, STREET)}

CALLER = Caller("张三", "13812345678", "江岸区幸福路8号3栋2单元")
FIRST_DUE = T0 + timedelta(minutes=30)
HANDLING_DUE = T0 + timedelta(days=7)


def new_order(*, confidential: bool = False, order_id: str = "o-1") -> tuple[Order, AuditRecord]:
    return open_order(
        order_id=order_id,
        number=order_number(T0.date(), 1),
        actor=OPERATOR,
        at=T0,
        caller=CALLER,
        category="环境卫生",
        text="我家门口污水横流好一阵子了，电话13812345678",
        deadlines=Deadlines(FIRST_DUE, HANDLING_DUE),
        location="幸福路8号门口",
        confidential=confidential,
    )


class Flow:
    """An order being moved along, one minute per step, keeping every audit record."""

    def __init__(self, order: Order | None = None) -> None:
        if order is None:
            order, record = new_order()
            self.records = [record]
        else:
            self.records = []
        self.order = order
        self.clock = order.updated_at

    def do(self, step: Step, actor: Actor, reason: str | None = None, **data: Any) -> Flow:
        self.clock += timedelta(minutes=1)
        self.order, record = apply(self.order, step, actor, self.clock, reason, **data)
        self.records.append(record)
        return self


ANSWER = {"source": AnswerSource.CITIZEN_KEYS, "satisfaction_operator": 3}

PATHS: dict[State, list[tuple[Step, Actor, str | None, dict[str, Any]]]] = {
    State.ACCEPTED: [],
    State.DISPATCHED: [(Step.DISPATCH, OPERATOR, None, {"department": "urban_management"})],
    State.RESOLVED_ON_CALL: [(Step.RESOLVE_ON_CALL, OPERATOR, None, {"answer": "已告知办理流程"})],
}
PATHS[State.IN_PROGRESS] = PATHS[State.DISPATCHED] + [(Step.ACCEPT_HANDLING, URBAN, None, {})]
PATHS[State.RETURNED] = PATHS[State.DISPATCHED] + [(Step.RETURN, URBAN, "不在管辖范围", {})]
PATHS[State.REPLIED] = PATHS[State.IN_PROGRESS] + [(Step.REPLY, URBAN, None, {"text": "已疏通"})]
PATHS[State.COMPLETED] = PATHS[State.REPLIED] + [(Step.COMPLETE, URBAN, None, {})]
PATHS[State.RETURN_VISIT] = PATHS[State.COMPLETED] + [(Step.START_RETURN_VISIT, SYSTEM, None, {})]
PATHS[State.EVALUATED] = PATHS[State.RETURN_VISIT] + [
    (Step.EVALUATE, CITIZEN, None, {**ANSWER, "resolved": True})
]


def reach(state: State) -> Flow:
    flow = Flow()
    for step, actor, reason, data in PATHS[state]:
        flow.do(step, actor, reason, **data)
    assert flow.order.state is state
    return flow


LATER = T0 + timedelta(days=10)  # after every deadline above

# How to take each legal step; REOPEN_AT_CENTRE needs an order no department had.
LEGAL: dict[Step, tuple[Actor, str | None, dict[str, Any]]] = {
    Step.RESOLVE_ON_CALL: (OPERATOR, None, {"answer": "政策已解释清楚"}),
    Step.DISPATCH: (OPERATOR, None, {"department": "urban_management"}),
    Step.REDISPATCH: (SUPERVISOR, "职责属住建", {"department": "housing"}),
    Step.ADD_CO_HANDLER: (OPERATOR, "需街道配合", {"department": "subdistrict_office"}),
    Step.ACCEPT_HANDLING: (URBAN, None, {}),
    Step.RETURN: (URBAN, "不在管辖范围", {}),
    Step.ACCEPT_RETURN: (SUPERVISOR, "核实属住建职责", {"department": "housing"}),
    Step.REFUSE_RETURN: (SUPERVISOR, "依据不充分，请继续办理", {}),
    Step.CO_REPLY: (STREET, None, {"text": "街道已配合"}),
    Step.REPLY: (URBAN, None, {"text": "已安排疏通"}),
    Step.COMPLETE: (URBAN, None, {}),
    Step.REJECT_COMPLETION: (SUPERVISOR, "未联系诉求人", {}),
    Step.START_RETURN_VISIT: (SYSTEM, None, {}),
    Step.VISIT_UNREACHABLE: (SYSTEM, "无人接听", {}),
    Step.EVALUATE: (CITIZEN, None, {**ANSWER, "resolved": True, "satisfaction_department": 2}),
    Step.REOPEN: (CITIZEN, None, {**ANSWER, "resolved": False}),
    Step.REOPEN_AT_CENTRE: (CITIZEN, None, {**ANSWER, "resolved": False}),
    Step.SUPERVISE: (SUPERVISOR, "群众多次反映", {"deadline": LATER + timedelta(days=1)}),
    Step.FLAG_OVERDUE: (SYSTEM, None, {"timer": TimerKind.HANDLING, "deadline": HANDLING_DUE}),
}


def prepared(state: State, step: Step) -> Flow:
    """Reach ``state`` in a way that makes ``step`` meaningful."""
    if step is Step.REOPEN_AT_CENTRE:
        flow = reach(State.RESOLVED_ON_CALL).do(Step.START_RETURN_VISIT, SYSTEM)
    else:
        flow = reach(state)
    if step is Step.CO_REPLY:
        flow.do(Step.ADD_CO_HANDLER, OPERATOR, "需街道配合", department="subdistrict_office")
    return flow


class TestTransitionTable:
    @pytest.mark.parametrize(("state", "step"), sorted(TRANSITIONS), ids=lambda x: str(x))
    def test_every_legal_step(self, state: State, step: Step) -> None:
        flow = prepared(state, step)
        before = flow.order
        actor, reason, data = LEGAL[step]
        after, record = apply(before, step, actor, LATER, reason, **data)
        assert after.state is TRANSITIONS[(state, step)]
        assert (record.from_state, record.to_state, record.step) == (state, after.state, step)
        assert record.seq == after.version == before.version + 1
        assert (record.actor_id, record.role, record.at) == (actor.id, actor.role, LATER)
        assert after.owner_unit == before.owner_unit == "centre"

    @pytest.mark.parametrize("state", list(State), ids=str)
    def test_every_illegal_step_names_state_and_step(self, state: State) -> None:
        order = reach(state).order
        for step in Step:
            if (state, step) in TRANSITIONS:
                continue
            actor = LEGAL.get(step, (OPERATOR, None, {}))[0]
            with pytest.raises(IllegalStep) as err:
                apply(order, step, actor, LATER, "理由")
            assert str(err.value) == f"cannot '{step}' an order in state '{state}'"
            assert err.value.attempt is not None
            assert err.value.attempt.state is state

    def test_the_example_message(self) -> None:
        order, _ = new_order()
        with pytest.raises(IllegalStep, match=r"cannot 'reply' an order in state 'accepted'"):
            apply(order, Step.REPLY, URBAN, LATER, text="已处理")

    def test_unknown_step(self) -> None:
        order, _ = new_order()
        with pytest.raises(IllegalStep, match="unknown step 'close'"):
            apply(order, "close", OPERATOR, LATER)

    def test_time_must_be_aware_and_move_forward(self) -> None:
        flow = reach(State.DISPATCHED)
        with pytest.raises(IllegalStep, match="before the order's last step"):
            apply(flow.order, Step.ACCEPT_HANDLING, URBAN, T0)
        with pytest.raises(IllegalStep, match="timezone-aware"):
            apply(flow.order, Step.ACCEPT_HANDLING, URBAN, datetime(2026, 12, 1))

    def test_unexpected_data_is_refused(self) -> None:
        flow = reach(State.DISPATCHED)
        with pytest.raises(IllegalStep, match="unexpected data for 'accept_handling': colour"):
            apply(flow.order, Step.ACCEPT_HANDLING, URBAN, LATER, colour="red")

    def test_a_refused_step_leaves_the_order_and_keeps_the_attempt(self) -> None:
        flow = reach(State.IN_PROGRESS)
        before = flow.order
        with pytest.raises(IllegalStep) as err:
            apply(before, Step.RETURN, URBAN, LATER, "   ")
        assert flow.order is before and before.state is State.IN_PROGRESS
        attempt = err.value.attempt
        assert attempt is not None
        assert (attempt.step, attempt.actor_id, attempt.reason) == ("return", "h-urban", "   ")
        assert attempt.error == "IllegalStep"


class TestRolesAndUnits:
    def test_owner_unit_is_the_accepting_unit_and_stays(self) -> None:
        flow = reach(State.DISPATCHED)
        flow.do(Step.REDISPATCH, SUPERVISOR, "属住建", department="housing")
        assert flow.order.owner_unit == "centre"
        assert flow.order.lead_department == "housing"
        assert flow.records[0].unit == "centre"

    def test_only_centre_roles_open_orders(self) -> None:
        with pytest.raises(NotAllowed):
            open_order(
                order_id="x",
                number="x",
                actor=URBAN,
                at=T0,
                caller=CALLER,
                category="",
                text="问题",
                deadlines=Deadlines(FIRST_DUE, HANDLING_DUE),
            )

    @pytest.mark.parametrize(
        ("step", "actor"),
        [
            (Step.DISPATCH, URBAN),
            (Step.DISPATCH, CITIZEN),
            (Step.RESOLVE_ON_CALL, SYSTEM),
            (Step.SUPERVISE, OPERATOR),
        ],
    )
    def test_wrong_role_at_acceptance(self, step: Step, actor: Actor) -> None:
        order, _ = new_order()
        _, reason, data = LEGAL[step]
        with pytest.raises(NotAllowed, match=f"an? {actor.role} may not '{step}'"):
            apply(order, step, actor, LATER, reason, **data)

    def test_only_the_lead_department_handles(self) -> None:
        flow = reach(State.DISPATCHED)
        with pytest.raises(NotAllowed, match="only the lead department"):
            apply(flow.order, Step.ACCEPT_HANDLING, HOUSING, LATER)
        with pytest.raises(NotAllowed):
            apply(flow.order, Step.RETURN, OPERATOR, LATER, "不归我们管")

    def test_co_handlers_give_opinions_but_do_not_reply_or_return(self) -> None:
        flow = reach(State.DISPATCHED)
        flow.do(Step.ADD_CO_HANDLER, OPERATOR, "需街道配合", department="subdistrict_office")
        flow.do(Step.ACCEPT_HANDLING, URBAN)
        flow.do(Step.CO_REPLY, STREET, text="已协调物业")
        with pytest.raises(NotAllowed):
            apply(flow.order, Step.REPLY, STREET, LATER, text="已办")
        with pytest.raises(NotAllowed):
            apply(flow.order, Step.RETURN, STREET, LATER, "不归我们管")
        with pytest.raises(NotAllowed, match="not a co-handler"):
            apply(flow.order, Step.CO_REPLY, HOUSING, LATER, text="意见")
        with pytest.raises(NotAllowed):  # the lead replies, it does not co-reply
            apply(flow.order, Step.CO_REPLY, URBAN, LATER, text="意见")
        assert [r.lead for r in flow.order.replies] == [False]


class TestDispatching:
    def test_dispatch_with_co_handlers_and_history(self) -> None:
        flow = Flow().do(
            Step.DISPATCH, OPERATOR, department="communications", co_handlers=["subdistrict_office"]
        )
        order = flow.order
        assert order.lead_department == "communications"
        assert order.co_handlers == ("subdistrict_office",)
        assert [(d.department, d.lead) for d in order.dispatch_history] == [
            ("communications", True),
            ("subdistrict_office", False),
        ]
        assert flow.records[-1].data["co_handlers"] == ("subdistrict_office",)

    def test_dispatch_refuses_a_department_twice(self) -> None:
        order, _ = new_order()
        with pytest.raises(IllegalStep, match="named twice"):
            apply(order, Step.DISPATCH, OPERATOR, LATER, department="a", co_handlers=["a"])
        with pytest.raises(IllegalStep, match="must be a list"):
            apply(order, Step.DISPATCH, OPERATOR, LATER, department="a", co_handlers="bc")
        with pytest.raises(IllegalStep, match="non-empty department"):
            apply(order, Step.DISPATCH, OPERATOR, LATER, department="  ")

    @pytest.mark.parametrize("reason", [None, "", "   \n"])
    @pytest.mark.parametrize("step", [Step.REDISPATCH, Step.ADD_CO_HANDLER])
    def test_redispatch_and_co_handling_need_a_reason(self, step: Step, reason: str | None) -> None:
        flow = reach(State.IN_PROGRESS)
        with pytest.raises(IllegalStep, match=f"'{step}' needs a written reason"):
            apply(flow.order, step, OPERATOR, LATER, reason, department="housing")

    def test_redispatch_counts_and_moves_the_lead(self) -> None:
        flow = reach(State.IN_PROGRESS)
        flow.do(Step.ADD_CO_HANDLER, OPERATOR, "需住建配合", department="housing")
        flow.do(Step.REDISPATCH, SUPERVISOR, " 主要是物业问题 ", department="housing")
        order = flow.order
        assert order.state is State.DISPATCHED
        assert (order.lead_department, order.co_handlers) == ("housing", ())
        assert order.redispatch_count == 1
        assert flow.records[-1].reason == "主要是物业问题"
        assert flow.records[-1].data == {"department": "housing", "previous": "urban_management"}
        with pytest.raises(IllegalStep, match="another department"):
            apply(order, Step.REDISPATCH, OPERATOR, LATER, "再改", department="housing")
        with pytest.raises(IllegalStep, match="already handles"):
            apply(order, Step.ADD_CO_HANDLER, OPERATOR, LATER, "加派", department="housing")


class TestReturns:
    def test_return_needs_a_stripped_reason_and_is_counted(self) -> None:
        flow = reach(State.DISPATCHED)
        for reason in (None, "", "  "):
            with pytest.raises(IllegalStep, match="'return' needs a written reason"):
                apply(flow.order, Step.RETURN, URBAN, LATER, reason)
        flow.do(Step.RETURN, URBAN, "  不在管辖范围 ")
        assert flow.order.return_count == 1
        assert flow.order.pending_return is not None
        assert flow.order.pending_return.reason == "不在管辖范围"
        assert flow.records[-1].data == {"department": "urban_management"}

    def test_departments_and_operators_cannot_arbitrate(self) -> None:
        """The centre's supervisors review returns (issue 12: operators could)."""
        flow = reach(State.RETURNED)
        for step, data in ((Step.ACCEPT_RETURN, {"department": "housing"}),
                           (Step.REFUSE_RETURN, {})):
            with pytest.raises(NotAllowed, match="operator may not"):
                apply(flow.order, step, OPERATOR, LATER, "改派", **data)
        with pytest.raises(NotAllowed):
            apply(flow.order, Step.ACCEPT_RETURN, HOUSING, LATER, "我来办", department="housing")
        with pytest.raises(NotAllowed):
            apply(flow.order, Step.REFUSE_RETURN, URBAN, LATER, "收回")

    def test_accepted_return_goes_elsewhere_and_counts_as_redispatch(self) -> None:
        flow = reach(State.RETURNED)
        with pytest.raises(IllegalStep, match="refuse_return"):
            apply(
                flow.order,
                Step.ACCEPT_RETURN,
                SUPERVISOR,
                LATER,
                "改派",
                department="urban_management",
            )
        with pytest.raises(IllegalStep, match="written reason"):
            apply(flow.order, Step.ACCEPT_RETURN, SUPERVISOR, LATER, "", department="housing")
        flow.do(Step.ACCEPT_RETURN, SUPERVISOR, "属物业管理", department="housing")
        order = flow.order
        assert (order.state, order.lead_department, order.pending_return) == (
            State.DISPATCHED,
            "housing",
            None,
        )
        assert (order.return_count, order.redispatch_count) == (1, 1)
        assert [d.department for d in order.dispatch_history] == ["urban_management", "housing"]
        assert flow.records[-1].data["returned_by"] == "urban_management"

    def test_refused_return_stays_with_the_department(self) -> None:
        """The Jiading case: returned, refused, then completion sent back twice."""
        flow = reach(State.RETURNED)
        with pytest.raises(IllegalStep, match="written reason"):
            apply(flow.order, Step.REFUSE_RETURN, SUPERVISOR, LATER, " ")
        flow.do(Step.REFUSE_RETURN, SUPERVISOR, "依据不充分，属管辖范围")
        assert flow.order.state is State.IN_PROGRESS
        assert flow.order.lead_department == "urban_management"
        assert flow.records[-1].data["return_reason"] == "不在管辖范围"
        for _ in range(2):
            flow.do(Step.REPLY, URBAN, text="该处树木已修剪，不存在压倒高压线情况")
            flow.do(Step.COMPLETE, URBAN)
            flow.do(Step.REJECT_COMPLETION, SUPERVISOR, "依据不充分，未现场核实")
        assert flow.order.state is State.IN_PROGRESS
        assert flow.order.rejected_completion_count == 2
        assert flow.order.completed_at is None


class TestCitizenAnswers:
    def test_citizen_keys_evaluate(self) -> None:
        flow = reach(State.RETURN_VISIT)
        flow.do(
            Step.EVALUATE,
            CITIZEN,
            source="citizen_keys",
            resolved=True,
            satisfaction_operator=3,
            satisfaction_department=2,
        )
        order = flow.order
        assert order.state is State.EVALUATED
        assert order.resolved is True
        (answer,) = order.evaluations
        assert (answer.source, answer.satisfaction_operator, answer.satisfaction_department) == (
            AnswerSource.CITIZEN_KEYS,
            3,
            2,
        )

    def test_operator_records_an_answer_heard_on_a_recorded_call(self) -> None:
        flow = reach(State.RETURN_VISIT)
        order, record = record_answer(
            flow.order, OPERATOR, LATER, source="operator_call", resolved=True, call_id=" 1733.42 "
        )
        assert order.evaluations[-1].call_id == "1733.42"
        assert record.data["source"] == "operator_call"

    @pytest.mark.parametrize(
        ("actor", "data", "message"),
        [
            (URBAN, {"source": "citizen_keys"}, "a department may not 'evaluate'"),
            (ADMIN, {"source": "operator_call", "call_id": "c1"}, "an admin may not 'evaluate'"),
            (OPERATOR, {"source": "citizen_keys"}, "cannot enter the citizen's own key presses"),
            (OPERATOR, {"source": "operator_call"}, "must name the recorded call"),
            (OPERATOR, {"source": "operator_call", "call_id": "  "}, "must name the recorded call"),
            (SUPERVISOR, {"source": "staff_entry"}, "accepted only from the citizen"),
            (OPERATOR, {"source": "department_call", "call_id": "c1"}, "accepted only from"),
            (CITIZEN, {"source": "operator_call", "call_id": "c1"}, "cannot record an answer"),
            (SYSTEM, {"source": "citizen_keys"}, "a system may not"),
            (CITIZEN, {}, "not from source None"),
        ],
    )
    def test_nobody_answers_for_the_citizen(
        self, actor: Actor, data: dict[str, Any], message: str
    ) -> None:
        flow = reach(State.RETURN_VISIT)
        with pytest.raises(NotAllowed, match=message) as err:
            apply(
                flow.order,
                Step.EVALUATE,
                actor,
                LATER,
                resolved=True,
                satisfaction_operator=3,
                **data,
            )
        assert flow.order.evaluations == ()
        assert err.value.attempt is not None
        assert err.value.attempt.data["satisfaction_operator"] == 3

    @pytest.mark.parametrize("step", [Step.COMPLETE, Step.REPLY])
    def test_satisfaction_cannot_ride_on_other_steps(self, step: Step) -> None:
        flow = reach(State.REPLIED if step is Step.COMPLETE else State.IN_PROGRESS)
        with pytest.raises(NotAllowed, match="cannot record resolution or satisfaction"):
            apply(flow.order, step, URBAN, LATER, text="已办", satisfaction_operator=3)
        with pytest.raises(NotAllowed):
            apply(flow.order, step, URBAN, LATER, text="已办", resolved=True)

    @pytest.mark.parametrize("score", [0, 4, "3", True, 2.5])
    def test_scores_are_one_to_three(self, score: Any) -> None:
        flow = reach(State.RETURN_VISIT)
        with pytest.raises(IllegalStep, match="must be 1, 2 or 3"):
            apply(
                flow.order,
                Step.EVALUATE,
                CITIZEN,
                LATER,
                source="citizen_keys",
                resolved=True,
                satisfaction_operator=score,
            )

    def test_resolved_must_match_the_step(self) -> None:
        flow = reach(State.RETURN_VISIT)
        with pytest.raises(IllegalStep, match="use 'reopen'"):
            apply(flow.order, Step.EVALUATE, CITIZEN, LATER, source="citizen_keys", resolved=False)
        with pytest.raises(IllegalStep, match="use 'evaluate'"):
            apply(flow.order, Step.REOPEN, CITIZEN, LATER, source="citizen_keys", resolved=True)
        with pytest.raises(IllegalStep, match="True or False"):
            apply(flow.order, Step.EVALUATE, CITIZEN, LATER, source="citizen_keys", resolved="yes")

    def test_not_solved_reopens_to_the_lead_department(self) -> None:
        flow = reach(State.RETURN_VISIT)
        new_due = LATER + timedelta(days=7)
        order, record = record_answer(
            flow.order,
            CITIZEN,
            LATER,
            source="citizen_keys",
            resolved=False,
            satisfaction_department=1,
        )
        assert order.state is State.DISPATCHED
        assert (order.lead_department, order.reopen_count, order.resolved) == (
            "urban_management",
            1,
            False,
        )
        assert record.step is Step.REOPEN
        assert order.dispatch_history == flow.order.dispatch_history
        # the edge may give the reopened order a fresh handling period
        again = Flow(order)
        for step, actor, reason, data in PATHS[State.RETURN_VISIT][-4:]:
            again.do(step, actor, reason, **data)
        reopened, _ = apply(
            again.order,
            Step.REOPEN,
            CITIZEN,
            again.clock,
            source="citizen_keys",
            resolved=False,
            handling_due=new_due,
        )
        assert (reopened.reopen_count, reopened.handling_due) == (2, new_due)

    def test_on_call_answers_reopen_at_the_centre(self) -> None:
        flow = reach(State.RESOLVED_ON_CALL).do(Step.START_RETURN_VISIT, OPERATOR)
        with pytest.raises(IllegalStep, match="no department handled"):
            apply(
                flow.order,
                Step.REOPEN_AT_CENTRE,
                CITIZEN,
                LATER,
                source="citizen_keys",
                resolved=False,
                satisfaction_department=1,
            )
        with pytest.raises(IllegalStep, match="use 'reopen_at_centre'"):
            apply(flow.order, Step.REOPEN, CITIZEN, LATER, source="citizen_keys", resolved=False)
        order, record = record_answer(
            flow.order,
            CITIZEN,
            LATER,
            source="citizen_keys",
            resolved=False,
            satisfaction_operator=1,
        )
        assert (order.state, record.step, order.reopen_count) == (
            State.ACCEPTED,
            Step.REOPEN_AT_CENTRE,
            1,
        )
        assert order.first_response_at is not None


class TestFigures:
    def test_rates_come_only_from_citizen_answers(self) -> None:
        evaluated = reach(State.EVALUATED).order  # first answer: solved, operator 3
        reopened = reach(State.RETURN_VISIT)
        reopened.do(
            Step.REOPEN, CITIZEN, **{**ANSWER, "resolved": False, "satisfaction_operator": 1}
        )
        on_call = reach(State.RESOLVED_ON_CALL).order
        # a row that did not come through apply(): a staff-entered "satisfied"
        forged = replace(
            reach(State.RETURN_VISIT).order,
            evaluations=(Evaluation("staff_entry", True, 3, 3, None, "h-urban", LATER),),  # type: ignore[arg-type]
        )
        figures = work_order_figures([evaluated, reopened.order, on_call, forged])
        assert figures.orders == 4
        assert figures.resolved_on_call_rate == 1 / 4
        assert figures.resolution_rate == 1 / 2
        assert figures.first_time_resolution_rate == 1 / 2
        assert figures.satisfaction_operator.answers == 2
        assert figures.satisfaction_operator.mean == 2.0
        assert figures.satisfaction_operator.satisfied_share == 0.5
        assert figures.satisfaction_department.answers == 0
        assert figures.satisfaction_department.mean is None

    def test_on_time_rate(self) -> None:
        on_time = reach(State.COMPLETED).order
        late = replace(on_time, id="late", completed_at=HANDLING_DUE + timedelta(seconds=1))
        assert work_order_figures([on_time, late]).on_time_rate == 0.5
        assert work_order_figures([]).on_time_rate is None


class TestDeadlines:
    @pytest.fixture
    def setup(self) -> tuple[WorkCalendar, DeadlinePolicy]:
        text = (ROOT / "config" / "calendar.toml").read_text(encoding="utf-8")
        return WorkCalendar.from_toml(text), DeadlinePolicy.from_toml(text)

    def test_normal_orders_get_five_working_days_across_national_day(
        self, setup: tuple[WorkCalendar, DeadlinePolicy]
    ) -> None:
        cal, policy = setup
        accepted = datetime(2025, 9, 30, 10, tzinfo=TZ)
        due = deadlines_for(None, Urgency.NORMAL, accepted, cal, policy)
        assert due.first_response == datetime(2025, 9, 30, 10, 30, tzinfo=TZ)
        assert due.handling == datetime(2025, 10, 14, 10, tzinfo=TZ)
        assert due.supervision is None

    def test_emergencies_get_24_calendar_hours(
        self, setup: tuple[WorkCalendar, DeadlinePolicy]
    ) -> None:
        cal, policy = setup
        accepted = datetime(2025, 10, 1, 22, tzinfo=TZ)  # a holiday: the clock still runs
        due = deadlines_for(None, Urgency.EMERGENCY, accepted, cal, policy)
        assert due.handling == datetime(2025, 10, 2, 22, tzinfo=TZ)
        urgent = deadlines_for(None, Urgency.URGENT, accepted, cal, policy)
        assert urgent.handling == datetime(2025, 10, 11, tzinfo=TZ)  # 10-09 and 10-10

    def test_supervision_deadline_is_reported(
        self, setup: tuple[WorkCalendar, DeadlinePolicy]
    ) -> None:
        cal, policy = setup
        flow = reach(State.IN_PROGRESS).do(
            Step.SUPERVISE, SUPERVISOR, "群众反映强烈", deadline=T0 + timedelta(days=2)
        )
        due = deadlines_for(flow.order, Urgency.NORMAL, flow.clock, cal, policy)
        assert due.supervision == T0 + timedelta(days=2)

    def test_policy_needs_every_urgency_and_one_handling_limit(self) -> None:
        with pytest.raises(ValueError, match="no deadlines"):
            DeadlinePolicy.from_mapping(
                {
                    "deadlines": {
                        "normal": {"first_response_minutes": 30, "handling_working_days": 5}
                    }
                }
            )
        with pytest.raises(ValueError, match="exactly one"):
            DeadlinePolicy.from_mapping({"deadlines": {"normal": {"first_response_minutes": 30}}})

    def test_supervise_needs_a_future_deadline(self) -> None:
        flow = reach(State.IN_PROGRESS)
        with pytest.raises(IllegalStep, match="must be later"):
            apply(flow.order, Step.SUPERVISE, SUPERVISOR, LATER, "快办", deadline=LATER)
        with pytest.raises(IllegalStep, match="timezone-aware deadline"):
            apply(flow.order, Step.SUPERVISE, SUPERVISOR, LATER, "快办", deadline="tomorrow")


class TestTimers:
    def test_nothing_fires_before_the_deadline(self) -> None:
        order, _ = new_order()
        assert due_timers([order], FIRST_DUE - timedelta(seconds=1)) == []

    def test_first_response_fires_once(self) -> None:
        order, _ = new_order()
        (timer,) = due_timers([order], FIRST_DUE)
        assert (timer.order_id, timer.kind, timer.deadline, timer.at) == (
            "o-1",
            TimerKind.FIRST_RESPONSE,
            FIRST_DUE,
            FIRST_DUE,
        )
        flagged, record = apply_timer(order, timer, SYSTEM)
        assert record.data == {"timer": TimerKind.FIRST_RESPONSE, "deadline": FIRST_DUE}
        assert due_timers([flagged], FIRST_DUE + timedelta(hours=1)) == []
        with pytest.raises(IllegalStep, match="already flagged"):
            apply_timer(flagged, timer, SYSTEM)
        with pytest.raises(NotAllowed):
            apply_timer(order, timer, OPERATOR)

    def test_a_responded_order_fires_only_handling_and_supervision(self) -> None:
        flow = reach(State.IN_PROGRESS)
        flow.do(Step.SUPERVISE, SUPERVISOR, "督办", deadline=T0 + timedelta(days=1))
        fired = due_timers([flow.order], LATER)
        assert [(t.kind, t.deadline) for t in fired] == [
            (TimerKind.SUPERVISION, T0 + timedelta(days=1)),
            (TimerKind.HANDLING, HANDLING_DUE),
        ]
        order = flow.order
        for timer in fired:
            order, _ = apply_timer(order, timer, SYSTEM)
        assert [kind for kind, _ in order.overdue] == [TimerKind.SUPERVISION, TimerKind.HANDLING]

    def test_timer_time_never_goes_back_before_the_last_step(self) -> None:
        late_dispatch = FIRST_DUE + timedelta(minutes=5)
        order, _ = new_order()
        order, _ = apply(order, Step.DISPATCH, OPERATOR, late_dispatch, department="housing")
        (timer,) = due_timers([order], late_dispatch + timedelta(minutes=1))
        assert timer.at == late_dispatch
        apply_timer(order, timer, SYSTEM)

    def test_completed_orders_do_not_fire(self) -> None:
        assert due_timers([reach(State.COMPLETED).order, reach(State.EVALUATED).order], LATER) == []

    def test_flag_needs_a_passed_deadline(self) -> None:
        order, _ = new_order()
        with pytest.raises(IllegalStep, match="is not due"):
            apply(
                order,
                Step.FLAG_OVERDUE,
                SYSTEM,
                T0,
                timer="handling_overdue",
                deadline=HANDLING_DUE,
            )
        with pytest.raises(IllegalStep, match="unknown timer"):
            apply(order, Step.FLAG_OVERDUE, SYSTEM, LATER, timer="late", deadline=HANDLING_DUE)


class TestPrivacy:
    def test_mask_number(self) -> None:
        assert mask_number("13812345678") == "138****5678"
        assert mask_number("138-1234-5678") == "138****5678"
        assert mask_number("+86 138 1234 5678") == "+86138****5678"
        assert mask_number("02787654321") == "027****4321"
        assert mask_number("12345") == "***45"
        assert mask_number("") == ""

    def test_mask_name(self) -> None:
        assert mask_name("张三丰") == "张**"
        assert mask_name("欧阳娜娜") == "欧***"
        assert mask_name("") == ""

    def test_departments_see_an_ordinary_caller_to_call_back(self) -> None:
        view = redact(order_view(new_order()[0]), Role.DEPARTMENT)
        assert (view["caller_name"], view["caller_number"]) == ("张三", "13812345678")

    def test_confidential_orders_hide_the_caller_from_departments(self) -> None:
        view = order_view(new_order(confidential=True)[0])
        seen = redact(view, Role.DEPARTMENT)
        assert seen["caller_name"] is None
        assert seen["caller_number"] is None
        assert seen["caller_address"] is None
        assert "13812345678" not in seen["text"] and "138****5678" in seen["text"]
        assert seen["location"] == "幸福路8号门口"  # where the problem is stays visible
        assert view["caller_number"] == "13812345678"  # the input is not modified

    def test_confidential_orders_are_masked_for_operators_and_full_for_supervisors(self) -> None:
        view = order_view(new_order(confidential=True)[0])
        operator = redact(view, Role.OPERATOR)
        assert (operator["caller_name"], operator["caller_number"]) == ("张*", "138****5678")
        assert operator["caller_address"] == "江岸区幸福路****"
        supervisor = redact(view, "supervisor")
        assert supervisor["caller_number"] == "13812345678"

    def test_unknown_roles_and_views_without_the_flag_see_nothing(self) -> None:
        view = order_view(new_order()[0])
        assert redact(view, "journalist")["caller_number"] is None
        del view["confidential"]
        assert redact(view, Role.DEPARTMENT)["caller_name"] is None
        assert redact(view, Role.ADMIN)["caller_number"] is None


class TestDirectory:
    @pytest.fixture
    def directory(self) -> Directory:
        return Directory.from_toml((ROOT / "config" / "departments.toml").read_text("utf-8"))

    def test_shipped_directory(self, directory: Directory) -> None:
        assert directory.centre.id == "centre"
        assert len(directory.departments) >= 12
        for department in directory.departments:
            assert department.name and department.name_en
            assert department.categories and department.keywords
        assert directory.get("water_group").name == "市水务集团"
        with pytest.raises(KeyError):
            directory.get("nowhere")

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("我家门口污水横流好一阵子了，这事到底归谁管", {"urban_management"}),
            ("人行道上的树木歪枝和高压线十分接近，存在安全隐患", {"landscaping", "power_supply"}),
            ("原单位欠缴养老保险和医疗保险，新单位无法接续", {"human_resources"}),
            ("楼外护栏处有一捆通信线缆，风刮到线击打护栏时产生噪音", {"communications"}),
            ("小区南墙边的水泥路破损严重，车辆通过时扬尘很大", {"transport"}),
        ],
    )
    def test_suggestions_for_the_reported_cases(
        self, directory: Directory, text: str, expected: set[str]
    ) -> None:
        suggestions = suggest_departments(text, directory)
        top = {s.department.id for s in suggestions[: len(expected)]}
        assert top == expected
        assert all(keyword in text for s in suggestions for keyword in s.matched)
        assert [s.score for s in suggestions] == sorted(
            (s.score for s in suggestions), reverse=True
        )

    def test_nested_keywords_count_once_and_nothing_matches_nothing(
        self, directory: Directory
    ) -> None:
        (first, *_) = suggest_departments("通信线缆", directory)
        assert first.matched == ("通信线缆",) and first.score == 4
        assert suggest_departments("你好", directory) == []
        assert len(suggest_departments("停电停水停气", directory, limit=None)) == 3


def test_order_number() -> None:
    assert order_number(date(2026, 11, 23), 123) == "20261123-000123"
    with pytest.raises(ValueError):
        order_number(date(2026, 11, 23), 0)
    with pytest.raises(ValueError):
        order_number(date(2026, 11, 23), 1_000_000)


# --------------------------------------------------------------------------- properties

ACTORS = [OPERATOR, SUPERVISOR, ADMIN, CITIZEN, SYSTEM, URBAN, HOUSING, STREET]
REASONS = st.sampled_from([None, "", "  ", "不在管辖范围"])
SOURCES = st.sampled_from(["citizen_keys", "operator_call", "staff_entry", "department_call", None])
SCORES = st.sampled_from([None, 0, 1, 2, 3, 4])


def honest(actor: Actor, source: Any, call_id: Any) -> bool:
    """Whether an answer with this actor, source and call id is the citizen's own."""
    if source == "citizen_keys":
        return actor.role is Role.CITIZEN
    return (
        source == "operator_call"
        and actor.role in (Role.OPERATOR, Role.SUPERVISOR)
        and isinstance(call_id, str)
        and bool(call_id.strip())
    )


class Lifecycle(RuleBasedStateMachine):
    """Random steps by random actors, plus a rule that walks the happy paths."""

    @initialize()
    def start(self) -> None:
        self.order, record = new_order()
        self.records = [record]
        self.successes = 1
        self.clock = T0
        self.answers: list[tuple[bool, int | None, int | None]] = []

    def attempt(self, step: Step | str, actor: Actor, reason: str | None, data: dict) -> bool:
        self.clock += timedelta(minutes=17)
        before = self.order
        try:
            self.order, record = apply(before, step, actor, self.clock, reason, **data)
        except OrderError as err:
            assert self.order is before
            assert err.attempt is not None and err.attempt.state is before.state
            return False
        self.records.append(record)
        self.successes += 1
        return True

    @rule(
        step=st.sampled_from(list(Step)),
        actor=st.sampled_from(ACTORS),
        reason=REASONS,
        data=st.fixed_dictionaries(
            {},
            optional={
                "department": st.sampled_from(sorted(DEPARTMENTS)),
                "text": st.sampled_from(["", "已处理", "经现场核查已清理"]),
                "answer": st.sampled_from(["", "已解释"]),
                "satisfaction_operator": SCORES,
                "resolved": st.booleans(),
                "source": SOURCES,
            },
        ),
    )
    def random_step(self, step: Step, actor: Actor, reason: str | None, data: dict) -> None:
        answered = len(self.order.evaluations)
        if self.attempt(step, actor, reason, data) and len(self.order.evaluations) > answered:
            assert honest(actor, data.get("source"), data.get("call_id"))
            self.answers.append((data["resolved"], data.get("satisfaction_operator"), None))

    @rule(
        actor=st.sampled_from(ACTORS),
        source=SOURCES,
        resolved=st.booleans(),
        operator_score=SCORES,
        department_score=SCORES,
        call_id=st.sampled_from([None, "", "1733.42"]),
    )
    def answer(
        self,
        actor: Actor,
        source: Any,
        resolved: bool,
        operator_score: Any,
        department_score: Any,
        call_id: Any,
    ) -> None:
        self.give_answer(actor, source, resolved, operator_score, department_score, call_id)

    def give_answer(
        self,
        actor: Actor,
        source: Any,
        resolved: bool,
        operator_score: Any,
        department_score: Any,
        call_id: Any,
    ) -> None:
        """Record a return-visit answer through record_answer, as the IVR would."""
        self.clock += timedelta(minutes=17)
        before = self.order
        try:
            self.order, record = record_answer(
                before,
                actor,
                self.clock,
                source=source,
                resolved=resolved,
                satisfaction_operator=operator_score,
                satisfaction_department=department_score,
                call_id=call_id,
            )
        except OrderError:
            assert self.order is before
            return
        assert honest(actor, source, call_id), "a staff-entered answer was accepted"
        self.records.append(record)
        self.successes += 1
        self.answers.append((resolved, operator_score, department_score))

    @rule(
        choice=st.integers(min_value=0, max_value=5),
        satisfied=st.booleans(),
        anyone=st.sampled_from(ACTORS),
        source=SOURCES,
    )
    def advance(self, choice: int, satisfied: bool, anyone: Actor, source: Any) -> None:
        """Take one sensible step so that deep states are reached.

        In a return visit, a random actor first tries to answer through a random
        channel (only the citizen's own answers may get through), then the citizen.
        """
        order = self.order
        lead = DEPARTMENTS.get(order.lead_department or "", URBAN)
        other = next((d for d in sorted(DEPARTMENTS) if d not in order.handling_units), None)
        options: dict[State, list[tuple[Step, Actor, str | None, dict]]] = {
            State.ACCEPTED: [
                (Step.DISPATCH, OPERATOR, None, {"department": "urban_management"}),
                (Step.RESOLVE_ON_CALL, OPERATOR, None, {"answer": "已解释"}),
            ],
            State.DISPATCHED: [
                (Step.ACCEPT_HANDLING, lead, None, {}),
                (Step.RETURN, lead, "不在管辖范围", {}),
                (Step.REDISPATCH, SUPERVISOR, "改派", {"department": other}),
            ],
            State.IN_PROGRESS: [
                (Step.REPLY, lead, None, {"text": "已处理"}),
                (Step.ADD_CO_HANDLER, OPERATOR, "加派", {"department": other}),
            ],
            State.RETURNED: [
                (Step.ACCEPT_RETURN, SUPERVISOR, "改派", {"department": other}),
                (Step.REFUSE_RETURN, SUPERVISOR, "依据不充分", {}),
            ],
            State.REPLIED: [(Step.COMPLETE, lead, None, {})],
            State.COMPLETED: [
                (Step.START_RETURN_VISIT, SYSTEM, None, {}),
                (Step.REJECT_COMPLETION, SUPERVISOR, "未核实", {}),
            ],
            State.RESOLVED_ON_CALL: [(Step.START_RETURN_VISIT, SYSTEM, None, {})],
            State.RETURN_VISIT: [],
            State.EVALUATED: [],
        }
        if order.state is State.RETURN_VISIT:
            score = 3 if satisfied else 1
            self.give_answer(anyone, source, satisfied, score, None, None)
            if self.order.state is State.RETURN_VISIT:
                self.give_answer(CITIZEN, "citizen_keys", satisfied, score, None, None)
            return
        steps = [o for o in options[order.state] if o[3].get("department", "") is not None]
        if steps:
            step, actor, reason, data = steps[choice % len(steps)]
            assert self.attempt(step, actor, reason, data), (order.state, step)

    @invariant()
    def no_audit_record_is_lost(self) -> None:
        assert len(self.records) == self.successes == self.order.version
        assert [r.seq for r in self.records] == list(range(1, self.successes + 1))
        for before, after in zip(self.records, self.records[1:], strict=False):
            assert before.to_state is after.from_state
            assert before.at <= after.at
        assert self.records[-1].to_state is self.order.state

    @invariant()
    def ownership_never_moves(self) -> None:
        assert self.order.owner_unit == "centre"

    @invariant()
    def only_citizens_answers_count(self) -> None:
        recorded = [
            (e.resolved, e.satisfaction_operator, e.satisfaction_department)
            for e in self.order.evaluations
        ]
        assert [r[0] for r in recorded] == [a[0] for a in self.answers]
        assert all(e.source in tuple(AnswerSource) for e in self.order.evaluations)
        figures = work_order_figures([self.order])
        if self.answers:
            assert figures.resolution_rate == float(self.answers[-1][0])
            assert figures.first_time_resolution_rate == float(self.answers[0][0])
        else:
            assert figures.resolution_rate is None
        scores = [s for _, s, _ in recorded if s is not None]
        assert figures.satisfaction_operator.answers == len(scores)

    @invariant()
    def counters_match_the_audit_trail(self) -> None:
        steps = [r.step for r in self.records]
        assert self.order.return_count == steps.count(Step.RETURN)
        assert self.order.redispatch_count == steps.count(Step.REDISPATCH) + steps.count(
            Step.ACCEPT_RETURN
        )
        assert self.order.reopen_count == steps.count(Step.REOPEN) + steps.count(
            Step.REOPEN_AT_CENTRE
        )


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
