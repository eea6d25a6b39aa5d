"""Demo work orders: a realistic set in every state, so every board has something true.

Each story below is what happens to one citizen's request, step by step, through
:class:`~callcenter.orders.store.WorkOrders` (so the pure core checks every step and
the audit trail is real).  Among them: an order returned back and forth between
two bureaus (推诿 ping-pong and a dispatch cycle), replies copied from a template
(复读机), a completion the citizen contradicted and one nobody checked (假办结),
overdue orders, a caller back about the same matter, and a department's refused
attempt to enter the citizen's satisfaction (被满意).

Also creates the department handler accounts ``dept1`` (市城市管理局, urban
management) and ``dept2`` (市住房和城乡建设局, housing), password ``demo``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

from agent_console.auth import DEMO_PASSWORD, Passwords, Users
from agent_console.models import Role as AccountRole
from callcenter.db import Store
from callcenter.orders.lifecycle import Actor, Caller, OrderError, Role, Step, Urgency
from callcenter.orders.store import WorkOrders

HANDLERS = (("dept1", "urban_management", "城管局承办人"), ("dept2", "housing", "住建局承办人"))

OP = Actor("op1", Role.OPERATOR, "centre")
OP2 = Actor("op2", Role.OPERATOR, "centre")
SUP = Actor("sup1", Role.SUPERVISOR, "centre")
URBAN = Actor("dept1", Role.DEPARTMENT, "urban_management")
HOUSING = Actor("dept2", Role.DEPARTMENT, "housing")
MARKET = Actor("market1", Role.DEPARTMENT, "market_regulation")
WATER = Actor("water1", Role.DEPARTMENT, "water_group")

TEMPLATE = "您好，您反映的问题已收悉，经核实已安排工作人员处理完毕，感谢您对我们工作的支持。"


@dataclass
class Story:
    """One order: opened ``days_ago`` days before now, then its steps at hour offsets."""

    caller: Caller
    category: str
    text: str
    days_ago: float
    steps: list[tuple[float, Any, str, str | None, dict[str, Any]]] = field(default_factory=list)
    urgency: Urgency = Urgency.NORMAL
    confidential: bool = False
    location: str = ""

    def then(self, hours: float, actor: Any, step: str, reason: str | None = None,
             **data: Any) -> Story:
        self.steps.append((hours, actor, step, reason, data))
        return self


def _stories() -> list[Story]:
    c = Caller
    return [
        # 受理: just taken, not yet dispatched.
        Story(c("陈女士", "13700001111", "幸福路12号"), "市政设施", "幸福路12号门口井盖缺失，夜里很危险。",
              0.02, urgency=Urgency.URGENT, location="幸福路12号"),
        # 直接答复: the operator answered on the call; then the citizen was asked.
        Story(c("赵先生", "13700002222"), "社会保险", "想咨询社保卡丢了怎么补办。", 4)
        .then(0.1, OP, "resolve_on_call", answer="告知可到就近社保网点或通过官方App补办。")
        .then(26, SUP, "start_return_visit")
        .then(27, "keys", "evaluate", resolved=True, satisfaction_operator=3),
        Story(c("钱女士", "13700003333"), "房产交易", "询问二手房过户需要带哪些材料。", 0.3)
        .then(0.05, OP2, "resolve_on_call", answer="已告知所需材料清单及办理地点。"),
        # 派单: waiting for the bureau to sign for it.
        Story(c("孙先生", "13700004444"), "占道经营", "菜市场门口流动摊贩占道经营，早高峰堵路。", 0.1,
              location="东风菜市场")
        .then(0.2, OP, "dispatch", department="urban_management"),
        # 办理: signed for, a co-handler added.
        Story(c("李女士", "13700005555"), "物业管理", "小区电梯经常停运，物业不处理。", 1)
        .then(0.2, OP, "dispatch", department="housing")
        .then(0.4, HOUSING, "accept_handling")
        .then(2, SUP, "add_co_handler", "涉及特种设备安全", department="market_regulation")
        .then(5, MARKET, "co_reply", text="已联系特种设备检验机构安排检查。"),
        # 退单 awaiting the centre's review.
        Story(c("周先生", "13700006666"), "环境卫生", "小区内部道路垃圾堆放多日无人清运。", 0.5)
        .then(0.2, OP, "dispatch", department="urban_management")
        .then(2, URBAN, "return", "属小区物业管理范围，应由住建部门督促物业处理。"),
        # 推诿 ping-pong: returned twice, the lead went urban → housing → urban.
        Story(c("吴女士", "13700007777"), "违章搭建", "楼顶有人违章搭建彩钢房，已经两个月了。", 6)
        .then(0.3, OP, "dispatch", department="urban_management")
        .then(3, URBAN, "return", "小区内违建应由住建部门处理。")
        .then(5, SUP, "accept_return", "按退单意见改派住建局。", department="housing")
        .then(20, HOUSING, "return", "违法建设查处属城管执法职责。")
        .then(24, SUP, "accept_return", "违建查处属城管职责，改派回城管局。",
              department="urban_management")
        .then(30, URBAN, "accept_handling")
        .then(34, SUP, "supervise", "多次退单，限期办理。", deadline_hours=72),
        # 答复 written, not yet completed.
        Story(c("郑先生", "13700008888"), "供水", "家里自来水发黄，已经三天了。", 2)
        .then(0.2, OP, "dispatch", department="water_group")
        .then(0.4, WATER, "accept_handling")
        .then(20, WATER, "reply", text="已派员冲洗管网并取样检测，水质已恢复正常。"),
        # 复读机: housing answers three different orders with one template.
        *[
            Story(c(name, number), "物业管理", text, days)
            .then(0.2, OP, "dispatch", department="housing")
            .then(0.4, HOUSING, "accept_handling")
            .then(30, HOUSING, "reply", text=TEMPLATE)
            .then(31, HOUSING, "complete")
            for name, number, text, days in (
                ("王女士", "13700009991", "小区楼道灯坏了一个月没人修。", 5),
                ("冯先生", "13700009992", "物业擅自提高停车费，没有公示。", 4.5),
                ("褚女士", "13700009993", "小区绿化带被改成停车位。", 4),
            )
        ],
        # 假办结: completed, the citizen said it is not solved, back to the bureau.
        Story(c("卫先生", "13700001010"), "市容环境", "烧烤店油烟直排，晚上开不了窗。", 7,
              location="建设路烧烤一条街")
        .then(0.2, OP, "dispatch", department="urban_management")
        .then(0.4, URBAN, "accept_handling")
        .then(28, URBAN, "reply", text="已责令商户安装油烟净化设备。")
        .then(29, URBAN, "complete")
        .then(50, SUP, "start_return_visit")
        .then(51, "keys", "reopen", resolved=False, satisfaction_operator=3,
              satisfaction_department=1),
        # 假办结 nobody checked: completed five days ago, no return visit.
        Story(c("蒋女士", "13700001212"), "渣土", "工地渣土车不遮盖，路上全是泥。", 9)
        .then(0.2, OP, "dispatch", department="urban_management")
        .then(0.4, URBAN, "accept_handling")
        .then(70, URBAN, "reply", text="已对渣土运输企业立案处罚。")
        .then(96, URBAN, "complete"),
        # Evaluated: the whole way, satisfied.
        Story(c("沈先生", "13700001313"), "路灯", "人民公园南门路灯不亮。", 8)
        .then(0.2, OP, "dispatch", department="urban_management")
        .then(0.4, URBAN, "accept_handling")
        .then(20, URBAN, "reply", text="已更换损坏灯具，路灯恢复照明。")
        .then(21, URBAN, "complete")
        .then(40, SUP, "start_return_visit")
        .then(41, "keys", "evaluate", resolved=True, satisfaction_operator=3,
              satisfaction_department=3),
        # Repeat caller: the same matter again soon after that completion.
        Story(c("沈先生", "13700001313"), "路灯", "人民公园南门路灯又不亮了。", 2)
        .then(0.2, OP, "dispatch", department="urban_management"),
        # 回访 in progress: completed by housing, the citizen not yet reached.
        Story(c("韩女士", "13700001414"), "建筑施工", "工地夜间施工噪音扰民到凌晨。", 3)
        .then(0.2, OP, "dispatch", department="housing")
        .then(0.4, HOUSING, "accept_handling")
        .then(10, HOUSING, "reply", text="已约谈施工单位，夜间停止高噪声作业。")
        .then(11, HOUSING, "complete")
        .then(30, SUP, "start_return_visit")
        .then(31, SUP, "visit_unreachable"),
        # Overdue: an emergency nobody signed for, and a slow normal order.
        Story(c("杨先生", "13700001515"), "市政设施", "路中间塌了一个大坑，车辆绕行。", 2,
              urgency=Urgency.EMERGENCY, location="解放大道与新华路口")
        .then(0.1, OP, "dispatch", department="urban_management"),
        Story(c("朱女士", "13700001616"), "物业管理", "小区维修基金使用不公开。", 12)
        .then(0.3, OP, "dispatch", department="housing")
        .then(30, HOUSING, "accept_handling"),
        # Confidential report: identity hidden from the bureau.
        Story(c("秦先生", "13700001717", "城南某小区"), "违章搭建", "举报邻居私自拆除承重墙。", 1,
              confidential=True)
        .then(0.5, OP, "dispatch", department="housing"),
    ]


def demo_callers() -> list[tuple[str, str]]:
    """The demo orders' citizens as (number, name), once each: they may call again."""
    seen: dict[str, str] = {}
    for story in _stories():
        seen.setdefault(story.caller.number, story.caller.name)
    return list(seen.items())


async def seed_handlers(store: Store, work_orders: WorkOrders, *,
                        passwords: Passwords | None = None) -> list[str]:
    """The demo's department handler accounts (created if missing); their names."""
    users = Users(store.engine, passwords)
    created = []
    for username, department, display in HANDLERS:
        if await users.get(username) is None:
            await users.add(username, DEMO_PASSWORD, AccountRole.HANDLER, display_name=display)
            created.append(username)
        await work_orders.set_department(username, department)
    return created


async def seed_demo_orders(store: Store, *, tz: tzinfo | None = None,
                           clock: Callable[[], float] = time.time,
                           passwords: Passwords | None = None) -> list[str]:
    """Handler accounts, then the demo orders if there are none yet; the order numbers."""
    wo = WorkOrders(store.engine, tz=tz, clock=clock)
    await seed_handlers(store, wo, passwords=passwords)
    if (await wo.list(per_page=1))[1]:
        return []
    now = wo.now()
    numbers = []
    for story in _stories():
        start = now - timedelta(days=story.days_ago)
        order, _ = await wo.create(OP, caller=story.caller, category=story.category,
                                   text=story.text, urgency=story.urgency,
                                   confidential=story.confidential, location=story.location,
                                   at=start)
        for hours, actor, step, reason, data in story.steps:
            await _play(wo, order.id, start + timedelta(hours=hours), actor, step, reason, data)
        numbers.append(order.number)
    numbers += await _seed_other_channels(wo, now)
    # 被满意: a bureau tries to enter the citizen's satisfaction; refused, but kept.
    completed, _ = await wo.list(state="completed", department="housing")
    if completed:
        try:
            await wo.step(completed[0].id, Step.EVALUATE, HOUSING, at=now,
                          source="citizen_keys", resolved=True, satisfaction_department=3)
        except OrderError:
            pass
    await wo.fire_due(now)
    return numbers


async def _play(wo: WorkOrders, order_id: str, at: datetime, actor: Any, step: str,
                reason: str | None, data: dict[str, Any]) -> None:
    if actor == "keys":  # the citizen's own key presses in the IVR
        await wo.record_citizen_keys(order_id, data["resolved"],
                                     data.get("satisfaction_operator"),
                                     data.get("satisfaction_department"),
                                     call_id=None, at=at)
        return
    if "deadline_hours" in data:
        data = {"deadline": at + timedelta(hours=data["deadline_hours"])}
    await wo.step(order_id, step, actor, reason=reason, at=at, **data)


STREETLIGHT = "光明路与建设路交叉口"
CLUSTER = (  # 重复件: one broken streetlight, reported by five people on four channels
    (6.0, "phone", Caller("周先生", "13700002001"), "光明路与建设路交叉口的路灯坏了，晚上一片漆黑。"),
    (5.2, "wechat", Caller("吴女士", "13700002002"), "光明路建设路交叉口路灯坏了，晚上一片漆黑，过马路很危险。"),
    (4.1, "phone", Caller("郑先生", "13700002003"), "光明路与建设路交叉口路灯不亮，晚上一片漆黑。"),
    (2.5, "app", Caller("冯女士", "13700002004"), "光明路与建设路交叉口的路灯坏了好几天，晚上很黑。"),
    (1.0, "web", Caller("陈先生", "13700002005"), "光明路与建设路交叉口路灯坏了，晚上一片漆黑。"),
)
OTHER_CHANNELS = (
    ("mayor_mailbox", Caller("褚先生", "13700002101", "和平区安康里5号"), "公共交通",
     "建议在安康里小区门口增设一个公交站点，老人出行不便。", ""),
    ("email", Caller("卫女士", "13700002102"), "供热", "幸福家园3号楼暖气不热，室温只有14度。",
     "幸福家园3号楼"),
    ("letter", Caller("蒋先生", "13700002103", "建设路18号"), "噪声污染", "建设路18号附近工地夜间施工，噪音扰民。",
     "建设路18号"),
)


async def _seed_other_channels(wo: WorkOrders, now: datetime) -> list[str]:
    """The duplicates cluster and requests from the other channels (一号对外)."""
    numbers = []
    for hours_ago, channel, caller, text in CLUSTER:
        order, _ = await wo.create(OP2 if channel == "phone" else OP, caller=caller,
                                   category="路灯", text=text, location=STREETLIGHT,
                                   at=now - timedelta(hours=hours_ago), channel=channel)
        numbers.append(order.number)
    for i, (channel, caller, category, text, location) in enumerate(OTHER_CHANNELS):
        order, _ = await wo.create(SUP, caller=caller, category=category, text=text,
                                   location=location, at=now - timedelta(hours=3 + i),
                                   channel=channel)
        numbers.append(order.number)
    return numbers


async def seed_report_history(store: Store, *, tz: tzinfo, clock: Callable[[], float] = time.time,
                              calls: int = 12_000, orders: int = 1_500) -> int:
    """This month's history before today, for the reports page: synthetic calls, agent
    state changes and work-order steps (:func:`callcenter.bench.synthetic_month`), each
    part written once (the calls when no call before today is stored, the state changes
    when none before today is, the steps when no history order's is): a start cut off
    between parts writes the parts still missing next time, and none twice.  Today's figures stay
    the live ones.  Returns the calls written."""
    from sqlalchemy import func, insert, select

    from acd.reports import window
    from callcenter.bench import synthetic_month
    from callcenter.db import AgentStateRow, CallRow
    from callcenter.orders import facts
    from callcenter.orders.store import OrderEventRow

    now = datetime.fromtimestamp(clock(), tz)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = window((today - timedelta(days=7)).date(), "month", tz)[0]  # a week at least
    before, first_order = today.timestamp(), 1_000_000
    async with store.engine.connect() as conn:
        have_calls = bool((await conn.execute(select(func.count()).select_from(CallRow).where(
            CallRow.joined_at < before))).scalar_one())
        have_states = (await conn.execute(select(AgentStateRow.id).where(
            AgentStateRow.at < before).limit(1))).first() is not None
        have_events = (await conn.execute(select(OrderEventRow.id).where(
            OrderEventRow.order_id >= first_order).limit(1))).first() is not None
    if have_calls and have_states and have_events:
        return 0
    rows, states, events = synthetic_month(start.timestamp(), before, calls=calls,
                                           orders=orders, agents=14, seed=7, tz=tz,
                                           order_id_from=first_order)
    rows = [] if have_calls else rows
    states = [] if have_states else states
    events = [] if have_events else events
    # In short transactions: on SQLite each holds the one write lock, and the demo is
    # already serving (one transaction of it all held a login back past the 5-s busy
    # timeout on a loaded machine).
    for i in range(0, len(rows), 5000):
        await store.save_calls(rows[i:i + 5000])
    for i in range(0, len(states), 5000):
        async with store.engine.begin() as conn:
            await conn.execute(insert(AgentStateRow), states[i:i + 5000])
    by_order: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        by_order.setdefault(e["order_id"], []).append(e)
    ids = sorted(by_order)
    for i in range(0, len(ids), 250):  # an order's steps and its facts together
        async with store.engine.begin() as conn:
            await conn.execute(insert(OrderEventRow),
                               [e for oid in ids[i:i + 250] for e in by_order[oid]])
            # written past the order store (no work_orders rows: history only, counted
            # as phone orders): their assessment parts are folded here
            await facts.refresh(conn, ids[i:i + 250])
    return len(rows)
