"""Work orders (工单): the lifecycle of a citizen's request, as a pure core.

Theory of operation
-------------------
An :class:`Order` is an immutable value.  :func:`open_order` creates it (受理,
acceptance) and :func:`apply` moves it one :class:`Step` at a time, returning the
new order and one immutable :class:`AuditRecord`.  Nothing here reads the clock,
a file or a database: every call carries its own ``at``; the edges persist the
orders and append the audit records (which are never deleted or rewritten).

The lifecycle is the literal table :data:`TRANSITIONS` ``(state, step) -> state``::

    accepted 受理 ──dispatch 派单──▶ dispatched ──accept_handling 签收──▶ in_progress 办理
       │                              │    ▲                               │
       │ resolve_on_call 直接答复      │    └── redispatch 改派 / accept_return
       ▼                              ▼                                    ▼
    resolved_on_call            returned 退单 ──refuse_return──▶ in_progress ──reply 答复──▶ replied
       │                                                                   │
       │                   in_progress ◀──reject_completion── completed 办结 ◀─complete─┘
       └──start_return_visit──▶ return_visit 回访 ◀──start_return_visit──┘
                                   │ evaluate 评价 (resolved)  ──▶ evaluated (final)
                                   │ reopen (not resolved)     ──▶ dispatched, same lead department
                                   └ reopen_at_centre          ──▶ accepted (no department had it)

Supervision 督办 (``supervise``), co-handling 加派 (``add_co_handler``), co-handler
opinions (``co_reply``) and timer flags (``flag_overdue``) are self-loops: they
record something without blocking the flow.

A step is checked in a fixed order, and a failed check raises and leaves the order
untouched (it is immutable anyway):

1. ``at`` is timezone-aware and not before the order's last step;
2. ``(state, step)`` is in :data:`TRANSITIONS`, else :class:`IllegalStep`;
3. the actor's role is in :data:`ALLOWED_ROLES`, and a department handler acts
   only on orders whose lead (or, for ``co_reply``, co-handling) is their own
   department, else :class:`NotAllowed`;
4. the step's data: unexpected keys are refused; resolution or satisfaction
   offered on any other step than a citizen's answer is :class:`NotAllowed`;
5. the reason, when :data:`REASON_REQUIRED`, must be non-empty after stripping.

Every refused call carries an :class:`Attempt` (``err.attempt``) that the edge can
store, so that refused attempts to enter satisfaction on the citizen's behalf (被满意)
stay visible to supervision.

Rules encoded here, and why (see the news reports in ``shared/seeds``):

* First-contact responsibility 首接负责制: ``owner_unit`` is the accepting unit and
  no step changes it; dispatching only sets the handling departments.
* One lead department 主办 and any number of co-handlers 协办.  Re-dispatch 改派,
  adding a co-handler 加派, returning 退单 and both arbitration outcomes need a
  written reason; returns and re-dispatches are counted (推诿 ping-pong shows up in
  ``return_count`` / ``redispatch_count`` and the dispatch history).
* Completion is the citizen's word: a department's ``complete`` only makes the
  order wait for a return visit.  Resolution and satisfaction come only from the
  citizen, either by their own key presses in the IVR return-visit call
  (``citizen_keys``, actor role ``citizen``) or as an answer an operator heard on
  a recorded call (``operator_call``, with the call id).  Satisfaction is on a
  three-point scale, 3 满意 satisfied, 2 基本满意 basically satisfied, 1 不满意
  dissatisfied, for the operator's service and the department's handling
  separately (the latter only when a department handled the order).
* Deadlines (:func:`deadlines_for`) are stored on the order; :func:`due_timers`
  turns passed deadlines into :class:`TimerFired` events that the edge feeds back
  through :func:`apply_timer`, so tests advance ``now`` instead of sleeping.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from callcenter.orders.calendar import WorkCalendar
from callcenter.orders.reasons import SystemReason, render

__all__ = [
    "ALLOWED_ROLES",
    "ANSWER_KEYS",
    "CO_HANDLER_STEPS",
    "IDENTITY_FIELDS",
    "LEAD_STEPS",
    "REASON_REQUIRED",
    "SATISFACTION_SCALE",
    "STEP_DATA",
    "TIMED_STATES",
    "TRANSITIONS",
    "VISIBILITY",
    "Actor",
    "AnswerSource",
    "Attempt",
    "AuditRecord",
    "Caller",
    "DeadlinePolicy",
    "Deadlines",
    "Department",
    "Directory",
    "Dispatch",
    "Evaluation",
    "IllegalStep",
    "NotAllowed",
    "Order",
    "OrderError",
    "Reply",
    "ReturnRequest",
    "Role",
    "Satisfaction",
    "State",
    "Step",
    "Suggestion",
    "Supervision",
    "TimerFired",
    "TimerKind",
    "Urgency",
    "UrgencyRule",
    "Visibility",
    "WorkOrderFigures",
    "answer_step",
    "apply",
    "apply_timer",
    "deadlines_for",
    "due_timers",
    "mask_address",
    "mask_name",
    "mask_number",
    "open_order",
    "order_number",
    "order_view",
    "record_answer",
    "redact",
    "suggest_departments",
    "work_order_figures",
]


class State(StrEnum):
    """Where an order is in its lifecycle."""

    ACCEPTED = "accepted"  # 受理: recorded by the centre, not yet with a department
    DISPATCHED = "dispatched"  # 派单: sent to a lead department, not yet signed for
    IN_PROGRESS = "in_progress"  # 办理: the lead department is handling it
    REPLIED = "replied"  # 答复: the department has written its reply
    COMPLETED = "completed"  # 办结 by the department; awaiting the return visit
    RETURN_VISIT = "return_visit"  # 回访: the citizen is being asked
    EVALUATED = "evaluated"  # 评价: the citizen confirmed it is solved (final)
    RESOLVED_ON_CALL = "resolved_on_call"  # 直接答复: answered by the operator on the call
    RETURNED = "returned"  # 退单: refused by the department, awaiting the centre's decision


class Step(StrEnum):
    """Something someone does to an order."""

    ACCEPT = "accept"  # 受理 (only by open_order)
    RESOLVE_ON_CALL = "resolve_on_call"  # 直接答复
    DISPATCH = "dispatch"  # 派单
    REDISPATCH = "redispatch"  # 改派: change the lead department
    ADD_CO_HANDLER = "add_co_handler"  # 加派: add a co-handling department
    ACCEPT_HANDLING = "accept_handling"  # 签收
    RETURN = "return"  # 退单 with a written reason
    ACCEPT_RETURN = "accept_return"  # centre agrees and dispatches elsewhere
    REFUSE_RETURN = "refuse_return"  # centre disagrees: the department keeps it
    CO_REPLY = "co_reply"  # 协办意见 from a co-handler
    REPLY = "reply"  # 答复 by the lead department
    COMPLETE = "complete"  # 办结 by the lead department
    REJECT_COMPLETION = "reject_completion"  # centre sends a completion back (依据不充分)
    START_RETURN_VISIT = "start_return_visit"  # 回访
    VISIT_UNREACHABLE = "visit_unreachable"  # a return-visit call that reached no one
    EVALUATE = "evaluate"  # 评价: the citizen says it is solved
    REOPEN = "reopen"  # the citizen says it is not solved: back to the lead department
    REOPEN_AT_CENTRE = "reopen_at_centre"  # not solved, and no department had it
    SUPERVISE = "supervise"  # 督办 with a deadline
    FLAG_OVERDUE = "flag_overdue"  # a deadline timer fired


class Role(StrEnum):
    """Who is acting."""

    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    DEPARTMENT = "department"
    CITIZEN = "citizen"
    SYSTEM = "system"


class AnswerSource(StrEnum):
    """The only two channels through which a citizen's answer is accepted."""

    CITIZEN_KEYS = "citizen_keys"  # the citizen's own key presses in the IVR return visit
    OPERATOR_CALL = "operator_call"  # an operator recording the answer during a recorded call


class Urgency(StrEnum):
    """Urgency, which sets the time limits (see :class:`DeadlinePolicy`)."""

    EMERGENCY = "emergency"  # 紧急
    URGENT = "urgent"  # 加急
    NORMAL = "normal"  # 一般


class TimerKind(StrEnum):
    """Deadlines that turn into :class:`TimerFired` events."""

    FIRST_RESPONSE = "first_response_overdue"
    HANDLING = "handling_overdue"
    SUPERVISION = "supervision_overdue"


S, T = State, Step

TRANSITIONS: dict[tuple[State, Step], State] = {
    (S.ACCEPTED, T.RESOLVE_ON_CALL): S.RESOLVED_ON_CALL,
    (S.ACCEPTED, T.DISPATCH): S.DISPATCHED,
    (S.ACCEPTED, T.SUPERVISE): S.ACCEPTED,
    (S.ACCEPTED, T.FLAG_OVERDUE): S.ACCEPTED,
    (S.DISPATCHED, T.ACCEPT_HANDLING): S.IN_PROGRESS,
    (S.DISPATCHED, T.RETURN): S.RETURNED,
    (S.DISPATCHED, T.REDISPATCH): S.DISPATCHED,
    (S.DISPATCHED, T.ADD_CO_HANDLER): S.DISPATCHED,
    (S.DISPATCHED, T.CO_REPLY): S.DISPATCHED,
    (S.DISPATCHED, T.SUPERVISE): S.DISPATCHED,
    (S.DISPATCHED, T.FLAG_OVERDUE): S.DISPATCHED,
    (S.IN_PROGRESS, T.RETURN): S.RETURNED,
    (S.IN_PROGRESS, T.REDISPATCH): S.DISPATCHED,
    (S.IN_PROGRESS, T.ADD_CO_HANDLER): S.IN_PROGRESS,
    (S.IN_PROGRESS, T.CO_REPLY): S.IN_PROGRESS,
    (S.IN_PROGRESS, T.REPLY): S.REPLIED,
    (S.IN_PROGRESS, T.SUPERVISE): S.IN_PROGRESS,
    (S.IN_PROGRESS, T.FLAG_OVERDUE): S.IN_PROGRESS,
    (S.RETURNED, T.ACCEPT_RETURN): S.DISPATCHED,
    (S.RETURNED, T.REFUSE_RETURN): S.IN_PROGRESS,
    (S.RETURNED, T.SUPERVISE): S.RETURNED,
    (S.RETURNED, T.FLAG_OVERDUE): S.RETURNED,
    (S.REPLIED, T.COMPLETE): S.COMPLETED,
    (S.REPLIED, T.SUPERVISE): S.REPLIED,
    (S.REPLIED, T.FLAG_OVERDUE): S.REPLIED,
    (S.COMPLETED, T.REJECT_COMPLETION): S.IN_PROGRESS,
    (S.COMPLETED, T.START_RETURN_VISIT): S.RETURN_VISIT,
    (S.RESOLVED_ON_CALL, T.START_RETURN_VISIT): S.RETURN_VISIT,
    (S.RETURN_VISIT, T.VISIT_UNREACHABLE): S.RETURN_VISIT,
    (S.RETURN_VISIT, T.EVALUATE): S.EVALUATED,
    (S.RETURN_VISIT, T.REOPEN): S.DISPATCHED,
    (S.RETURN_VISIT, T.REOPEN_AT_CENTRE): S.ACCEPTED,
}

R = Role
_CENTRE = frozenset({R.OPERATOR, R.SUPERVISOR, R.ADMIN})
_ANSWERING = frozenset({R.CITIZEN, R.OPERATOR, R.SUPERVISOR})
_REVIEWERS = frozenset({R.SUPERVISOR, R.ADMIN})  # the centre's supervisors review returns

ALLOWED_ROLES: dict[Step, frozenset[Role]] = {
    T.ACCEPT: _CENTRE,
    T.RESOLVE_ON_CALL: _CENTRE,
    T.DISPATCH: _CENTRE,
    T.REDISPATCH: _CENTRE,
    T.ADD_CO_HANDLER: _CENTRE,
    T.ACCEPT_HANDLING: frozenset({R.DEPARTMENT}),
    T.RETURN: frozenset({R.DEPARTMENT}),
    T.ACCEPT_RETURN: _REVIEWERS,
    T.REFUSE_RETURN: _REVIEWERS,
    T.CO_REPLY: frozenset({R.DEPARTMENT}),
    T.REPLY: frozenset({R.DEPARTMENT}),
    T.COMPLETE: frozenset({R.DEPARTMENT}),
    T.REJECT_COMPLETION: _CENTRE,
    T.START_RETURN_VISIT: _CENTRE | {R.SYSTEM},
    T.VISIT_UNREACHABLE: _CENTRE | {R.SYSTEM},
    T.EVALUATE: _ANSWERING,
    T.REOPEN: _ANSWERING,
    T.REOPEN_AT_CENTRE: _ANSWERING,
    T.SUPERVISE: frozenset({R.SUPERVISOR, R.ADMIN}),
    T.FLAG_OVERDUE: frozenset({R.SYSTEM}),
}

LEAD_STEPS = frozenset({T.ACCEPT_HANDLING, T.RETURN, T.REPLY, T.COMPLETE})
"""Department steps only the lead department may take."""

CO_HANDLER_STEPS = frozenset({T.CO_REPLY})
"""Department steps only a co-handling department may take."""

REASON_REQUIRED = frozenset(
    {
        T.REDISPATCH,
        T.ADD_CO_HANDLER,
        T.RETURN,
        T.ACCEPT_RETURN,
        T.REFUSE_RETURN,
        T.REJECT_COMPLETION,
        T.SUPERVISE,
    }
)

ANSWER_KEYS = frozenset(
    {"source", "resolved", "satisfaction_operator", "satisfaction_department", "call_id"}
)
"""Data that only a citizen's answer (evaluate / reopen) may carry."""

STEP_DATA: dict[Step, frozenset[str]] = {
    T.RESOLVE_ON_CALL: frozenset({"answer"}),
    T.DISPATCH: frozenset({"department", "co_handlers"}),
    T.REDISPATCH: frozenset({"department"}),
    T.ADD_CO_HANDLER: frozenset({"department"}),
    T.ACCEPT_HANDLING: frozenset(),
    T.RETURN: frozenset(),
    T.ACCEPT_RETURN: frozenset({"department"}),
    T.REFUSE_RETURN: frozenset(),
    T.CO_REPLY: frozenset({"text"}),
    T.REPLY: frozenset({"text"}),
    T.COMPLETE: frozenset(),
    T.REJECT_COMPLETION: frozenset(),
    T.START_RETURN_VISIT: frozenset(),
    T.VISIT_UNREACHABLE: frozenset(),
    T.EVALUATE: ANSWER_KEYS,
    T.REOPEN: ANSWER_KEYS | {"handling_due"},
    T.REOPEN_AT_CENTRE: ANSWER_KEYS,
    T.SUPERVISE: frozenset({"deadline"}),
    T.FLAG_OVERDUE: frozenset({"timer", "deadline"}),
}
"""The data keys each step accepts (as keyword arguments of :func:`apply`)."""

SATISFACTION_SCALE = range(1, 4)
"""3 满意 satisfied, 2 基本满意 basically satisfied, 1 不满意 dissatisfied."""

TIMED_STATES = frozenset({S.ACCEPTED, S.DISPATCHED, S.IN_PROGRESS, S.RETURNED, S.REPLIED})
"""States in which deadlines still run (the department has not completed)."""


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Actor:
    """A person or the system; ``unit`` is the department id or the centre's unit."""

    id: str
    role: Role
    unit: str = ""


@dataclass(frozen=True)
class Caller:
    """The citizen's identity as given on the call (hidden by :func:`redact`)."""

    name: str = ""
    number: str = ""
    address: str = ""


@dataclass(frozen=True, slots=True)
class Intake:
    """受理 details the operator records beside the text (codes of config/intake.toml).

    ``request_type`` 诉求类型 (consult, help, complaint, report, suggestion, praise,
    other); ``gender`` ("", female, male); ``callback_number`` when it differs from
    the calling number (identity: hidden like the number by :func:`redact`);
    ``district``/``street`` of 事发地址; ``reply_method`` 回复方式 (phone, sms, none);
    ``article_id`` the knowledge-base article the answer on the call came from.
    """

    request_type: str = ""
    gender: str = ""
    callback_number: str = ""
    district: str = ""
    street: str = ""
    reply_method: str = ""
    article_id: str = ""


class Dispatch(NamedTuple):
    """One entry of the dispatch history: which department got the order, when."""

    department: str
    at: datetime
    lead: bool = True


@dataclass(frozen=True)
class Reply:
    """A department's written reply (``lead`` False for a co-handler's opinion)."""

    department: str
    text: str
    at: datetime
    lead: bool


@dataclass(frozen=True)
class ReturnRequest:
    """A pending 退单: which department refused the order and why."""

    department: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class Supervision:
    """督办: a supervisor's demand with its own deadline."""

    deadline: datetime
    reason: str
    by: str
    at: datetime


@dataclass(frozen=True)
class Evaluation:
    """A citizen's answer in a return visit (the only source of resolution/satisfaction)."""

    source: AnswerSource
    resolved: bool
    satisfaction_operator: int | None
    satisfaction_department: int | None
    call_id: str | None
    actor_id: str
    at: datetime


@dataclass(frozen=True)
class Deadlines:
    """When the first response and the handling are due (and a 督办 deadline, if any)."""

    first_response: datetime
    handling: datetime
    supervision: datetime | None = None


@dataclass(frozen=True)
class Order:
    """A work order.  Immutable: :func:`apply` returns a new one."""

    id: str
    number: str
    owner_unit: str
    state: State
    urgency: Urgency
    category: str
    text: str
    caller: Caller
    accepted_at: datetime
    updated_at: datetime
    first_response_due: datetime
    handling_due: datetime
    location: str = ""
    confidential: bool = False
    lead_department: str | None = None
    co_handlers: tuple[str, ...] = ()
    dispatch_history: tuple[Dispatch, ...] = ()
    pending_return: ReturnRequest | None = None
    replies: tuple[Reply, ...] = ()
    on_call_answer: str | None = None
    first_response_at: datetime | None = None
    completed_at: datetime | None = None
    supervision: Supervision | None = None
    evaluations: tuple[Evaluation, ...] = ()
    overdue: tuple[tuple[TimerKind, datetime], ...] = ()
    return_count: int = 0
    redispatch_count: int = 0
    reopen_count: int = 0
    rejected_completion_count: int = 0
    version: int = 1
    intake: Intake = Intake()

    @property
    def resolved(self) -> bool | None:
        """The citizen's latest answer: solved or not (None before any answer)."""
        return self.evaluations[-1].resolved if self.evaluations else None

    @property
    def handling_units(self) -> tuple[str, ...]:
        """The lead department (if any) followed by the co-handlers."""
        lead = (self.lead_department,) if self.lead_department else ()
        return lead + self.co_handlers


@dataclass(frozen=True)
class AuditRecord:
    """One step, as it happened; ``seq`` numbers an order's records from 1."""

    order_id: str
    seq: int
    step: Step
    actor_id: str
    role: Role
    unit: str
    at: datetime
    from_state: State | None
    to_state: State
    reason: str | None
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Attempt:
    """A refused step, kept so that supervision can see it (e.g. staff entering 满意)."""

    order_id: str
    step: str
    actor_id: str
    role: Role
    unit: str
    at: datetime
    state: State
    reason: str | None
    data: Mapping[str, Any]
    error: str
    message: str


class OrderError(Exception):
    """A refused step.  :func:`apply` attaches the :class:`Attempt` as ``attempt``."""

    attempt: Attempt | None = None


class IllegalStep(OrderError):
    """The step does not fit the order: wrong state, missing reason, bad data."""


class NotAllowed(OrderError):
    """The actor may not take this step (role, department, or answer source)."""


# --------------------------------------------------------------------------- steps


def open_order(
    *,
    order_id: str,
    number: str,
    actor: Actor,
    at: datetime,
    caller: Caller,
    category: str,
    text: str,
    deadlines: Deadlines,
    urgency: Urgency = Urgency.NORMAL,
    location: str = "",
    confidential: bool = False,
    intake: Intake = Intake(),
) -> tuple[Order, AuditRecord]:
    """受理: record a new order; the actor's unit becomes its ``owner_unit`` for good."""
    _check_time(at)
    if actor.role not in ALLOWED_ROLES[T.ACCEPT]:
        raise NotAllowed(f"{_a(actor.role)} may not '{T.ACCEPT}' an order")
    if not actor.unit.strip():
        raise IllegalStep("the accepting actor has no unit to own the order")
    body = _require_text(text, "text", T.ACCEPT)
    if not deadlines.first_response > at or not deadlines.handling > at:
        raise IllegalStep("deadlines must be after the acceptance time")
    order = Order(
        id=order_id,
        number=number,
        owner_unit=actor.unit,
        state=S.ACCEPTED,
        urgency=Urgency(urgency),
        category=category.strip(),
        text=body,
        caller=caller,
        accepted_at=at,
        updated_at=at,
        first_response_due=deadlines.first_response,
        handling_due=deadlines.handling,
        location=location.strip(),
        confidential=confidential,
        intake=intake,
    )
    data = {
        "caller_name": caller.name,
        "caller_number": caller.number,
        "caller_address": caller.address,
        "category": order.category,
        "text": body,
        "location": order.location,
        "urgency": order.urgency,
        "confidential": confidential,
        "first_response_due": deadlines.first_response,
        "handling_due": deadlines.handling,
    }
    if intake != Intake():
        data["intake"] = {k: v for k in Intake.__slots__ if (v := getattr(intake, k))}
    record = AuditRecord(
        order_id=order_id,
        seq=1,
        step=T.ACCEPT,
        actor_id=actor.id,
        role=actor.role,
        unit=actor.unit,
        at=at,
        from_state=None,
        to_state=S.ACCEPTED,
        reason=None,
        data=MappingProxyType(data),
    )
    return order, record


def apply(
    order: Order,
    step: Step | str,
    actor: Actor,
    at: datetime,
    reason: str | SystemReason | None = None,
    **data: Any,
) -> tuple[Order, AuditRecord]:
    """Take one step; return the new order and its audit record, or raise.

    ``reason`` is a person's text, or a :class:`~callcenter.orders.reasons.SystemReason`
    the code writes: that one is recorded as ``data["reason_code"]`` with its Chinese
    rendering as the reason text.
    Raises :class:`IllegalStep` or :class:`NotAllowed` (with ``.attempt`` set);
    the given order is never changed.
    """
    code = reason if isinstance(reason, SystemReason) else None
    if code is not None:
        reason = render(code, "zh")
    try:
        step = _known_step(step, order)
        _check_time(at, order.updated_at)
        target = TRANSITIONS.get((order.state, step))
        if target is None:
            raise IllegalStep(f"cannot '{step}' an order in state '{order.state}'")
        _authorize(order, step, actor)
        _check_data_keys(step, data)
        note = _check_reason(step, reason)
        changes, recorded = _EFFECTS[step](order, actor, at, note, data)
        if code is not None:
            recorded = {**recorded, "reason_code": code.as_dict()}
    except OrderError as err:
        err.attempt = Attempt(
            order_id=order.id,
            step=str(step),
            actor_id=actor.id,
            role=actor.role,
            unit=actor.unit,
            at=at,
            state=order.state,
            reason=reason,
            data=MappingProxyType(dict(data)),
            error=type(err).__name__,
            message=str(err),
        )
        raise
    new = replace(order, state=target, updated_at=at, version=order.version + 1, **changes)
    record = AuditRecord(
        order_id=order.id,
        seq=new.version,
        step=step,
        actor_id=actor.id,
        role=actor.role,
        unit=actor.unit,
        at=at,
        from_state=order.state,
        to_state=target,
        reason=note,
        data=MappingProxyType(recorded),
    )
    return new, record


def answer_step(order: Order, resolved: bool) -> Step:
    """The step that records a citizen's answer on this order."""
    if resolved:
        return T.EVALUATE
    return T.REOPEN if order.lead_department else T.REOPEN_AT_CENTRE


def record_answer(
    order: Order,
    actor: Actor,
    at: datetime,
    *,
    source: AnswerSource | str,
    resolved: bool,
    satisfaction_operator: int | None = None,
    satisfaction_department: int | None = None,
    call_id: str | None = None,
) -> tuple[Order, AuditRecord]:
    """Record a return-visit answer: evaluate when solved, otherwise reopen."""
    return apply(
        order,
        answer_step(order, resolved),
        actor,
        at,
        source=source,
        resolved=resolved,
        satisfaction_operator=satisfaction_operator,
        satisfaction_department=satisfaction_department,
        call_id=call_id,
    )


def _known_step(step: Step | str, order: Order) -> Step:
    try:
        return Step(step)
    except ValueError:
        raise IllegalStep(f"unknown step {step!r} for an order in state '{order.state}'") from None


def _a(role: Role) -> str:
    """The role with its article: "an operator", "a department"."""
    return f"{'an' if role[0] in 'aeiou' else 'a'} {role}"


def _check_time(at: datetime, last: datetime | None = None) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise IllegalStep("'at' must be timezone-aware")
    if last is not None and at < last:
        raise IllegalStep(f"'at' {at.isoformat()} is before the order's last step")


def _authorize(order: Order, step: Step, actor: Actor) -> None:
    allowed = ALLOWED_ROLES[step]
    if actor.role not in allowed:
        names = ", ".join(sorted(allowed))
        raise NotAllowed(f"{_a(actor.role)} may not '{step}' (allowed: {names})")
    if actor.role is not R.DEPARTMENT:
        return
    if step in LEAD_STEPS and actor.unit != order.lead_department:
        raise NotAllowed(
            f"only the lead department ({order.lead_department}) may '{step}', not {actor.unit!r}"
        )
    if step in CO_HANDLER_STEPS and actor.unit not in order.co_handlers:
        raise NotAllowed(f"{actor.unit!r} is not a co-handler of this order")


def _check_data_keys(step: Step, data: Mapping[str, Any]) -> None:
    unexpected = set(data) - STEP_DATA[step]
    if unexpected & ANSWER_KEYS:
        raise NotAllowed(
            f"'{step}' cannot record resolution or satisfaction: only a citizen's answer"
            " in a return visit can"
        )
    if unexpected:
        raise IllegalStep(f"unexpected data for '{step}': {', '.join(sorted(unexpected))}")


def _check_reason(step: Step, reason: str | None) -> str | None:
    text = reason.strip() if isinstance(reason, str) else None
    if step in REASON_REQUIRED and not text:
        raise IllegalStep(f"'{step}' needs a written reason")
    return text or None


def _require_text(value: Any, what: str, step: Step) -> str:
    if not isinstance(value, str) or not value.strip():
        raise IllegalStep(f"'{step}' needs a non-empty {what}")
    return value.strip()


def _require_time(value: Any, what: str, step: Step, after: datetime) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise IllegalStep(f"'{step}' needs a timezone-aware {what}")
    if value <= after:
        raise IllegalStep(f"'{step}': the {what} must be later than {after.isoformat()}")
    return value


# Each effect returns (changes to the order, data for the audit record).
Effect = Callable[[Order, Actor, datetime, str | None, Mapping[str, Any]], tuple[dict, dict]]


def _resolve_on_call(
    order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
) -> tuple[dict, dict]:
    answer = _require_text(data.get("answer"), "answer", T.RESOLVE_ON_CALL)
    changes = {"on_call_answer": answer, "first_response_at": order.first_response_at or at}
    return changes, {"answer": answer}


def _dispatch(
    order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
) -> tuple[dict, dict]:
    lead = _require_text(data.get("department"), "department", T.DISPATCH)
    named = data.get("co_handlers", ())
    if isinstance(named, str):
        raise IllegalStep("'dispatch': co_handlers must be a list of departments")
    co: list[str] = []
    for value in named:
        name = _require_text(value, "co-handler", T.DISPATCH)
        if name == lead or name in co:
            raise IllegalStep(f"'dispatch': {name!r} is named twice")
        co.append(name)
    history = (Dispatch(lead, at),) + tuple(Dispatch(name, at, lead=False) for name in co)
    changes = {
        "lead_department": lead,
        "co_handlers": tuple(co),
        "dispatch_history": order.dispatch_history + history,
    }
    return changes, {"department": lead, "co_handlers": tuple(co)}


def _redispatch(
    order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
) -> tuple[dict, dict]:
    lead = _require_text(data.get("department"), "department", T.REDISPATCH)
    if lead == order.lead_department:
        raise IllegalStep(f"'redispatch' must name another department than {lead!r}")
    changes = {
        "lead_department": lead,
        "co_handlers": tuple(c for c in order.co_handlers if c != lead),
        "dispatch_history": order.dispatch_history + (Dispatch(lead, at),),
        "redispatch_count": order.redispatch_count + 1,
    }
    return changes, {"department": lead, "previous": order.lead_department}


def _add_co_handler(
    order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
) -> tuple[dict, dict]:
    name = _require_text(data.get("department"), "department", T.ADD_CO_HANDLER)
    if name in order.handling_units:
        raise IllegalStep(f"'add_co_handler': {name!r} already handles this order")
    changes = {
        "co_handlers": order.co_handlers + (name,),
        "dispatch_history": order.dispatch_history + (Dispatch(name, at, lead=False),),
    }
    return changes, {"department": name}


def _accept_handling(
    order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
) -> tuple[dict, dict]:
    return {"first_response_at": order.first_response_at or at}, {"department": actor.unit}


def _return(
    order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
) -> tuple[dict, dict]:
    assert reason is not None  # REASON_REQUIRED
    changes = {
        "pending_return": ReturnRequest(actor.unit, reason, at),
        "return_count": order.return_count + 1,
    }
    return changes, {"department": actor.unit}


def _accept_return(
    order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
) -> tuple[dict, dict]:
    pending = order.pending_return
    assert pending is not None  # set by every step into RETURNED
    lead = _require_text(data.get("department"), "department", T.ACCEPT_RETURN)
    if lead == pending.department:
        raise IllegalStep(
            f"'accept_return' must dispatch to another department than {lead!r};"
            " use 'refuse_return' to keep it there"
        )
    changes = {
        "lead_department": lead,
        "co_handlers": tuple(c for c in order.co_handlers if c != lead),
        "dispatch_history": order.dispatch_history + (Dispatch(lead, at),),
        "redispatch_count": order.redispatch_count + 1,
        "pending_return": None,
    }
    return changes, {"department": lead, "returned_by": pending.department}


def _refuse_return(
    order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
) -> tuple[dict, dict]:
    pending = order.pending_return
    assert pending is not None
    recorded = {"department": pending.department, "return_reason": pending.reason}
    return {"pending_return": None}, recorded


def _reply(
    order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
) -> tuple[dict, dict]:
    text = _require_text(data.get("text"), "reply text", T.REPLY)
    reply = Reply(actor.unit, text, at, lead=True)
    changes = {
        "replies": order.replies + (reply,),
        "first_response_at": order.first_response_at or at,
    }
    return changes, {"department": actor.unit, "text": text}


def _co_reply(
    order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
) -> tuple[dict, dict]:
    text = _require_text(data.get("text"), "opinion text", T.CO_REPLY)
    reply = Reply(actor.unit, text, at, lead=False)
    return {"replies": order.replies + (reply,)}, {"department": actor.unit, "text": text}


def _complete(
    order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
) -> tuple[dict, dict]:
    return {"completed_at": at}, {"department": actor.unit}


def _reject_completion(
    order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
) -> tuple[dict, dict]:
    changes = {
        "completed_at": None,
        "rejected_completion_count": order.rejected_completion_count + 1,
    }
    return changes, {"department": order.lead_department}


def _nothing(
    order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
) -> tuple[dict, dict]:
    return {}, {}


def _answer(
    order: Order,
    actor: Actor,
    at: datetime,
    reason: str | None,
    data: Mapping[str, Any],
    step: Step,
) -> tuple[dict, dict]:
    """Validate a citizen's answer: who recorded it, through which channel, what it says."""
    source = data.get("source")
    if source not in tuple(AnswerSource):
        raise NotAllowed(
            f"an answer is accepted only from the citizen ('citizen_keys' or"
            f" 'operator_call'), not from source {source!r}"
        )
    source = AnswerSource(source)
    call_id = data.get("call_id")
    if source is AnswerSource.CITIZEN_KEYS and actor.role is not R.CITIZEN:
        raise NotAllowed(f"{_a(actor.role)} cannot enter the citizen's own key presses")
    if source is AnswerSource.OPERATOR_CALL:
        if actor.role not in (R.OPERATOR, R.SUPERVISOR):
            raise NotAllowed(f"{_a(actor.role)} cannot record an answer heard on a call")
        if not isinstance(call_id, str) or not call_id.strip():
            raise NotAllowed("an answer heard on a call must name the recorded call (call_id)")
    resolved = data.get("resolved")
    if not isinstance(resolved, bool):
        raise IllegalStep(f"'{step}' needs 'resolved' as True or False")
    if resolved is not (step is T.EVALUATE):
        hint = "'evaluate'" if resolved else f"'{answer_step(order, False)}'"
        raise IllegalStep(f"'{step}' does not fit resolved={resolved}; use {hint}")
    scores = {}
    for key in ("satisfaction_operator", "satisfaction_department"):
        value = data.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value not in SATISFACTION_SCALE
        ):
            raise IllegalStep(f"{key} must be 1, 2 or 3 (or absent), not {value!r}")
        scores[key] = value
    if scores["satisfaction_department"] is not None and order.lead_department is None:
        raise IllegalStep(
            "no department handled this order: satisfaction_department must be absent"
        )
    if step is T.REOPEN and order.lead_department is None:
        raise IllegalStep("no lead department to reopen to; use 'reopen_at_centre'")
    if step is T.REOPEN_AT_CENTRE and order.lead_department is not None:
        raise IllegalStep(f"reopen to the lead department {order.lead_department!r}: use 'reopen'")
    evaluation = Evaluation(
        source=source,
        resolved=resolved,
        satisfaction_operator=scores["satisfaction_operator"],
        satisfaction_department=scores["satisfaction_department"],
        call_id=call_id.strip() if isinstance(call_id, str) and call_id.strip() else None,
        actor_id=actor.id,
        at=at,
    )
    changes: dict[str, Any] = {"evaluations": order.evaluations + (evaluation,)}
    recorded: dict[str, Any] = {
        "source": source,
        "resolved": resolved,
        **scores,
        "call_id": evaluation.call_id,
    }
    if step is not T.EVALUATE:
        changes["reopen_count"] = order.reopen_count + 1
        changes["completed_at"] = None
    if "handling_due" in data:
        due = _require_time(data["handling_due"], "handling_due", step, at)
        changes["handling_due"] = due
        recorded["handling_due"] = due
    if step is T.REOPEN:
        recorded["department"] = order.lead_department
    return changes, recorded


def _supervise(
    order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
) -> tuple[dict, dict]:
    assert reason is not None
    deadline = _require_time(data.get("deadline"), "deadline", T.SUPERVISE, at)
    supervision = Supervision(deadline, reason, actor.id, at)
    return {"supervision": supervision}, {"deadline": deadline}


def _flag_overdue(
    order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
) -> tuple[dict, dict]:
    try:
        kind = TimerKind(data.get("timer"))
    except ValueError:
        raise IllegalStep(f"unknown timer {data.get('timer')!r}") from None
    deadline = data.get("deadline")
    if not isinstance(deadline, datetime) or deadline > at:
        raise IllegalStep(f"'{kind}' is not due at {at.isoformat()}")
    if (kind, deadline) in order.overdue:
        raise IllegalStep(f"'{kind}' for {deadline.isoformat()} is already flagged")
    return {"overdue": order.overdue + ((kind, deadline),)}, {"timer": kind, "deadline": deadline}


def _answer_effect(step: Step) -> Effect:
    def effect(
        order: Order, actor: Actor, at: datetime, reason: str | None, data: Mapping[str, Any]
    ) -> tuple[dict, dict]:
        return _answer(order, actor, at, reason, data, step)

    return effect


_EFFECTS: dict[Step, Effect] = {
    T.RESOLVE_ON_CALL: _resolve_on_call,
    T.DISPATCH: _dispatch,
    T.REDISPATCH: _redispatch,
    T.ADD_CO_HANDLER: _add_co_handler,
    T.ACCEPT_HANDLING: _accept_handling,
    T.RETURN: _return,
    T.ACCEPT_RETURN: _accept_return,
    T.REFUSE_RETURN: _refuse_return,
    T.CO_REPLY: _co_reply,
    T.REPLY: _reply,
    T.COMPLETE: _complete,
    T.REJECT_COMPLETION: _reject_completion,
    T.START_RETURN_VISIT: _nothing,
    T.VISIT_UNREACHABLE: _nothing,
    T.EVALUATE: _answer_effect(T.EVALUATE),
    T.REOPEN: _answer_effect(T.REOPEN),
    T.REOPEN_AT_CENTRE: _answer_effect(T.REOPEN_AT_CENTRE),
    T.SUPERVISE: _supervise,
    T.FLAG_OVERDUE: _flag_overdue,
}


# --------------------------------------------------------------------------- deadlines


@dataclass(frozen=True)
class UrgencyRule:
    """Time limits for one urgency: handling in calendar hours or in working days."""

    first_response: timedelta
    handling_hours: timedelta | None = None
    handling_working_days: int | None = None

    def __post_init__(self) -> None:
        if (self.handling_hours is None) == (self.handling_working_days is None):
            raise ValueError("give exactly one of handling_hours and handling_working_days")


@dataclass(frozen=True)
class DeadlinePolicy:
    """The time limits per urgency, from the ``[deadlines.*]`` tables of calendar.toml."""

    rules: Mapping[Urgency, UrgencyRule]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DeadlinePolicy:
        """Build from the parsed calendar.toml (reads its ``deadlines`` table)."""
        rules = {}
        for name, table in data["deadlines"].items():
            hours = table.get("handling_hours")
            rules[Urgency(name)] = UrgencyRule(
                first_response=timedelta(minutes=table["first_response_minutes"]),
                handling_hours=timedelta(hours=hours) if hours is not None else None,
                handling_working_days=table.get("handling_working_days"),
            )
        missing = set(Urgency) - set(rules)
        if missing:
            raise ValueError(f"no deadlines for urgency: {', '.join(sorted(missing))}")
        return cls(MappingProxyType(rules))

    @classmethod
    def from_toml(cls, text: str) -> DeadlinePolicy:
        """Build from the text of calendar.toml."""
        return cls.from_mapping(tomllib.loads(text))


def deadlines_for(
    order: Order | None,
    urgency: Urgency,
    accepted_at: datetime,
    calendar: WorkCalendar,
    config: DeadlinePolicy,
) -> Deadlines:
    """First-response and handling deadlines for an order of ``urgency`` from ``accepted_at``.

    The first response is calendar time (departments keep a duty roster); handling is
    calendar hours for emergencies and whole working days otherwise (see
    :mod:`callcenter.orders.calendar`).  Pass ``order=None`` when accepting a new order;
    pass the order (with the reopening time as ``accepted_at``) to compute a fresh
    handling period for ``reopen``, and the result then also carries its 督办 deadline.
    """
    rule = config.rules[Urgency(urgency)]
    if rule.handling_hours is not None:
        handling = accepted_at + rule.handling_hours
    else:
        assert rule.handling_working_days is not None
        handling = calendar.add_working_days(accepted_at, rule.handling_working_days)
    supervision = order.supervision.deadline if order and order.supervision else None
    return Deadlines(accepted_at + rule.first_response, handling, supervision)


@dataclass(frozen=True)
class TimerFired:
    """A deadline passed.  ``at`` is when it took effect: the deadline, or the order's
    last step if that came later (so that the audit trail stays in time order)."""

    order_id: str
    kind: TimerKind
    deadline: datetime
    at: datetime


def due_timers(orders: Iterable[Order], now: datetime) -> list[TimerFired]:
    """Deadlines passed by ``now`` and not yet flagged, earliest first.

    Fires only while the order is still with the centre or a department
    (:data:`TIMED_STATES`); the first-response timer only until the lead department
    signed for it or replied, or the operator answered on the call.
    Each (kind, deadline) fires once: applying it with :func:`apply_timer` marks it.
    """
    fired = []
    for order in orders:
        if order.state not in TIMED_STATES:
            continue
        candidates = [(TimerKind.HANDLING, order.handling_due)]
        if order.first_response_at is None:
            candidates.append((TimerKind.FIRST_RESPONSE, order.first_response_due))
        if order.supervision is not None:
            candidates.append((TimerKind.SUPERVISION, order.supervision.deadline))
        for kind, deadline in candidates:
            if deadline <= now and (kind, deadline) not in order.overdue:
                at = max(deadline, order.updated_at)
                fired.append(TimerFired(order.id, kind, deadline, at))
    return sorted(fired, key=lambda t: (t.at, t.order_id, t.kind))


def apply_timer(order: Order, timer: TimerFired, actor: Actor) -> tuple[Order, AuditRecord]:
    """Flag a fired timer on its order (the actor is the system)."""
    return apply(order, T.FLAG_OVERDUE, actor, timer.at, timer=timer.kind, deadline=timer.deadline)


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Satisfaction:
    """Citizens' satisfaction on one dimension: ``satisfied_share`` counts 满意 and 基本满意."""

    answers: int
    mean: float | None
    satisfied_share: float | None


@dataclass(frozen=True)
class WorkOrderFigures:
    """Work-order figures (METRICS.md).  Each rate is None when its denominator is 0.

    * ``resolved_on_call_rate`` 直接答复率 = orders answered on the call / orders;
    * ``on_time_rate`` = orders whose standing department completion came no later
      than the handling deadline / orders with a standing department completion;
    * ``resolution_rate`` (citizen-confirmed) = orders whose latest citizen answer is
      "solved" / orders with at least one citizen answer;
    * ``first_time_resolution_rate`` 一次办结率 = orders whose first citizen answer is
      "solved" / orders with at least one citizen answer;
    * satisfaction over every citizen answer that gave a score.

    Only answers from :class:`AnswerSource` channels count, whatever else is stored.
    """

    orders: int
    resolved_on_call_rate: float | None
    on_time_rate: float | None
    resolution_rate: float | None
    first_time_resolution_rate: float | None
    satisfaction_operator: Satisfaction
    satisfaction_department: Satisfaction


def work_order_figures(orders: Iterable[Order]) -> WorkOrderFigures:
    """Compute :class:`WorkOrderFigures` from orders, using only citizens' answers."""
    orders = list(orders)
    on_call = sum(1 for o in orders if o.on_call_answer is not None)
    completed = [o for o in orders if o.completed_at is not None]
    on_time = sum(1 for o in completed if o.completed_at and o.completed_at <= o.handling_due)
    citizen = tuple(AnswerSource)
    answers = [[e for e in o.evaluations if e.source in citizen] for o in orders]
    answered = [a for a in answers if a]
    every = [e for a in answered for e in a]
    return WorkOrderFigures(
        orders=len(orders),
        resolved_on_call_rate=_ratio(on_call, len(orders)),
        on_time_rate=_ratio(on_time, len(completed)),
        resolution_rate=_ratio(sum(1 for a in answered if a[-1].resolved), len(answered)),
        first_time_resolution_rate=_ratio(sum(1 for a in answered if a[0].resolved), len(answered)),
        satisfaction_operator=_satisfaction([e.satisfaction_operator for e in every]),
        satisfaction_department=_satisfaction([e.satisfaction_department for e in every]),
    )


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _satisfaction(scores: list[int | None]) -> Satisfaction:
    given = [s for s in scores if s is not None]
    return Satisfaction(
        answers=len(given),
        mean=sum(given) / len(given) if given else None,
        satisfied_share=_ratio(sum(1 for s in given if s >= 2), len(given)),
    )


# --------------------------------------------------------------------------- privacy


class Visibility(StrEnum):
    """How much of one identity field a role sees."""

    FULL = "full"
    MASKED = "masked"
    HIDDEN = "hidden"


IDENTITY_FIELDS = ("caller_name", "caller_number", "caller_address")

V = Visibility
VISIBILITY: dict[tuple[bool, Role], tuple[Visibility, Visibility, Visibility]] = {
    # (confidential, role): (name, number, address)
    (False, R.OPERATOR): (V.FULL, V.FULL, V.FULL),
    (False, R.SUPERVISOR): (V.FULL, V.FULL, V.FULL),
    (False, R.ADMIN): (V.MASKED, V.MASKED, V.HIDDEN),
    (False, R.DEPARTMENT): (V.FULL, V.FULL, V.FULL),  # they call the citizen back
    (False, R.CITIZEN): (V.HIDDEN, V.HIDDEN, V.HIDDEN),
    (False, R.SYSTEM): (V.FULL, V.FULL, V.FULL),
    (True, R.OPERATOR): (V.MASKED, V.MASKED, V.MASKED),
    (True, R.SUPERVISOR): (V.FULL, V.FULL, V.FULL),
    (True, R.ADMIN): (V.HIDDEN, V.HIDDEN, V.HIDDEN),
    (True, R.DEPARTMENT): (V.HIDDEN, V.HIDDEN, V.HIDDEN),  # the centre relays
    (True, R.CITIZEN): (V.HIDDEN, V.HIDDEN, V.HIDDEN),
    (True, R.SYSTEM): (V.FULL, V.FULL, V.FULL),  # the IVR dials the return visit
}
"""Who sees the caller's identity.  Unknown roles see nothing."""

_MOBILE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")


def mask_number(number: str) -> str:
    """``"13812345678" -> "138****5678"``: keep the first 3 and last 4 digits."""
    digits = re.sub(r"[\s-]", "", number)
    prefix = ""
    if digits.startswith("+86"):
        prefix, digits = "+86", digits[3:]
    if len(digits) >= 8:
        return prefix + digits[:3] + "*" * (len(digits) - 7) + digits[-4:]
    if len(digits) > 2:
        return prefix + "*" * (len(digits) - 2) + digits[-2:]
    return prefix + "*" * len(digits)


def mask_name(name: str) -> str:
    """``"张三丰" -> "张**"``: keep the family name's first character."""
    name = name.strip()
    return name[:1] + "*" * (len(name) - 1) if name else ""


def mask_address(address: str) -> str:
    """Keep the start of the address (city, district) and mask the rest."""
    address = address.strip()
    keep = min(6, len(address) // 2)
    return address[:keep] + "****" if address else ""


_MASKERS: dict[str, Callable[[str], str]] = {
    "caller_name": mask_name,
    "caller_number": mask_number,
    "caller_address": mask_address,
}


def redact(order_view: Mapping[str, Any], role: Role | str) -> dict[str, Any]:
    """A copy of ``order_view`` with the caller's identity hidden or masked for ``role``.

    A view without ``confidential`` is treated as confidential.  For roles that do
    not see the full number, mobile numbers written in the ``text`` are masked too.
    """
    confidential = bool(order_view.get("confidential", True))
    try:
        rules = VISIBILITY[(confidential, Role(role))]
    except ValueError:
        rules = (V.HIDDEN, V.HIDDEN, V.HIDDEN)
    view = dict(order_view)
    for key, rule in zip(IDENTITY_FIELDS, rules, strict=True):
        if key not in view:
            continue
        if rule is V.HIDDEN:
            view[key] = None
        elif rule is V.MASKED and view[key]:
            view[key] = _MASKERS[key](str(view[key]))
    if "caller_callback" in view:  # a second number: the number's rule
        if rules[1] is V.HIDDEN:
            view["caller_callback"] = None
        elif rules[1] is V.MASKED and view["caller_callback"]:
            view["caller_callback"] = mask_number(str(view["caller_callback"]))
    if rules[1] is not V.FULL and isinstance(view.get("text"), str):
        view["text"] = _MOBILE.sub(lambda m: mask_number(m.group()), view["text"])
    return view


def order_view(order: Order) -> dict[str, Any]:
    """A flat, JSON-friendly view of an order (pass it through :func:`redact`)."""
    return {
        "id": order.id,
        "number": order.number,
        "state": str(order.state),
        "owner_unit": order.owner_unit,
        "urgency": str(order.urgency),
        "category": order.category,
        "text": order.text,
        "location": order.location,
        "confidential": order.confidential,
        "caller_name": order.caller.name,
        "caller_number": order.caller.number,
        "caller_address": order.caller.address,
        "accepted_at": order.accepted_at.isoformat(),
        "updated_at": order.updated_at.isoformat(),
        "first_response_due": order.first_response_due.isoformat(),
        "handling_due": order.handling_due.isoformat(),
        "lead_department": order.lead_department,
        "co_handlers": list(order.co_handlers),
        "return_count": order.return_count,
        "redispatch_count": order.redispatch_count,
        "reopen_count": order.reopen_count,
        "supervision_deadline": (
            order.supervision.deadline.isoformat() if order.supervision else None
        ),
        "resolved": order.resolved,
        "overdue": [str(kind) for kind, _ in order.overdue],
        "on_call_answer": order.on_call_answer,
        "request_type": order.intake.request_type,
        "caller_gender": order.intake.gender,
        "caller_callback": order.intake.callback_number,
        "district": order.intake.district,
        "street": order.intake.street,
        "reply_method": order.intake.reply_method,
        "article_id": order.intake.article_id,
    }


# --------------------------------------------------------------------------- directory


@dataclass(frozen=True)
class Department:
    """A handling unit with the categories it owns and keywords pointing to it."""

    id: str
    name: str
    name_en: str
    categories: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Directory:
    """The centre and the departments it dispatches to (config/departments.toml)."""

    centre: Department
    departments: tuple[Department, ...]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Directory:
        """Build from the parsed departments.toml."""
        centre = Department(**data["centre"])
        departments = tuple(
            Department(
                id=d["id"],
                name=d["name"],
                name_en=d["name_en"],
                categories=tuple(d.get("categories", ())),
                keywords=tuple(d.get("keywords", ())),
            )
            for d in data.get("department", ())
        )
        ids = [d.id for d in departments] + [centre.id]
        if len(set(ids)) != len(ids):
            raise ValueError("department ids must be unique")
        return cls(centre, departments)

    @classmethod
    def from_toml(cls, text: str) -> Directory:
        """Build from the text of departments.toml."""
        return cls.from_mapping(tomllib.loads(text))

    def get(self, department_id: str) -> Department:
        """The department with this id (KeyError if none)."""
        for department in self.departments:
            if department.id == department_id:
                return department
        raise KeyError(department_id)


class Suggestion(NamedTuple):
    """A department that may own the request, how strongly, and why."""

    department: Department
    score: float
    matched: tuple[str, ...]


def suggest_departments(text: str, directory: Directory, limit: int | None = 3) -> list[Suggestion]:
    """Rank departments by the keywords and category names found in ``text``.

    A match scores its length in characters (longer phrases are more specific); a
    match inside a longer match of the same department is not counted twice.  Ties
    are broken by department id so the order is stable.
    """
    suggestions = []
    for department in directory.departments:
        found = {k for k in department.keywords + department.categories if k and k in text}
        matched = tuple(
            sorted(
                (k for k in found if not any(k != other and k in other for other in found)),
                key=lambda k: (-len(k), k),
            )
        )
        if matched:
            suggestions.append(Suggestion(department, float(sum(map(len, matched))), matched))
    suggestions.sort(key=lambda s: (-s.score, s.department.id))
    return suggestions if limit is None else suggestions[:limit]


def order_number(day: date, seq: int) -> str:
    """A number people can read out: ``order_number(date(2026, 11, 23), 123) -> "20261123-000123"``."""
    if not 1 <= seq <= 999_999:
        raise ValueError(f"sequence {seq} out of range 1..999999")
    return f"{day:%Y%m%d}-{seq:06d}"
