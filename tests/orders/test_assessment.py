"""Department assessment and hotspots (callcenter/orders/assessment.py), from audit records
made by the real lifecycle: the 三率 count only citizens' own keys; returns, re-dispatches,
reopenings, overdue and supervision land on the department that had the order."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from callcenter.orders import assessment as asm
from callcenter.orders.lifecycle import (
    Actor,
    AuditRecord,
    Caller,
    Deadlines,
    Role,
    apply,
    open_order,
)

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=TZ)
OP = Actor("op1", Role.OPERATOR, "centre")
SUP = Actor("sup1", Role.SUPERVISOR, "centre")
CITIZEN = Actor("ivr", Role.CITIZEN, "")
SYSTEM = Actor("timers", Role.SYSTEM, "system")


def dept(unit: str) -> Actor:
    return Actor(f"h-{unit}", Role.DEPARTMENT, unit)


class Story:
    def __init__(self, oid: str, text: str = "人民路夜间施工噪音", location: str = "人民路8号",
                 category: str = "noise", at: datetime = T0) -> None:
        self.order, first = open_order(
            order_id=oid, number=oid, actor=OP, at=at, caller=Caller("张三", "13800000000"),
            category=category, text=text, location=location,
            deadlines=Deadlines(at + timedelta(days=1), at + timedelta(days=5)))
        self.records: list[AuditRecord] = [first]
        self.at = at

    def step(self, step: str, actor: Actor, hours: float, reason: str | None = None,
             **data: object) -> Story:
        self.at = self.at + timedelta(hours=hours)
        self.order, rec = apply(self.order, step, actor, self.at, reason, **data)
        self.records.append(rec)
        return self

    def done_by(self, unit: str, hours: float = 10) -> Story:
        return (self.step("accept_handling", dept(unit), 1)
                .step("reply", dept(unit), hours, text="已处理")
                .step("complete", dept(unit), 0.1)
                .step("start_return_visit", SYSTEM, 1))


def events(*stories: Story) -> list[asm.Event]:
    return [asm.event_of(r) for s in stories for r in s.records]


def window() -> tuple[float, float]:
    return T0.timestamp(), (T0 + timedelta(days=30)).timestamp()


def test_the_three_rates_count_only_the_citizens_own_keys() -> None:
    a = Story("1").step("dispatch", OP, 0.5, department="housing").done_by("housing")
    a.step("evaluate", CITIZEN, 1, source="citizen_keys", resolved=True,
           satisfaction_department=3)
    b = Story("2").step("dispatch", OP, 0.5, department="housing").done_by("housing", 200)
    b.step("reopen", CITIZEN, 1, source="citizen_keys", resolved=False,
           satisfaction_department=1)
    # Staff heard "solved, satisfied" on a call: recorded, but not part of the 三率.
    c = Story("3").step("dispatch", OP, 0.5, department="housing").done_by("housing")
    c.step("evaluate", OP, 1, source="operator_call", resolved=True, satisfaction_department=3,
           call_id="call-9")
    # Signed for late: the first-response deadline (one day) had passed.
    d = Story("4").step("dispatch", OP, 0.5, department="housing")
    d.step("flag_overdue", SYSTEM, 24, timer="first_response_overdue",
           deadline=d.order.first_response_due).step("accept_handling", dept("housing"), 2)
    f = asm.assess(events(a, b, c, d), *window())["housing"]
    assert (f.received, f.responded_in_time) == (4, 3) and f.response_rate == 75.0
    assert (f.answered, f.solved, f.resolution_rate) == (2, 1, 50.0)
    assert (f.scored, f.satisfied, f.satisfaction_rate) == (2, 1, 50.0)
    assert (f.completed, f.completed_in_time, f.on_time_rate) == (3, 2, 66.67)
    assert (f.reopened, f.reopen_rate) == (1, 33.33)
    assert f.overdue == 1 and f.score == round((75.0 + 50.0 + 50.0) / 3, 2)


def test_returns_and_redispatches_count_against_the_department_that_had_the_order() -> None:
    a = Story("1").step("dispatch", OP, 0.5, department="housing")
    a.step("return", dept("housing"), 2, "不属本单位职责")
    a.step("accept_return", SUP, 1, "改派城管", department="urban_management")
    a.done_by("urban_management")
    b = Story("2").step("dispatch", OP, 0.5, department="housing")
    b.step("redispatch", OP, 1, "派错了", department="transport")
    b.step("supervise", SUP, 1, "督办", deadline=b.at + timedelta(days=2))
    got = asm.assess(events(a, b), *window())
    assert got["housing"].received == 2
    assert (got["housing"].returned, got["housing"].return_rate) == (1, 50.0)
    assert (got["housing"].redispatched, got["housing"].redispatch_rate) == (1, 50.0)
    assert got["urban_management"].received == 1 and got["urban_management"].completed == 1
    assert got["transport"].supervised == 1 and got["housing"].supervised == 0
    # Outside the window nothing is received.
    later = (T0 + timedelta(days=40)).timestamp()
    assert asm.assess(events(a, b), later, later + 86400) == {}


def test_ranking_puts_departments_without_rates_last() -> None:
    a = Story("1").step("dispatch", OP, 0.5, department="housing").done_by("housing")
    b = Story("2").step("dispatch", OP, 0.5, department="transport")
    b.step("flag_overdue", SYSTEM, 25, timer="first_response_overdue",
           deadline=b.order.first_response_due)
    b.step("accept_handling", dept("transport"), 1)
    ranked = asm.assess(events(a, b), *window())
    assert list(ranked) == ["housing", "transport"]
    assert [f.rank for f in ranked.values()] == [1, 2]
    assert asm.rank([asm.DepartmentFigures("x").finish()])["x"].rank is None


def test_hotspots_this_week_against_last_week_and_last_year_and_a_burst() -> None:
    monday = datetime(2026, 11, 23, tzinfo=TZ)
    stories = [Story(str(i), at=monday + timedelta(hours=i)) for i in range(6)]
    stories += [Story("w1", text="停水三天", location="解放大道1号", category="water",
                      at=monday - timedelta(days=5))]
    stories += [Story("y1", at=datetime(2025, 11, 25, tzinfo=TZ))]
    new = asm.new_orders(events(*stories), TZ)
    hot = asm.hotspots(new, monday, ("噪音", "停水"))
    assert hot["categories"][0] == {"name": "noise", "this_week": 6, "last_week": 0,
                                    "last_year": 1, "change": 6}
    assert hot["streets"][0]["name"] == "人民路" and hot["keywords"][0]["name"] == "噪音"
    assert asm.street_of("解放大道1号") == "解放大道" and asm.street_of("") == ""
    # Six orders about 人民路 within five hours, none in the week before: a burst.
    found = asm.bursts(new, monday + timedelta(hours=5, minutes=30), hours=6, min_count=5)
    assert [(b.street, b.count) for b in found] == [("人民路", 6)]
    assert asm.bursts(new, monday + timedelta(hours=5, minutes=30), hours=6, min_count=7) == []
