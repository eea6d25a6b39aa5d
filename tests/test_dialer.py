"""The dialer (ivr/dialer.py): return visits and call-backs placed through AMI Originate,
their results, retries, hand-over to an operator, persistence across a restart.

A real SQLite database and real WorkOrders; the PBX is a recorder of the actions
sent (its OriginateResponse events are fed back as Asterisk would send them).
Time is a settable clock; ``Dialer.step()`` is called instead of waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, select

from acd import events as ev
from acd.state import CallCenter, QueueConfig
from callcenter.db import Store, alembic_config
from callcenter.orders.lifecycle import Actor, Caller, Role, State
from callcenter.orders.store import WorkOrders, record_json
from callcenter.pbx.ami import LinkDown
from ivr.dialer import (
    ConfigError,
    Dialer,
    OutboundRow,
    OutboundSettings,
    return_visit_of,
    survey_of,
)
from ivr.fastagi import CallbackRequest

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=TZ).timestamp()
OP = Actor("op1", Role.OPERATOR, "centre")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeLink:
    sent: list[dict[str, Any]] = field(default_factory=list)
    down: bool = False
    reply: dict[str, str] = field(default_factory=lambda: {
        "Response": "Success", "Message": "Originate successfully queued"})

    async def __call__(self, action: dict[str, Any]) -> dict[str, str]:
        if self.down:
            raise LinkDown("AMI link is down; Originate not sent", action="Originate",
                           sent=False, idempotent=False)
        self.sent.append(dict(action))
        return dict(self.reply)


def settings(**over: Any) -> OutboundSettings:
    s = OutboundSettings(agi_url="agi://10.0.0.5:4573", visit_delay_s=60,
                         visit_retry_s=(120.0, 600.0), visit_hours=(9, 20),
                         callback_retry_s=30, callback_max_attempts=2)
    for k, v in over.items():
        setattr(s, k, v)
    return s


@dataclass
class Rig:
    store: Store
    clock: Clock
    link: FakeLink
    orders: WorkOrders
    centre: CallCenter
    dialer: Dialer

    def restart(self) -> Dialer:
        self.dialer = Dialer(engine=self.store.engine, send=self.link, orders=self.orders,
                             centre=self.centre, settings=self.dialer.settings,
                             clock=self.clock, tz=TZ)
        return self.dialer


@pytest.fixture
def rig(store: Store) -> Rig:
    clock = Clock()
    link = FakeLink()
    orders = WorkOrders(store.engine, tz=TZ, clock=clock)
    centre = CallCenter({"hotline": QueueConfig(servicelevel=15, wrapuptime=0)})
    dialer = Dialer(engine=store.engine, send=link, orders=orders, centre=centre,
                    settings=settings(), clock=clock, tz=TZ)
    return Rig(store, clock, link, orders, centre, dialer)


async def resolved_order(rig: Rig, number: str = "13812345678") -> str:
    order, _ = await rig.orders.create(OP, caller=Caller("张三", number), category="占道经营",
                                       text="流动摊贩占道经营")
    await rig.orders.step(order.id, "resolve_on_call", OP, answer="已告知处理方式")
    return order.id


def originate_response(aid: str, ok: bool, reason: str) -> dict[str, str]:
    return {"Event": "OriginateResponse", "Privilege": "call,all", "ActionID": aid,
            "Response": "Success" if ok else "Failure", "Channel": "Local/x@y",
            "Reason": reason, "Uniqueid": "<null>"}


async def test_return_visit_is_dialled_after_the_delay_and_the_citizens_keys_close_it(
        rig: Rig) -> None:
    oid = await resolved_order(rig)
    await rig.dialer.step()
    assert rig.link.sent == []  # scheduled, not yet due
    assert (await return_visit_of(rig.store.engine, oid))["status"] == "waiting"
    rig.clock.now += 61
    await rig.dialer.step()
    [sent] = rig.link.sent
    order_id, token = sent.pop("Variable")
    assert sent == {
        "Action": "Originate", "ActionID": f"rv-{oid}-1",
        "Channel": "Local/13812345678@hotline-outbound", "Application": "AGI",
        "Data": f"agi://10.0.0.5:4573/returnvisit,{oid}", "CallerID": '"12345" <12345>',
        "Timeout": "30000", "Async": "true"}
    assert order_id == f"ORDER_ID={oid}"
    # the script's permission to write this order's keys, once (ivr.fastagi.AgiTokens)
    assert token.startswith("AGI_TOKEN=")
    token = token.removeprefix("AGI_TOKEN=")
    assert rig.dialer.tokens.redeem(token, "returnvisit", "other", "1.1") is not None
    assert rig.dialer.tokens.redeem(token, "returnvisit", oid, "1.1") is None
    assert rig.dialer.tokens.redeem(token, "returnvisit", oid, "1.1") is not None
    assert (await rig.orders.get(oid)).state is State.RETURN_VISIT
    await rig.dialer.step()
    assert len(rig.link.sent) == 1  # in flight: not dialled twice
    rig.dialer.on_ami_event(originate_response(f"rv-{oid}-1", True, "4"), rig.clock.now)
    assert await rig.dialer.asks_department(oid) is False  # resolved on the call
    await rig.dialer.visit_answered(oid, True, 3, None, "1763863200.7")
    order = await rig.orders.get(oid)
    assert order.state is State.EVALUATED
    history = [str(r.step) for r in await rig.orders.history(oid)]
    assert history[-2:] == ["start_return_visit", "evaluate"]
    last = (await rig.orders.history(oid))[-1]
    assert last.actor_id == "ivr" and last.data["source"] == "citizen_keys"
    assert (await return_visit_of(rig.store.engine, oid))["status"] == "done"


async def test_keys_the_order_cannot_take_are_kept_on_the_outbound_row(rig: Rig) -> None:
    oid = await resolved_order(rig)
    await rig.dialer.step()
    rig.clock.now += 61
    await rig.dialer.step()
    await rig.dialer.visit_answered(oid, True, 3, 2, "1763863200.7")  # no department to rate
    row = await return_visit_of(rig.store.engine, oid)
    assert row["result"] == "keys not recorded (resolved=True operator=3 department=2)"
    assert (await rig.orders.get(oid)).state is State.RETURN_VISIT


async def test_unanswered_visits_are_retried_then_handed_to_an_operator(rig: Rig) -> None:
    oid = await resolved_order(rig)
    await rig.dialer.step()
    delays = [61, 121, 601]
    for attempt, delay in enumerate(delays, start=1):
        rig.clock.now += delay
        await rig.dialer.step()
        assert rig.link.sent[-1]["ActionID"] == f"rv-{oid}-{attempt}"
        rig.dialer.on_ami_event(originate_response(f"rv-{oid}-{attempt}", False, "3"),
                                rig.clock.now)
        await rig.dialer.step()
    assert len(rig.link.sent) == 3
    row = await return_visit_of(rig.store.engine, oid)
    assert row["status"] == "manual" and row["attempts"] == 3
    assert "no answer" in row["result"] and "operator" in row["result"]
    history = await rig.orders.history(oid)
    unreachable = [r for r in history if str(r.step) == "visit_unreachable"]
    # Stored as codes (callcenter/orders/reasons.py), said in Chinese and English.
    assert [r.data["reason_code"] for r in unreachable] == [
        {"code": "visit_unreachable", "attempt": n, "outcome": "no_answer"} for n in (1, 2, 3)]
    assert [(record_json(r)["reason"], record_json(r)["reason_en"]) for r in unreachable] == [
        (f"第 {n} 次回访外呼未接通：无人接听", f"Return-visit call {n} not reached: no answer")
        for n in (1, 2, 3)]
    started = [r for r in history if str(r.step) == "start_return_visit"]
    assert [r.data["reason_code"] for r in started] == [{"code": "visit_auto"}]
    assert (await rig.orders.get(oid)).state is State.RETURN_VISIT  # not evaluated by us
    rig.clock.now += 86400
    await rig.dialer.step()
    assert len(rig.link.sent) == 3  # never again automatically


async def test_picked_up_but_no_keys_counts_as_no_answer(rig: Rig) -> None:
    oid = await resolved_order(rig)
    await rig.dialer.step()
    rig.clock.now += 61
    await rig.dialer.step()
    await rig.dialer.visit_no_answer(oid, "1763863200.9")
    await rig.dialer.step()
    row = await return_visit_of(rig.store.engine, oid)
    assert row["status"] == "waiting" and row["result"] == "no keys pressed"
    assert row["next_at"] == pytest.approx(rig.clock.now + 120)


async def test_a_down_link_is_not_an_attempt_and_a_restart_loses_nothing(rig: Rig) -> None:
    oid = await resolved_order(rig)
    await rig.dialer.step()
    rig.clock.now += 61
    rig.link.down = True
    await rig.dialer.step()
    assert rig.link.sent == []
    rig.link.down = False
    # The service restarts before the next round: the visit comes back from the database.
    rig.restart()
    await rig.dialer.load()
    await rig.dialer.step()
    assert [a["ActionID"] for a in rig.link.sent] == [f"rv-{oid}-1"]
    # And again, while that call is in flight: placed again, not forgotten.
    rig.restart()
    await rig.dialer.load()
    await rig.dialer.step()
    assert [a["ActionID"] for a in rig.link.sent] == [f"rv-{oid}-1", f"rv-{oid}-2"]


async def test_callbacks_survive_a_restart_in_their_order(rig: Rig) -> None:
    await rig.dialer.callback_requested(request("1763863000.5", "13900001111"))
    rig.clock.now += 1
    await rig.dialer.callback_requested(request("1763863001.6", "13900002222"))
    await rig.dialer.step()
    rig.restart()
    await rig.dialer.load()
    assert [e.id for e in rig.dialer.callbacks.waiting("hotline")] == [
        "1763863000.5", "1763863001.6"]
    rig.dialer.changed(rig.centre.apply(ev.MemberAdded(rig.clock.now, member())))
    await rig.dialer.step()
    assert [a["ActionID"] for a in rig.link.sent] == ["cb-1763863000.5-1"]


async def test_outside_calling_hours_the_visit_waits_for_the_morning(rig: Rig) -> None:
    rig.clock.now = datetime(2026, 11, 23, 19, 59, 30, tzinfo=TZ).timestamp()
    oid = await resolved_order(rig)
    await rig.dialer.step()
    rig.clock.now += 3600
    await rig.dialer.step()
    assert rig.link.sent == []
    row = await return_visit_of(rig.store.engine, oid)
    assert datetime.fromtimestamp(row["next_at"], TZ) == datetime(2026, 11, 24, 9, 0,
                                                                  tzinfo=TZ)


async def test_an_order_answered_by_hand_cancels_the_automatic_visit(rig: Rig) -> None:
    oid = await resolved_order(rig)
    await rig.dialer.step()
    await rig.orders.step(oid, "start_return_visit", Actor("sup1", Role.SUPERVISOR, "centre"))
    await rig.orders.record_citizen_keys(oid, True, 3, None, "1763863200.3")
    await rig.dialer.step()
    rig.clock.now += 61
    await rig.dialer.step()
    assert rig.link.sent == []
    assert (await return_visit_of(rig.store.engine, oid))["status"] == "cancelled"


async def test_an_order_without_a_number_goes_to_an_operator(rig: Rig) -> None:
    oid = await resolved_order(rig, number="")
    await rig.dialer.step()
    row = await return_visit_of(rig.store.engine, oid)
    assert row["status"] == "manual" and row["result"] == "no number to call"


def member(name: str = "agent1001", interface: str = "Local/1001@agents") -> ev.MemberInfo:
    return ev.MemberInfo("hotline", name, interface, False, "", False, 1, 0)


def request(uid: str = "1763863000.5", number: str = "13900001111") -> CallbackRequest:
    return CallbackRequest(uid, number, "hotline", "12345", "consult", "zh", "direct")


async def test_callback_waits_for_a_free_operator_and_keeps_its_place(rig: Rig) -> None:
    await rig.dialer.callback_requested(request())
    await rig.dialer.step()
    assert rig.link.sent == []  # nobody signed in
    rig.dialer.changed(rig.centre.apply(ev.MemberAdded(T0, member())))
    await rig.dialer.step()
    assert rig.link.sent == [{
        "Action": "Originate", "ActionID": "cb-1763863000.5-1",
        "Channel": "Local/13900001111@hotline-callback", "Context": "hotline-queue",
        "Exten": "hotline", "Priority": "1", "CallerID": '"12345" <12345>',
        "Timeout": "30000", "Async": "true",
        "Variable": ["QUEUE=hotline", "HOTLINE=12345", "CATEGORY=consult",
                     "IVR_PATH=direct", "LANG=zh", "CALLBACK_ID=1763863000.5"]}]
    await rig.dialer.step()
    assert len(rig.link.sent) == 1  # one free operator, one call-back in flight
    rig.dialer.on_ami_event(originate_response("cb-1763863000.5-1", True, "4"), T0)
    await rig.dialer.step()
    async with rig.store.sessions() as s:
        row = (await s.scalars(select(OutboundRow))).one()
    assert (row.kind, row.status, row.attempts) == ("callback", "done", 1)
    assert len(rig.dialer.callbacks) == 0


async def test_a_caller_already_waiting_longer_goes_first(rig: Rig) -> None:
    rig.centre.apply(ev.MemberAdded(T0 - 400, member()))
    rig.centre.apply(ev.CallerJoined(T0 - 300, "hotline", "1763862700.1", "PJSIP/trunk-1",
                                     "13700000000", "", 1))
    await rig.dialer.callback_requested(request())  # asked at T0, after that caller joined
    await rig.dialer.step()
    assert rig.link.sent == []
    rig.centre.apply(ev.CallerJoined(T0 + 5, "hotline", "1763863005.1", "PJSIP/trunk-2",
                                     "13700000001", "", 1))
    rig.centre.waiting["hotline"].pop("1763862700.1")  # the earlier caller was served
    await rig.dialer.step()
    assert [a["ActionID"] for a in rig.link.sent] == ["cb-1763863000.5-1"]


async def test_failed_callbacks_retry_then_give_up(rig: Rig) -> None:
    rig.centre.apply(ev.MemberAdded(T0, member()))
    await rig.dialer.callback_requested(request())
    await rig.dialer.step()
    rig.dialer.on_ami_event(originate_response("cb-1763863000.5-1", False, "3"), T0)
    await rig.dialer.step()
    assert len(rig.link.sent) == 1  # not before retry_after_s
    rig.clock.now += 31
    await rig.dialer.step()
    assert rig.link.sent[-1]["ActionID"] == "cb-1763863000.5-2"
    rig.dialer.on_ami_event(originate_response("cb-1763863000.5-2", False, "5"), T0)
    await rig.dialer.step()
    async with rig.store.sessions() as s:
        row = (await s.scalars(select(OutboundRow))).one()
    assert row.status == "gave_up" and row.result == "busy; gave up"
    rig.clock.now += 3600
    await rig.dialer.step()
    assert len(rig.link.sent) == 2


async def test_a_refused_originate_is_a_failed_attempt(rig: Rig) -> None:
    rig.link.reply = {"Response": "Error", "Message": "Originate failed"}
    rig.centre.apply(ev.MemberAdded(T0, member()))
    await rig.dialer.callback_requested(request())
    await rig.dialer.step()
    await rig.dialer.step()
    async with rig.store.sessions() as s:
        row = (await s.scalars(select(OutboundRow))).one()
    assert row.status == "waiting" and "Originate failed" in row.result


async def test_anonymous_callers_cannot_be_called_back(rig: Rig) -> None:
    await rig.dialer.callback_requested(request(number="anonymous"))
    await rig.dialer.step()
    async with rig.store.sessions() as s:
        row = (await s.scalars(select(OutboundRow))).one()
    assert row.status == "gave_up" and len(rig.dialer.callbacks) == 0


async def test_survey_keys_are_stored_with_the_call(rig: Rig) -> None:
    await rig.dialer.survey_answered("1763863200.1", 2)
    assert (await survey_of(rig.store.engine, "1763863200.1"))["score"] == 2
    await rig.dialer.survey_answered("1763863200.1", 3)  # the latest key counts
    assert (await survey_of(rig.store.engine, "1763863200.1"))["score"] == 3
    await rig.dialer.survey_answered("1763863200.2", None)
    assert (await survey_of(rig.store.engine, "1763863200.2"))["score"] is None
    assert await survey_of(rig.store.engine, "nope") is None


def test_outbound_settings_are_checked() -> None:
    assert OutboundSettings.from_raw({}).visit_hours == (9, 20)
    for bad in ({"outbound": {"return_visit": {"hours": [20, 9]}}},
                {"outbound": {"poll_s": "soon"}},
                {"outbound": {"agi_url": "http://x"}},
                {"outbound": {"callback": {"max_attempts": 0}}}):
        with pytest.raises(ConfigError):
            OutboundSettings.from_raw(bad)


async def test_an_order_completed_again_after_a_reopen_gets_a_new_visit(rig: Rig) -> None:
    oid = await resolved_order(rig)
    await rig.dialer.step()
    rig.clock.now += 61
    await rig.dialer.step()
    await rig.dialer.visit_answered(oid, False, 1, None, "1763863200.8")  # not solved
    assert (await rig.orders.get(oid)).state is State.ACCEPTED  # back to the centre
    await rig.dialer.step()
    await rig.orders.step(oid, "resolve_on_call", OP, answer="再次答复：已联系街道处理")
    await rig.dialer.step()
    rig.clock.now += 61
    await rig.dialer.step()
    assert [a["ActionID"] for a in rig.link.sent] == [f"rv-{oid}-1", f"rv-{oid}-1"]
    row = await return_visit_of(rig.store.engine, oid)
    assert row["status"] == "waiting" and row["attempts"] == 1


def test_migration_0004_downgrades_and_upgrades_again(sync_db: str) -> None:
    url = sync_db
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    assert {"outbound_calls", "call_surveys"} <= set(
        inspect(create_engine(url)).get_table_names())
    command.downgrade(cfg, "0003")
    assert not {"outbound_calls", "call_surveys"} & set(
        inspect(create_engine(url)).get_table_names())
    command.upgrade(cfg, "head")
    columns = {c["name"] for c in inspect(create_engine(url)).get_columns("outbound_calls")}
    assert {"kind", "key", "attempts", "next_at", "status", "result"} <= columns


# -- values from the PBX are input (issue 11: as a real Asterisk 22 dialled them) -------------

async def test_full_width_digits_are_dialled_as_ascii(rig: Rig) -> None:
    rig.centre.apply(ev.MemberAdded(T0, member()))
    await rig.dialer.callback_requested(request(number="１３９００００１１１１"))  # full-width
    await rig.dialer.step()
    [sent] = rig.link.sent
    assert sent["Channel"] == "Local/13900001111@hotline-callback"


@pytest.mark.parametrize("number", ["١٣٩٠٠٠٠١١١١",     # Arabic-Indic digits
                                    "¹³⁹⁰⁰⁰⁰¹¹¹¹",      # superscripts (NFKC would make them 0-9)
                                    "139,0000,1111", "1390000\r\n1111"])
async def test_other_digits_and_separators_are_never_dialled(rig: Rig, number: str) -> None:
    rig.centre.apply(ev.MemberAdded(T0, member()))
    await rig.dialer.callback_requested(request(number=number))
    await rig.dialer.step()
    assert rig.link.sent == []
    async with rig.store.sessions() as s:
        row = (await s.scalars(select(OutboundRow))).one()
    assert (row.status, row.result) == ("gave_up", "no number to call back")


@pytest.mark.parametrize("uid", ["1763863000.5,QUEUE=x", "1763863000.5\rAction: Hangup",
                                 "1763863000.5\n"])
async def test_a_smuggling_uniqueid_is_refused_and_later_callbacks_still_go(
        rig: Rig, uid: str) -> None:
    """A comma or CR in an AGI uniqueid ended up inside ``Variable: CALLBACK_ID=...`` and a
    CR there blocked every later call-back in that queue."""
    rig.centre.apply(ev.MemberAdded(T0, member()))
    await rig.dialer.callback_requested(request(uid=uid))
    await rig.dialer.callback_requested(request(uid="1763863001.6"))
    await rig.dialer.step()
    [sent] = rig.link.sent
    assert sent["ActionID"] == "cb-1763863001.6-1"
    assert "CALLBACK_ID=1763863001.6" in sent["Variable"]


async def test_an_order_phone_in_full_width_is_visited_in_ascii(rig: Rig) -> None:
    await resolved_order(rig, number="１３８１２３４５６７８")
    await rig.dialer.step()
    rig.clock.now += 61
    await rig.dialer.step()
    assert rig.link.sent[-1]["Channel"] == "Local/13812345678@hotline-outbound"
