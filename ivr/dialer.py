"""The outbound edge: call-backs, return-visit calls and after-call survey answers.

Theory of operation
-------------------
The decisions are pure and live in :mod:`ivr.callbacks`: :class:`CallbackQueue`
says whom to call back when an operator is free, :class:`ReturnVisitScheduler`
says which return visit is due and what a no-answer leads to.  :class:`Dialer`
is the IO around them:

* **in**: the IVR's ``on_callback`` (a caller pressed "call me back"),
  ``on_survey`` (the after-call key), ``on_answer`` / ``on_no_answer`` (the
  return-visit script); Asterisk's ``OriginateResponse`` events (matched by the
  ``ActionID`` we gave the ``Originate``); the call centre's changes (an operator
  became ready); and completed work orders, found by polling the database.
* **out**: AMI ``Originate`` actions (``Async: true``), work-order steps
  (``start_return_visit``, ``visit_unreachable``, the citizen's keys), and rows
  in ``outbound_calls`` / ``call_surveys`` so that nothing is lost in a restart:
  every request is written before it is acted on, and a call that was in flight
  when the service stopped is simply placed again.

A return visit is only ever answered by the citizen's own keys in the
``returnvisit`` script; the dialer never writes "resolved" or "satisfied" itself.
Unanswered visits are retried on the configured schedule, then handed to an
operator (status ``manual``, listed by ``GET /api/outbound``).

ActionIDs: ``rv-<order id>-<attempt>`` and ``cb-<request id>-<attempt>``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import JSON, Float, Integer, String, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from acd.state import AgentChanged, AgentState, CallCenter, Change
from callcenter.runtime import wait_within
from ivr.callbacks import (
    CallbackEntry,
    CallbackGaveUp,
    CallbackQueue,
    HandToOperator,
    ReturnVisit,
    ReturnVisitScheduler,
)
from ivr.fastagi import AgiTokens
from ivr.values import BadValue, ami_action, app_word, dial_number, uniqueid, variable_value

log = structlog.get_logger("ivr.dialer")

#: Work-order states that wait for a return visit (and the one it is in).
WAITING_FOR_VISIT = ("completed", "resolved_on_call")
VISITING = "return_visit"

#: Asterisk's OriginateResponse ``Reason`` codes (channel.h AST_CONTROL_*).
REASONS = {"0": "failed", "1": "hung up", "3": "no answer", "4": "answered", "5": "busy",
           "8": "congestion"}
#: The same as codes of callcenter.orders.reasons.OUTCOMES (a return visit's trail).
OUTCOME_CODES = {"0": "failed", "1": "hung_up", "3": "no_answer", "4": "answered",
                 "5": "busy", "8": "congestion"}


class ConfigError(ValueError):
    pass


class _Base(DeclarativeBase):
    pass


class OutboundRow(_Base):
    __tablename__ = "outbound_calls"
    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(80), default="")
    number: Mapped[str] = mapped_column(String(40))
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    requested_at: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    result: Mapped[str] = mapped_column(String(80), default="")
    updated_at: Mapped[float] = mapped_column(Float)


class SurveyRow(_Base):
    __tablename__ = "call_surveys"
    call_uniqueid: Mapped[str] = mapped_column(String(64), primary_key=True)
    score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    at: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16), default="citizen_keys")


@dataclass(slots=True)
class OutboundSettings:
    """``[outbound]`` in callcenter.toml."""
    enabled: bool = True
    poll_s: float = 5.0
    caller_id: str = "12345"
    originate_timeout_s: int = 30
    outbound_context: str = "hotline-outbound"
    callback_context: str = "hotline-callback"
    queue_context: str = "hotline-queue"
    agi_url: str = "agi://127.0.0.1:4573"
    visit_delay_s: float = 3600.0
    visit_retry_s: tuple[float, ...] = (7200.0, 86400.0)
    visit_hours: tuple[int, int] = (9, 20)
    visit_result_timeout_s: float = 600.0
    callback_retry_s: float = 300.0
    callback_max_attempts: int = 3

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> OutboundSettings:
        o = raw.get("outbound", {})
        rv = o.get("return_visit", {})
        cb = o.get("callback", {})
        s = cls()
        try:
            s.enabled = bool(o.get("enabled", s.enabled))
            s.poll_s = float(o.get("poll_s", s.poll_s))
            s.caller_id = str(o.get("caller_id", s.caller_id))
            s.originate_timeout_s = int(o.get("originate_timeout_s", s.originate_timeout_s))
            s.outbound_context = str(o.get("outbound_context", s.outbound_context))
            s.callback_context = str(o.get("callback_context", s.callback_context))
            s.queue_context = str(o.get("queue_context", s.queue_context))
            s.agi_url = str(o.get("agi_url", s.agi_url)).rstrip("/")
            s.visit_delay_s = float(rv.get("delay_s", s.visit_delay_s))
            s.visit_retry_s = tuple(float(x) for x in rv.get("retry_after_s", s.visit_retry_s))
            hours = tuple(int(x) for x in rv.get("hours", s.visit_hours))
            s.visit_result_timeout_s = float(rv.get("result_timeout_s",
                                                    s.visit_result_timeout_s))
            s.callback_retry_s = float(cb.get("retry_after_s", s.callback_retry_s))
            s.callback_max_attempts = int(cb.get("max_attempts", s.callback_max_attempts))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[outbound]: {exc}") from None
        if len(hours) != 2 or not 0 <= hours[0] < hours[1] <= 24:
            raise ConfigError("outbound.return_visit.hours must be [start, end) within 0..24")
        s.visit_hours = (hours[0], hours[1])
        if s.poll_s <= 0 or s.callback_max_attempts < 1:
            raise ConfigError("outbound.poll_s must be > 0 and callback.max_attempts >= 1")
        if not s.agi_url.startswith("agi://"):
            raise ConfigError("outbound.agi_url must look like agi://host:port")
        return s


Send = Callable[[dict[str, Any]], Awaitable[Any]]

#: Statuses of ``outbound_calls`` rows.
STATUSES = ("waiting", "done", "manual", "gave_up", "cancelled")


def _row_json(r: OutboundRow) -> dict[str, Any]:
    return {"id": r.id, "kind": r.kind, "key": r.key, "queue": r.queue, "number": r.number,
            "attempts": r.attempts, "next_at": r.next_at, "status": r.status,
            "result": r.result, "requested_at": r.requested_at, "updated_at": r.updated_at}


async def survey_of(engine: AsyncEngine, call_id: str) -> dict[str, Any] | None:
    """The after-call survey key stored for a call, None when there is none."""
    async with async_sessionmaker(engine)() as s:
        row = await s.get(SurveyRow, call_id)
    return None if row is None else {"call": row.call_uniqueid, "score": row.score,
                                     "at": row.at, "source": row.source}


async def return_visit_of(engine: AsyncEngine, order_id: str) -> dict[str, Any] | None:
    """The automatic return visit of an order (status, attempts, last result)."""
    async with async_sessionmaker(engine)() as s:
        row = await s.get(OutboundRow, f"rv:{order_id}")
    return None if row is None else _row_json(row)


async def outbound_list(engine: AsyncEngine, *, status: str | None = None,
                        kind: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Call-backs and return visits, most recently changed first."""
    q = select(OutboundRow).order_by(OutboundRow.updated_at.desc()).limit(limit)
    if status:
        q = q.where(OutboundRow.status == status)
    if kind:
        q = q.where(OutboundRow.kind == kind)
    async with async_sessionmaker(engine)() as s:
        return [_row_json(r) for r in await s.scalars(q)]


def _dialable(number: str) -> str | None:
    """The number as Asterisk must dial it (full-width digits made ASCII), None if it
    is not one (other non-ASCII digits, letters, separators: ivr.values.dial_number)."""
    try:
        return dial_number(number)
    except BadValue:
        return None


def _variables(values: Mapping[str, Any]) -> list[str]:
    """``NAME=value`` items for an Originate's ``Variable``; a value with a comma, CR or
    LF (which would start another variable or header) is left out and logged."""
    out = []
    for k, v in values.items():
        try:
            out.append(f"{app_word(k)}={variable_value(str(v))}")
        except BadValue as exc:
            log.warning("originate_variable_refused", name=str(k)[:40], error=str(exc))
    return [item for item in out if not item.endswith("=")]


@dataclass
class Dialer:
    """Places call-backs and return visits through AMI; see the module doc."""

    engine: AsyncEngine
    send: Send  # AmiLink.action
    orders: Any  # callcenter.orders.store.WorkOrders
    centre: CallCenter
    settings: OutboundSettings
    clock: Callable[[], float]
    tz: Any = None
    tokens: AgiTokens = field(default_factory=AgiTokens)  # shared with the FastAGI scripts
    #: Several PBXs: a PBX's name -> its send.  A call-back is placed on the PBX of the
    #: ready operator it is for (its Queue() runs there); return visits on ``send``.
    send_to: Callable[[str], Send] | None = None
    callbacks: CallbackQueue = field(init=False)
    visits: ReturnVisitScheduler = field(init=False)
    _seen_visits: set[str] = field(default_factory=set)  # order ids ever scheduled
    _waiting_result: dict[str, float] = field(default_factory=dict)  # rv order -> deadline
    _inbox: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        s = self.settings
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.callbacks = CallbackQueue(retry_after_s=s.callback_retry_s,
                                       max_attempts=s.callback_max_attempts)
        kwargs: dict[str, Any] = {"schedule": s.visit_retry_s, "hours": s.visit_hours}
        if self.tz is not None:
            kwargs["timezone"] = str(self.tz)
        self.visits = ReturnVisitScheduler(**kwargs)

    # ---- lifecycle

    async def start(self) -> None:
        """Load what was waiting before a restart, then run the loop."""
        await self.load()
        self._task = asyncio.create_task(self._run(), name="dialer")

    async def load(self) -> None:
        """Take back the call-backs and return visits saved before a restart."""
        async with self.sessions() as s:
            rows = list(await s.scalars(select(OutboundRow)))
        for r in rows:
            if r.kind == "return_visit":
                self._seen_visits.add(r.key)
                if r.status == "waiting":
                    self.visits.restore(ReturnVisit(r.key, r.number, r.next_at, r.attempts))
            elif r.kind == "callback" and r.status == "waiting":
                self.callbacks.restore(CallbackEntry(
                    r.key, r.queue, r.number, r.requested_at, dict(r.variables or {}),
                    r.attempts, r.next_at))
        log.info("dialer_loaded", return_visits=len(self.visits),
                 callbacks=len(self.callbacks))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # ---- inputs (cheap; the loop does the work in order)

    def on_ami_event(self, headers: Mapping[str, str], at: float) -> None:
        if headers.get("Event") == "OriginateResponse":
            aid = headers.get("ActionID", "")
            if aid.startswith(("rv-", "cb-")):
                self._inbox.put_nowait(("originate", dict(headers)))

    def changed(self, changes: list[Change]) -> None:
        """A subscriber of the service: an operator became ready -> try the call-backs."""
        if len(self.callbacks) and any(
                isinstance(c, AgentChanged) and c.new is AgentState.READY for c in changes):
            self._wake.set()

    async def callback_requested(self, req: Any) -> None:
        """The IVR's ``on_callback`` (an :class:`ivr.fastagi.CallbackRequest`)."""
        await self._inbox.put(("callback", req))
        self._wake.set()

    async def survey_answered(self, call_id: str, score: int | None) -> None:
        """The IVR's ``on_survey``: the caller's own key, stored with the call."""
        if not call_id:
            log.warning("survey_without_call_id")
            return
        async with self.sessions() as s, s.begin():
            row = await s.get(SurveyRow, call_id[:64])
            if row is None:
                s.add(SurveyRow(call_uniqueid=call_id[:64], score=score, at=self.clock()))
            else:  # a second survey on the same call keeps the latest key
                row.score, row.at = score, self.clock()

    async def visit_answered(self, order_id: str, resolved: bool, sat_operator: int | None,
                             sat_department: int | None, call_id: str) -> None:
        """The IVR's ``on_answer``: the citizen's keys go on the order (the only source)."""
        from callcenter.orders.lifecycle import OrderError
        from callcenter.orders.store import OrderConflict, OrderNotFound

        keys = f"resolved={resolved} operator={sat_operator} department={sat_department}"
        try:
            await self.orders.record_citizen_keys(order_id, resolved, sat_operator,
                                                  sat_department, call_id)
            result = "resolved" if resolved else "not resolved"
        except (OrderError, OrderConflict, OrderNotFound) as exc:
            # Kept in the log and on the outbound row: the keys are not lost.
            log.warning("return_visit_keys_not_recorded", order=order_id, call_id=call_id,
                        keys=keys, error=str(exc))
            result = f"keys not recorded ({keys})"
        self._waiting_result.pop(order_id, None)
        if self.visits.get(order_id) is not None:
            self.visits.result(order_id, "answered", self.clock())
        await self._save_visit(order_id, status="done", result=result)

    async def asks_department(self, order_id: str) -> bool:
        """The IVR's ``asks_department``: only an order a department handled has one to rate."""
        from callcenter.orders.store import OrderNotFound

        try:
            return (await self.orders.get(order_id)).lead_department is not None
        except OrderNotFound:
            return True

    async def visit_no_answer(self, order_id: str, call_id: str) -> None:
        """The IVR's ``on_no_answer``: the phone was picked up but no key came."""
        await self._inbox.put(("visit_failed", (order_id, "no_keys")))

    # ---- the loop

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup must not stop call-backs for good
                log.exception("dialer_step_failed")
            try:
                await wait_within(self._wake.wait(), self.settings.poll_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def step(self) -> None:
        """One round: inputs, then new visits, due visits, free operators (tests call it)."""
        while not self._inbox.empty():
            kind, payload = self._inbox.get_nowait()
            if kind == "originate":
                await self._originate_response(payload)
            elif kind == "callback":
                await self._new_callback(payload)
            elif kind == "visit_failed":
                await self._visit_failed(*payload)
        now = self.clock()
        await self._schedule_completed(now)
        for order_id, deadline in list(self._waiting_result.items()):
            if deadline <= now:  # answered, but the script never reported: count as no answer
                await self._visit_failed(order_id, "no_result")
        for dial in self.visits.due(now):
            await self._dial_visit(dial.order_id, dial.number, dial.attempt)
        await self._try_callbacks(now)

    # ---- return visits

    async def _schedule_completed(self, now: float) -> None:
        from callcenter.orders.store import OrderRow  # the order tables' owner

        async with self.sessions() as s:
            rows = (await s.execute(select(OrderRow.id, OrderRow.caller, OrderRow.status)
                                    .where(OrderRow.status.in_(
                                        (*WAITING_FOR_VISIT, VISITING))))).all()
        open_ids = set()
        for oid, caller, status in rows:
            key = str(oid)
            open_ids.add(key)
            if key in self._seen_visits or status == VISITING:
                continue
            self._seen_visits.add(key)
            caller = _dialable(caller or "")
            if caller is None:
                await self._save_visit(key, number=caller or "", status="manual",
                                       result="no number to call", next_at=now)
                log.warning("return_visit_manual", order=key, why="no number to call")
                continue
            visit = self.visits.add(key, caller, now + self.settings.visit_delay_s)
            await self._save_visit(key, number=caller, status="waiting",
                                   next_at=visit.next_at, requested_at=now)
            log.info("return_visit_scheduled", order=key,
                     at=datetime.fromtimestamp(visit.next_at, self.tz).isoformat())
        for key in [k for k in self._seen_visits if k not in open_ids]:
            if self.visits.get(key) is not None:  # answered by hand or reopened
                self.visits.cancel(key)
                self._waiting_result.pop(key, None)
                await self._save_visit(key, status="cancelled",
                                       result="the order moved on without the IVR")
        # Only open orders are remembered: an order reopened and completed again later
        # gets a new return visit (its row is reused), and memory stays bounded.
        self._seen_visits &= open_ids

    async def _dial_visit(self, order_id: str, number: str, attempt: int) -> None:
        from callcenter.orders.lifecycle import OrderError, State, Step
        from callcenter.orders.reasons import SystemReason
        from callcenter.orders.store import SYSTEM, OrderConflict, OrderNotFound

        try:
            order = await self.orders.get(order_id)
            if order.state in (State.COMPLETED, State.RESOLVED_ON_CALL):
                await self.orders.step(order_id, Step.START_RETURN_VISIT, SYSTEM,
                                       reason=SystemReason("visit_auto"))
        except (OrderError, OrderConflict, OrderNotFound) as exc:
            log.info("return_visit_dropped", order=order_id, error=str(exc))
            self.visits.cancel(order_id)
            await self._save_visit(order_id, status="cancelled", result=str(exc)[:80])
            return
        s = self.settings
        action = {
            "Action": "Originate", "ActionID": f"rv-{order_id}-{attempt}",
            "Channel": f"Local/{number}@{s.outbound_context}",
            "Application": "AGI", "Data": f"{s.agi_url}/returnvisit,{order_id}",
            "CallerID": f'"{s.caller_id}" <{s.caller_id}>',
            "Timeout": str(s.originate_timeout_s * 1000), "Async": "true",
            "Variable": _variables({"ORDER_ID": order_id,
                                    "AGI_TOKEN": self.tokens.issue("returnvisit", order_id)}),
        }
        if not await self._originate(action, order_id):
            self.visits.release(order_id)
            return
        self._waiting_result[order_id] = self.clock() + s.visit_result_timeout_s
        await self._save_visit(order_id, status="waiting", attempts=attempt,
                               result=f"dialling, attempt {attempt}")
        log.info("return_visit_dialled", order=order_id, attempt=attempt)

    async def _visit_failed(self, order_id: str, outcome: str, detail: str = "") -> None:
        """A return-visit call that reached nobody: ``outcome`` a code of
        :data:`callcenter.orders.reasons.OUTCOMES`, ``detail`` the PBX's own words."""
        from callcenter.orders.lifecycle import OrderError, Step
        from callcenter.orders.reasons import OUTCOMES, SystemReason
        from callcenter.orders.store import SYSTEM, OrderConflict, OrderNotFound

        self._waiting_result.pop(order_id, None)
        if self.visits.get(order_id) is None:
            return
        attempt = self.visits.get(order_id).attempts  # type: ignore[union-attr]
        outcome = outcome if outcome in OUTCOMES else "other"
        why = OUTCOMES[outcome][1] + (f": {detail}" if detail else "")
        handed = self.visits.result(order_id, "no_answer", self.clock())
        try:
            await self.orders.step(order_id, Step.VISIT_UNREACHABLE, SYSTEM,
                                   reason=SystemReason("visit_unreachable", {
                                       "attempt": attempt, "outcome": outcome}, detail))
        except (OrderError, OrderConflict, OrderNotFound) as exc:
            log.info("visit_unreachable_not_recorded", order=order_id, error=str(exc))
        if any(isinstance(h, HandToOperator) for h in handed):
            await self._save_visit(order_id, status="manual", attempts=attempt,
                                   result=f"{why}; handed to an operator")
            log.warning("return_visit_manual", order=order_id, attempts=attempt, why=why)
            return
        v = self.visits.get(order_id)
        await self._save_visit(order_id, status="waiting", attempts=attempt, result=why,
                               next_at=v.next_at if v else self.clock())
        log.info("return_visit_retry", order=order_id, attempt=attempt, why=why)

    # ---- call-backs

    async def _new_callback(self, req: Any) -> None:
        now = self.clock()
        variables = {"HOTLINE": req.hotline, "CATEGORY": req.category,
                     "IVR_PATH": req.ivr_path, "LANG": req.lang}
        status, result = "waiting", ""
        number = _dialable(req.callerid)
        try:
            uniqueid(req.uniqueid)
            app_word(req.queue)
            # (PBX, Uniqueid): each PBX numbers its own (ivr.fastagi.AgiPbxs.call_key)
            key = str(getattr(req, "key", req.uniqueid))[:64]
        except BadValue as exc:
            log.warning("callback_refused", error=str(exc))
            return
        if number is None:
            status, result = "gave_up", "no number to call back"
            log.warning("callback_impossible", request=key, why=result)
        else:
            self.callbacks.request(key, req.queue, number, now, variables)
        await self._save(OutboundRow(
            id=f"cb:{key}"[:80], kind="callback", key=key[:64],
            queue=req.queue, number=(number or req.callerid)[:40], variables=variables, requested_at=now,
            attempts=0, next_at=now, status=status, result=result, updated_at=now))
        log.info("callback_requested", request=key, queue=req.queue,
                 position=self.callbacks.position(key))

    async def _try_callbacks(self, now: float) -> None:
        if not len(self.callbacks):
            return
        for queue in self.callbacks.queues():
            ready = [a for a in self.centre.agents.values()
                     if a.state is AgentState.READY and queue in a.memberships
                     and not a.paused]
            busy = sum(1 for e in self.callbacks.waiting(queue) if e.in_flight)
            waiting = self.centre.waiting_in(queue)
            oldest = min((c.joined_at for c in waiting), default=None)
            for agent in ready[busy:]:
                orders = self.callbacks.agent_free(queue, agent.name, now, oldest)
                if not orders:
                    break
                cb = orders[0]
                s = self.settings
                variables = {"QUEUE": queue, **cb.variables, "CALLBACK_ID": cb.id}
                action = {
                    "Action": "Originate", "ActionID": f"cb-{cb.id}-{cb.attempt}",
                    "Channel": f"Local/{cb.number}@{s.callback_context}",
                    "Context": s.queue_context, "Exten": queue, "Priority": "1",
                    "CallerID": f'"{s.caller_id}" <{s.caller_id}>',
                    "Timeout": str(s.originate_timeout_s * 1000), "Async": "true",
                    "Variable": _variables(variables),
                }
                if not await self._originate(action, cb.id, agent.pbx):
                    self.callbacks.release(cb.id)
                    return
                await self._save_callback(cb.id, attempts=cb.attempt,
                                          result=f"dialling for {agent.name}")
                log.info("callback_dialled", request=cb.id, attempt=cb.attempt,
                         agent=agent.name)

    # ---- AMI

    async def _originate(self, action: dict[str, Any], what: str, pbx: str = "") -> bool:
        """Send an Originate (to PBX ``pbx`` with several); False when it could not be
        placed (retried later)."""
        from callcenter.pbx.ami import AmiError

        try:  # channel and name fields as every value sent to the PBX (ivr/values.py)
            action = ami_action(action)
        except BadValue as exc:  # counted as a failed attempt: retried, then given up
            log.warning("originate_refused_value", what=what, error=str(exc))
            self._inbox.put_nowait(("originate", {
                "ActionID": action["ActionID"], "Response": "Failure", "Reason": "0",
                "Message": f"not sent: {exc}"[:80]}))
            return True
        send = self.send_to(pbx) if pbx and self.send_to is not None else self.send
        try:
            reply = await send(action)
        except AmiError as exc:
            log.warning("originate_not_sent", what=what, error=str(exc))
            return False
        if isinstance(reply, Mapping) and str(reply.get("Response", "")).lower() == "error":
            log.warning("originate_refused", what=what, message=reply.get("Message", ""))
            self._inbox.put_nowait(("originate", {
                "ActionID": action["ActionID"], "Response": "Failure", "Reason": "0",
                "Message": str(reply.get("Message", ""))}))
            return True
        return True

    async def _originate_response(self, h: Mapping[str, str]) -> None:
        aid = h.get("ActionID", "")
        kind, _, rest = aid.partition("-")
        key, _, _attempt = rest.rpartition("-")
        ok = h.get("Response", "").lower() == "success"
        why = REASONS.get(h.get("Reason", ""), f"reason {h.get('Reason', '?')}")
        if h.get("Message"):
            why = f"{why}: {h['Message']}"[:80]
        if kind == "rv":
            if not ok:
                outcome = OUTCOME_CODES.get(h.get("Reason", ""), "other")
                detail = h.get("Message", "") or (
                    "" if outcome != "other" else f"reason {h.get('Reason', '?')}")
                await self._visit_failed(key, outcome, detail[:80])
        elif kind == "cb":
            if ok:
                self.callbacks.answered(key)
                await self._save_callback(key, status="done", result="citizen called back")
                log.info("callback_answered", request=key)
                return
            gave_up = self.callbacks.failed(key, self.clock())
            e = self.callbacks.get(key)
            if any(isinstance(g, CallbackGaveUp) for g in gave_up):
                await self._save_callback(key, status="gave_up", result=f"{why}; gave up")
                log.warning("callback_gave_up", request=key, why=why)
            else:
                await self._save_callback(key, result=why,
                                          next_at=e.not_before if e else self.clock())

    # ---- persistence

    async def _save(self, row: OutboundRow) -> None:
        async with self.sessions() as s, s.begin():
            await s.merge(row)

    async def _update(self, id: str, **values: Any) -> OutboundRow | None:
        async with self.sessions() as s, s.begin():
            row = await s.get(OutboundRow, id)
            if row is not None:
                for k, v in values.items():
                    setattr(row, k, v)
                row.updated_at = self.clock()
            return row

    async def _save_visit(self, order_id: str, **values: Any) -> None:
        id = f"rv:{order_id}"
        if values.get("result"):
            values["result"] = str(values["result"])[:80]
        if await self._update(id, **{k: v for k, v in values.items()
                                     if k != "requested_at"}) is None:
            now = self.clock()
            await self._save(OutboundRow(
                id=id, kind="return_visit", key=order_id, queue="",
                number=values.get("number", ""), variables={},
                requested_at=values.get("requested_at", now),
                attempts=values.get("attempts", 0), next_at=values.get("next_at", now),
                status=values.get("status", "waiting"), result=values.get("result", ""),
                updated_at=now))

    async def _save_callback(self, key: str, **values: Any) -> None:
        if values.get("result"):
            values["result"] = str(values["result"])[:80]
        await self._update(f"cb:{key}"[:80], **values)
