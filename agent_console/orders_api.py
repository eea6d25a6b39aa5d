"""The work-order API: create, list, read, step, supervise, report (JSON; CSV reports).

Theory of operation
-------------------
Each handler checks the input's types and sizes, turns the signed-in account into
the core's :class:`~callcenter.orders.Actor` (a handler account acts for the
department in ``department_handlers``) and calls :class:`~callcenter.orders.store.WorkOrders`.
Whether a step is allowed is decided by the pure core alone; its refusals map to
HTTP as: unknown order 404, wrong role or department 403 (``NotAllowed``), step
that does not fit the order's state 409, bad data 400 (``IllegalStep``), someone
else changed the order first 409.  Everything that leaves goes through
:func:`~callcenter.orders.redact` for the reader's role.

Routes::

    GET  /orders                               the work-order page (HTML)
    POST /api/orders                           operator: accept an order from a call
    GET  /api/orders?q=&state=&department=&category=&urgency=&channel=&from=&to=
                    &due=overdue|soon&confidential=&mine=&followers=0&sort=&page=
                    &per_page=&format=json|csv    find orders (search.py)
    GET  /api/orders/{id}                      the order, its audit trail and dispatches
    POST /api/orders/{id}/steps {step, reason?, ...data}
    GET  /api/supervision/anomalies?kind=      supervisor: every detector's findings
    GET  /api/departments                      the directory
    GET  /api/departments/suggest?text=        where to dispatch
    GET  /api/reports/orders?from=&to=&period=day|week&format=json|csv
    GET  /api/openapi.json                     this API, as OpenAPI 3.1
    GET  /api/outbound?status=&kind=           supervisor: call-backs and return visits
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Mapping
from datetime import date, datetime, timedelta
from typing import Any

import structlog
from aiohttp import web
from sqlalchemy import select

from agent_console.http import ApiError, list_field, read_json, text_field
from agent_console.intake_api import openapi_paths as intake_paths
from agent_console.knowledge_api import ARTICLE_SCHEMA, KNOWLEDGE, openapi_paths
from agent_console.models import Role as AccountRole
from agent_console.openapi import complete
from agent_console.permissions import order_visible
from agent_console.session import CONSOLE, RECORDINGS, need_session, page
from callcenter.db import AuditRow
from callcenter.orders.channels import CHANNELS
from callcenter.orders.lifecycle import (
    TRANSITIONS,
    Caller,
    IllegalStep,
    NotAllowed,
    Order,
    Role,
    State,
    Step,
    Urgency,
    answer_step,
    order_view,
    redact,
    suggest_departments,
)
from callcenter.orders.merge import (
    Candidate,
    MergeError,
    duplicates,
    follow,
    followers_of,
    merge,
    unmerge,
)
from callcenter.orders.search import (
    SORTS,
    URGENCIES,
    Found,
    Query,
    csv_safe,
    find_orders,
    parse_query,
)
from callcenter.orders.store import (
    AlreadyFiled,
    OrderConflict,
    OrderNotFound,
    OrderRow,
    WorkOrders,
    account_actor,
    encode_plain,
    record_json,
)
from callcenter.orders.supervision import anomaly_departments, anomaly_key
from callcenter.runtime import periodic
from ivr.dialer import STATUSES, outbound_list, return_visit_of, survey_of

log = structlog.get_logger(__name__)

WORK_ORDERS = web.AppKey("work_orders", WorkOrders)
MAX_OFFSET = 10_000
"""Results a list may page past (a million-row OFFSET would read a million rows)."""
TIMER_EVERY = web.AppKey("work_order_timer_every", float)

MAX_TEXT = 20_000
MAX_BODY = 200_000  # MAX_TEXT characters, JSON-escaped
TIME_KEYS = ("deadline", "handling_due")
DEPARTMENT_KEYS = ("department",)
STEP_NAMES = sorted({str(s) for s in Step if s is not Step.ACCEPT} | {"answer"})


def setup_orders(app: web.Application, work_orders: WorkOrders | None = None, *,
                 timer_every: float = 60.0) -> WorkOrders:
    """Add the work-order routes to the console's app (called once from make_app).

    Also takes over the screen pop's ``caller_history`` (unless make_app was given
    its own) and runs :meth:`WorkOrders.fire_due` every ``timer_every`` seconds.
    """
    c = app[CONSOLE]
    wo = work_orders or WorkOrders(c.service.store.engine, tz=c.service.settings.tz,
                                   clock=c.service.clock)
    app[WORK_ORDERS] = wo
    app[TIMER_EVERY] = timer_every
    if c.caller_history == c.orders.caller_history:
        c.caller_history = wo.caller_history
    app.cleanup_ctx.append(_timers_ctx)
    r = app.router
    r.add_get("/orders", page("orders.html", None))
    r.add_post("/api/orders", api_create)
    r.add_get("/api/orders", api_list)
    r.add_get("/api/orders/duplicates", api_duplicates)
    r.add_get("/api/orders/inbox", api_inbox)  # before /api/orders/{id}
    r.add_get("/api/orders/{id}", api_get)
    r.add_get("/api/orders/{id}/duplicates", api_order_duplicates)
    r.add_post("/api/orders/{id}/merge", api_merge)
    r.add_post("/api/orders/{id}/unmerge", api_unmerge)
    r.add_post("/api/orders/{id}/steps", api_step)
    r.add_post("/api/orders/{id}/knowledge", api_link_article)
    r.add_get("/api/supervision/anomalies", api_anomalies)
    r.add_post("/api/supervision/anomalies/ack", api_anomaly_ack)
    r.add_get("/api/departments", api_departments)
    r.add_get("/api/departments/suggest", api_suggest)
    r.add_get("/api/reports/orders", api_report)
    r.add_get("/api/openapi.json", api_openapi)
    r.add_get("/api/outbound", api_outbound)
    return wo


async def _timers_ctx(app: web.Application) -> AsyncIterator[None]:
    wo = app[WORK_ORDERS]

    async def turn() -> None:
        fired = await wo.fire_due()
        if fired:
            log.info("work-order deadlines flagged", count=len(fired))

    async with periodic("work-order-timers", app[TIMER_EVERY], turn,
                        failed="work-order timers failed", first=False):
        yield


# --------------------------------------------------------------------------- helpers


class Reader:
    """The signed-in account as the core sees it."""

    def __init__(self, username: str, role: Role, unit: str, account_role: AccountRole) -> None:
        self.username, self.role, self.unit, self.account_role = (
            username, role, unit, account_role)

    @property
    def department(self) -> str | None:
        return self.unit if self.role is Role.DEPARTMENT else None


async def _reader(request: web.Request, *roles: AccountRole) -> tuple[WorkOrders, Reader]:
    """The work orders and the signed-in reader.  Who may use a route is decided by
    :data:`agent_console.permissions.ROUTES` before the handler runs."""
    wo = request.app[WORK_ORDERS]
    session = await need_session(request, *roles)
    user = session.user
    department = None
    if user.role is AccountRole.HANDLER:
        department = await wo.department_of(user.username)
        if not department:
            raise ApiError(403, "this handler account is not assigned to a department")
    actor = account_actor(user.username, user.role.value, department,
                          wo.config.directory.centre.id)
    return wo, Reader(user.username, actor.role, actor.unit, user.role)


def _actor(wo: WorkOrders, reader: Reader) -> Any:
    return account_actor(reader.username, reader.account_role.value, reader.department,
                         wo.config.directory.centre.id)


def _sees(order: Order, reader: Reader) -> bool:
    """The one department/ownership rule (:func:`agent_console.permissions.order_visible`)."""
    return order_visible(reader.account_role, reader.department, order)


def view(order: Order, reader: Reader) -> dict[str, Any]:
    """The order for this reader: identity redacted, replies and pending return added."""
    doc = redact(order_view(order), reader.role)
    def masked(text: str) -> str:
        return redact({"text": text, "confidential": order.confidential}, reader.role)["text"]

    doc["replies"] = [{"department": r.department, "text": masked(r.text),
                       "at": r.at.isoformat(), "lead": r.lead} for r in order.replies]
    pending = order.pending_return
    doc["pending_return"] = None if pending is None else {
        "department": pending.department, "reason": pending.reason,
        "at": pending.at.isoformat()}
    doc["evaluations"] = [{"source": str(e.source), "resolved": e.resolved,
                           "satisfaction_operator": e.satisfaction_operator,
                           "satisfaction_department": e.satisfaction_department,
                           "at": e.at.isoformat()} for e in order.evaluations]
    doc["on_call_answer"] = masked(order.on_call_answer) if order.on_call_answer else None
    doc["steps"] = sorted(str(step) for (state, step) in TRANSITIONS
                          if state is order.state and step is not Step.FLAG_OVERDUE)
    return doc


def _record(record: Any, order: Order, reader: Reader) -> dict[str, Any]:
    doc = record_json(record)
    data = dict(doc["data"])
    had = "confidential" in data
    data.setdefault("confidential", order.confidential)
    data = redact(data, reader.role)
    if isinstance(data.get("answer"), str):  # an on-call answer may quote a number too
        data["answer"] = redact({"text": data["answer"], "confidential": order.confidential},
                                reader.role)["text"]
    if not had:
        data.pop("confidential", None)
    doc["data"] = data
    return doc


def _int_query(request: web.Request, key: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"'{key}' must be a whole number") from None
    if not low <= value <= high:
        raise ApiError(400, f"'{key}' must be between {low} and {high}")
    return value


def _bool_field(data: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"'{key}' must be true or false")
    return value


def _department(wo: WorkOrders, value: Any, key: str) -> str:
    if not isinstance(value, str) or not wo.config.knows(value):
        raise ApiError(400, f"'{key}' must be a known department id")
    return value


def _time(value: Any, key: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise ApiError(400, f"'{key}' must be an ISO 8601 date-time with its offset")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"'{key}' must be an ISO 8601 date-time with its offset") from None
    if moment.tzinfo is None:
        raise ApiError(400, f"'{key}' needs a time zone offset")
    return moment


async def _load(wo: WorkOrders, request: web.Request, reader: Reader) -> Order:
    try:
        order = await wo.get(request.match_info["id"])
    except OrderNotFound:
        raise ApiError(404, "no such work order") from None
    if not _sees(order, reader):
        raise ApiError(404, "no such work order")
    return order


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.json_response(doc, status=status,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False, default=str))


# --------------------------------------------------------------------------- handlers


CLIENT_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,80}$")


async def api_create(request: web.Request) -> web.Response:
    """受理 from the console.  An optional ``Idempotency-Key`` header (1-80 of
    ``[A-Za-z0-9._:-]``, per account) makes a retry safe: the key is stored with the
    order in one transaction, and a retry with it answers 200 with the order filed
    the first time (``Idempotent-Replayed: true``) instead of filing again."""
    wo, reader = await _reader(request)
    client_key = request.headers.get("Idempotency-Key")
    if client_key is not None and not CLIENT_KEY.match(client_key):
        raise ApiError(400, "Idempotency-Key must be 1-80 of A-Z a-z 0-9 . _ : -")
    once = None
    if client_key is not None:
        once = (f"user:{(await need_session(request)).user.id}", client_key)
    data = await read_json(request, MAX_BODY)
    text = text_field(data, "text", max_len=MAX_TEXT)
    caller = Caller(
        name=text_field(data, "caller_name", max_len=120, required=False),
        number=text_field(data, "caller", max_len=40, required=False),
        address=text_field(data, "address", max_len=400, required=False),
    )
    urgency = text_field(data, "urgency", max_len=16, required=False, default="normal")
    if urgency not in tuple(Urgency):
        raise ApiError(400, f"'urgency' must be one of {', '.join(Urgency)}")
    channel = text_field(data, "channel", max_len=16, required=False, default="phone")
    if channel not in CHANNELS:
        raise ApiError(400, f"'channel' must be one of {', '.join(CHANNELS)}")
    try:
        order, _ = await wo.create(
            _actor(wo, reader), caller=caller,
            category=text_field(data, "category", max_len=60, required=False),
            text=text, urgency=Urgency(urgency),
            confidential=_bool_field(data, "confidential"),
            location=text_field(data, "location", max_len=400, required=False),
            call_uniqueid=text_field(data, "call_uniqueid", max_len=64, required=False) or None,
            channel=channel, once=once)
    except AlreadyFiled as exc:
        if exc.order_id is None:
            raise ApiError(409, "this Idempotency-Key is being filed right now; retry") from None
        order = await wo.get(str(exc.order_id))
        doc = view(order, reader)
        doc["channel"] = channel
        response = _json({"order": doc}, 200)
        response.headers["Idempotent-Replayed"] = "true"
        return response
    except IllegalStep as exc:
        raise ApiError(400, str(exc)) from None
    except NotAllowed as exc:
        raise ApiError(403, str(exc)) from None
    except OrderConflict as exc:
        raise ApiError(409, str(exc)) from None
    log.info("work order accepted", number=order.number, by=reader.username, channel=channel)
    doc = view(order, reader)
    doc["channel"] = channel
    return _json({"order": doc}, 201)


def _flag(request: web.Request, key: str) -> bool | None:
    raw = request.query.get(key, "")
    if raw == "":
        return None
    if raw not in ("1", "0", "true", "false"):
        raise ApiError(400, f"'{key}' must be 1 or 0")
    return raw in ("1", "true")


def _choice(request: web.Request, key: str, allowed: tuple[str, ...]) -> str:
    raw = request.query.get(key, "")
    if raw and raw not in allowed:
        raise ApiError(400, f"'{key}' must be one of {', '.join(allowed)}")
    return raw


def search_query(request: web.Request, wo: WorkOrders) -> Query:
    """The search box and filters of ``GET /api/orders`` (each checked; 400 if wrong)."""
    q = request.query.get("q", "")
    if len(q) > 100:
        raise ApiError(400, "'q' is too long (at most 100 characters)")
    query = parse_query(q)
    raw_states = request.query.get("state", "")
    query.states = [x for x in raw_states.split(",") if x]
    if any(x not in tuple(State) for x in query.states):
        raise ApiError(400, f"'state' must be one or more of {', '.join(State)}")
    query.department = request.query.get("department", "")
    if query.department and not wo.config.knows(query.department):
        raise ApiError(400, "'department' must be a known department id")
    query.category = request.query.get("category", "").strip().strip("/")
    if len(query.category) > 60:
        raise ApiError(400, "'category' is too long (at most 60 characters)")
    query.urgency = _choice(request, "urgency", URGENCIES)
    query.channel = _choice(request, "channel", CHANNELS)
    query.date_from = _day(request, "from", None)
    query.date_to = _day(request, "to", None)
    due = _choice(request, "due", ("overdue", "soon"))
    query.overdue, query.due_soon = due == "overdue", due == "soon"
    query.confidential = _flag(request, "confidential")
    query.mine = bool(_flag(request, "mine"))
    if _flag(request, "followers") is False:
        query.merged = False
    # The intake fields (migration 0012): codes and names of config/intake.toml; an
    # unknown one simply matches nothing.
    for key in ("request_type", "reply_method", "gender", "district", "street"):
        value = request.query.get(key, "").strip()
        if len(value) > 64:
            raise ApiError(400, f"'{key}' is too long (at most 64 characters)")
        setattr(query, key, value)
    sort = request.query.get("sort", "-created")
    if sort.lstrip("-") not in SORTS:
        raise ApiError(400, f"'sort' must be one of {', '.join(SORTS)} (- for descending)")
    query.sort = sort
    return query


def list_view(found: Found, reader: Reader) -> dict[str, Any]:
    """A row of a result: the reader's view, its channel and lead order (并案).

    A supervisor sees a confidential caller's identity only on the order itself
    (audited, :func:`api_get`), never in a list.
    """
    role = Role.OPERATOR if found.order.confidential and reader.role is Role.SUPERVISOR \
        else reader.role
    doc = view(found.order, reader) if role is reader.role else view(
        found.order, Reader(reader.username, role, reader.unit, reader.account_role))
    doc["channel"] = found.channel
    doc["merged_into"] = None if found.merged_into is None else str(found.merged_into)
    return doc


LIST_COLUMNS = ("number", "state", "channel", "urgency", "category", "text", "location",
                "caller_name", "caller_number", "lead_department", "accepted_at",
                "handling_due", "confidential", "merged_into")


async def api_list(request: web.Request) -> web.Response:
    """Find orders: ``q`` (number, phone, name or words) and filters, in the URL."""
    wo, reader = await _reader(request)
    query = search_query(request, wo)
    if reader.department is not None and query.department not in ("", reader.department):
        raise ApiError(403, "a department sees only its own orders")
    fmt = _choice(request, "format", ("json", "csv")) or "json"
    page_no = _int_query(request, "page", 1, 1, 100_000)
    per_page = _int_query(request, "per_page", 20, 1, 100 if fmt == "json" else 5000)
    if (page_no - 1) * per_page > MAX_OFFSET:  # an OFFSET reads every row it skips
        raise ApiError(400, f"only the first {MAX_OFFSET:,} results are paged: narrow the "
                            "search")
    found, total, capped = await find_orders(
        wo, query, department=reader.department,
        sees_identity=reader.role in (Role.OPERATOR, Role.SUPERVISOR, Role.ADMIN),
        username=reader.username, page=page_no, per_page=per_page)
    rows = [list_view(f, reader) for f in found]
    if fmt == "csv":  # an export of the result, redacted exactly like the list
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(LIST_COLUMNS)
        for row in rows:
            writer.writerow([csv_safe("" if row.get(c) is None else row[c])
                             for c in LIST_COLUMNS])
        return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition":
                                     'attachment; filename="orders.csv"'})
    return _json({"orders": rows, "page": page_no, "per_page": per_page, "total": total,
                  "total_capped": capped})


async def api_get(request: web.Request) -> web.Response:
    wo, reader = await _reader(request)
    order = await _load(wo, request, reader)
    history = await wo.history(order.id)
    dispatches = [{"department": d.department, "lead": d.lead, "seq": d.seq,
                   "at": datetime.fromtimestamp(d.at, wo.tz).isoformat()}
                  for d in await wo.dispatches(order.id)]
    recording = None  # only for roles that may play it, only when it is on disk
    uniqueid = await wo.call_uniqueid(order.id)
    if reader.account_role in (AccountRole.SUPERVISOR, AccountRole.ADMIN) and uniqueid \
            and RECORDINGS in request.app and request.app[RECORDINGS].get(uniqueid):
        recording = f"/api/recordings/{uniqueid}"
    survey = await survey_of(wo.engine, uniqueid) if uniqueid else None
    visit = await return_visit_of(wo.engine, order.id)
    if visit is not None:
        visit = {k: visit[k] for k in ("status", "attempts", "next_at", "result", "updated_at")}
    doc = view(order, reader)
    extras = await _extras(request, wo, order, reader)
    doc.update(extras)
    if order.confidential and reader.role is Role.SUPERVISOR:
        # 保密件: a supervisor sees who called, and that is recorded.
        await request.app[CONSOLE].service.store.audit(
            at=wo.clock(), actor=reader.username, role=reader.account_role.value,
            action="confidential_identity_viewed", target=order.number,
            data={"order_id": order.id})
    return _json({"order": doc,
                  "history": [_record(r, order, reader) for r in history],
                  "dispatches": dispatches, "recording": recording,
                  "call_survey": None if survey is None else {
                      "score": survey["score"], "at": survey["at"], "source": survey["source"]},
                  "return_visit": visit})


async def _extras(request: web.Request, wo: WorkOrders, order: Order, reader: Reader
                  ) -> dict[str, Any]:
    """Channel, 并案 (lead and followers) and the knowledge articles that answered it."""
    async with wo.sessions() as s:
        row = await s.get(OrderRow, int(order.id))
    lead_number = None
    if row is not None and row.merged_into is not None:
        async with wo.sessions() as s:
            lead_number = await s.scalar(select(OrderRow.number).where(
                OrderRow.id == row.merged_into))
    followers = [] if row is None else await followers_of(wo, row.id)
    return {
        "channel": row.channel if row else "phone",
        "merged_into": None if row is None or row.merged_into is None else {
            "id": str(row.merged_into), "number": lead_number},
        "followers": [{"id": str(f.id), "number": f.number, "state": f.status}
                      for f in followers
                      if reader.department is None or f.lead_department == reader.department],
        "articles": await request.app[KNOWLEDGE].uses_of_order(int(order.id)),
    }


def candidate_json(c: Candidate, reader: Reader) -> dict[str, Any]:
    masked = redact({"text": c.text, "confidential": c.confidential}, reader.role)["text"]
    return {"id": str(c.id), "number": c.number, "state": c.state, "category": c.category,
            "location": c.location, "text": masked,
            "created_at": c.created_at, "lead_department": c.lead_department,
            "reasons": list(c.reasons), "similarity": c.similarity}


async def api_duplicates(request: web.Request) -> web.Response:
    """重复件 while a request is taken: open orders it may repeat, and why."""
    wo, reader = await _reader(request)
    fields = {}
    for key, limit in (("caller", 40), ("location", 400), ("category", 60),
                       ("text", MAX_TEXT)):
        value = request.query.get(key, "")
        if len(value) > limit:
            raise ApiError(400, f"'{key}' is too long (at most {limit} characters)")
        fields[key] = value.strip()
    found = await duplicates(wo, caller=fields["caller"], location=fields["location"],
                             category=fields["category"], text_=fields["text"])
    return _json({"candidates": [candidate_json(c, reader) for c in found]})


async def api_order_duplicates(request: web.Request) -> web.Response:
    """重复件 of an order (for the dispatcher): open orders it may repeat."""
    wo, reader = await _reader(request)
    order = await _load(wo, request, reader)
    found = await duplicates(wo, caller=order.caller.number, location=order.location,
                             category=order.category, text_=order.text,
                             exclude=int(order.id))
    return _json({"candidates": [candidate_json(c, reader) for c in found]})


def _reason(data: Mapping[str, Any]) -> str:
    reason = data.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 2000:
        raise ApiError(400, "'reason' is required (at most 2000 characters)")
    return reason.strip()


async def api_merge(request: web.Request) -> web.Response:
    """并案: ``{followers: [order ids], reason}`` follow this order (supervisor)."""
    wo, reader = await _reader(request)
    lead = await _load(wo, request, reader)
    data = await read_json(request)
    raw = data.get("followers")
    if not isinstance(raw, list) or len(raw) > 50 or not all(
            (isinstance(x, int) and not isinstance(x, bool) and 0 < x < 2**62)
            or (isinstance(x, str) and x.isdigit() and 0 < len(x) < 19) for x in raw):
        raise ApiError(400, "'followers' must be a list of at most 50 order ids")
    raw = [int(x) for x in raw]
    try:
        merged = await merge(wo, request.app[CONSOLE].service.store.audit, int(lead.id), raw,
                             _actor(wo, reader), _reason(data))
    except MergeError as exc:
        raise ApiError(409 if "no such" not in str(exc) else 404, str(exc)) from None
    except OrderConflict as exc:
        raise ApiError(409, str(exc)) from None
    followers = await followers_of(wo, int(lead.id))
    return _json({"lead": lead.id, "merged": [str(x) for x in merged],
                  "followers": [{"id": str(f.id), "number": f.number, "state": f.status}
                                for f in followers]})


async def api_unmerge(request: web.Request) -> web.Response:
    """Detach this order from its lead: ``{reason}`` (supervisor)."""
    wo, reader = await _reader(request)
    order = await _load(wo, request, reader)
    data = await read_json(request)
    try:
        lead = await unmerge(wo, request.app[CONSOLE].service.store.audit, int(order.id),
                             _actor(wo, reader), _reason(data))
    except MergeError as exc:
        raise ApiError(409, str(exc)) from None
    return _json({"order": order.id, "was_following": str(lead)})


async def api_outbound(request: web.Request) -> web.Response:
    """Call-backs and automatic return visits; ``status=manual`` is the operators' to-do."""
    wo, _ = await _reader(request)
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"'status' must be one of {', '.join(STATUSES)}")
    kind = request.query.get("kind") or None
    if kind is not None and kind not in ("callback", "return_visit"):
        raise ApiError(400, "'kind' must be 'callback' or 'return_visit'")
    rows = await outbound_list(wo.engine, status=status, kind=kind)
    for row in rows:  # the list is for follow-up; the order shows the full number
        number = row["number"]
        row["number"] = "*" * max(0, len(number) - 4) + number[-4:]
    return _json({"outbound": rows})


async def api_step(request: web.Request) -> web.Response:
    wo, reader = await _reader(request)
    order = await _load(wo, request, reader)
    data = await read_json(request, MAX_BODY)
    step = data.pop("step", None)
    if not isinstance(step, str) or step not in STEP_NAMES:
        raise ApiError(400, f"'step' must be one of {', '.join(STEP_NAMES)}",
                       zh="未知的工单步骤")
    reason = data.pop("reason", None)
    if reason is not None and (not isinstance(reason, str) or len(reason) > 2000):
        raise ApiError(400, "'reason' must be a string of at most 2000 characters")
    for key in ("text", "answer"):
        if key in data:
            data[key] = text_field(data, key, max_len=MAX_TEXT, strip=False)
    for key in TIME_KEYS:
        if key in data:
            data[key] = _time(data[key], key)
    for key in DEPARTMENT_KEYS:
        if key in data:
            data[key] = _department(wo, data[key], key)
    if "co_handlers" in data:
        named = list_field(data, "co_handlers", max_items=20, max_len=64) or []
        data["co_handlers"] = [_department(wo, d, "co_handlers") for d in named]
    if "call_id" in data and data["call_id"] is not None:
        data["call_id"] = text_field(data, "call_id", max_len=64)
    article_id = await _article_of(request, data.pop("article_id", None), step)
    if step == "answer":  # a citizen's answer heard on a recorded call
        resolved = data.get("resolved")
        if not isinstance(resolved, bool):
            raise ApiError(400, "'resolved' must be true or false")
        data.setdefault("source", "operator_call")
        step = str(answer_step(order, resolved))
    try:  # even a step that does not fit goes to the core, which keeps the attempt
        new, record = await wo.step(order.id, step, _actor(wo, reader), reason=reason, **data)
    except OrderNotFound:
        raise ApiError(404, "no such work order") from None
    except NotAllowed as exc:
        raise ApiError(403, str(exc)) from None
    except IllegalStep as exc:
        raise ApiError(400 if wo.transition_known(order, step) else 409, str(exc)) from None
    except OrderConflict:
        raise ApiError(409, "the order was changed by someone else; reload it") from None
    log.info("work order step", number=new.number, step=step, by=reader.username)
    await follow(wo, int(new.id))  # 并案: the followers go where the lead went
    if article_id is not None:  # 直接答复 from a knowledge-base article
        await request.app[KNOWLEDGE].record_use(article_id, int(new.id), reader.username)
    return _json({"order": view(new, reader), "record": _record(record, new, reader)})


async def _article_of(request: web.Request, raw: Any, step: str) -> int | None:
    """``article_id`` of a 直接答复: an existing article, only on ``resolve_on_call``."""
    if raw is None:
        return None
    if step != str(Step.RESOLVE_ON_CALL):
        raise ApiError(400, "'article_id' goes with the resolve_on_call step")
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
        raise ApiError(400, "'article_id' must be a knowledge-base article id")
    try:
        await request.app[KNOWLEDGE].get(raw)
    except LookupError:
        raise ApiError(400, "'article_id' must be a knowledge-base article id") from None
    return raw


async def api_link_article(request: web.Request) -> web.Response:
    """Link an order to the knowledge-base article it was answered from."""
    wo, reader = await _reader(request)
    order = await _load(wo, request, reader)
    data = await read_json(request)
    raw = data.get("article_id")
    if not isinstance(raw, int) or isinstance(raw, bool) or not 1 <= raw < 2**62:
        raise ApiError(400, "'article_id' must be a knowledge-base article id")
    kb = request.app[KNOWLEDGE]
    try:
        linked = await kb.record_use(raw, int(order.id), reader.username)
    except LookupError:
        raise ApiError(404, "no such article") from None
    return _json({"order_id": order.id, "article_id": raw, "linked": linked,
                  "articles": await kb.uses_of_order(int(order.id))})


ACK_ACTION = "anomaly_acknowledged"
BOARD_STATUSES = ("all", "open", "handled")


async def _briefs(wo: WorkOrders, ids: set[str]) -> dict[str, dict[str, Any]]:
    """Number, state and lead department of the orders the board names."""
    keys = [int(i) for i in ids if i.isdigit()]
    if not keys:
        return {}
    async with wo.sessions() as s:
        rows = (await s.execute(select(OrderRow.id, OrderRow.number, OrderRow.status,
                                       OrderRow.lead_department)
                                .where(OrderRow.id.in_(keys)))).all()
    return {str(r.id): {"id": str(r.id), "number": r.number, "state": r.status,
                        "lead_department": r.lead_department} for r in rows}


async def _acks(request: web.Request) -> dict[str, dict[str, Any]]:
    """Every finding a supervisor marked handled: key -> who, when, note (the latest)."""
    store = request.app[CONSOLE].service.store
    async with store.sessions() as s:
        rows = await s.scalars(select(AuditRow).where(AuditRow.action == ACK_ACTION)
                               .order_by(AuditRow.id))
        return {r.target: {"by": r.actor, "at": r.at, "note": r.reason} for r in rows}


async def api_anomalies(request: web.Request) -> web.Response:
    """督办看板: every detector's findings with their orders (number, state, department),
    the departments they name, and whether a supervisor marked them handled (who, when).

    ``?kind=`` one detector, ``?department=`` findings naming that department (in the
    evidence or as an order's lead), ``?status=open|handled|all``."""
    wo, _ = await _reader(request)
    kind = request.query.get("kind") or None
    department = request.query.get("department") or None
    status = request.query.get("status") or "all"
    if status not in BOARD_STATUSES:
        raise ApiError(400, f"'status' must be one of {', '.join(BOARD_STATUSES)}")
    if department is not None and not wo.config.knows(department):
        raise ApiError(400, "'department' must be a known department id")
    found = await wo.anomalies()
    briefs = await _briefs(wo, {i for a in found for i in a.order_ids})
    acks = await _acks(request)
    counts: dict[str, int] = {}
    out = []
    for a in reversed(found):
        key = anomaly_key(a)
        orders = [briefs.get(i, {"id": i, "number": None, "state": None,
                                 "lead_department": None}) for i in a.order_ids]
        named = anomaly_departments(a) | {o["lead_department"] for o in orders
                                          if o["lead_department"]}
        ack = acks.get(key)
        if department is not None and department not in named:
            continue
        if (status == "open" and ack) or (status == "handled" and not ack):
            continue
        counts[a.kind] = counts.get(a.kind, 0) + 1
        if kind is not None and a.kind != kind:
            continue
        out.append({"key": key, "kind": a.kind, "order_ids": list(a.order_ids),
                    "orders": orders, "departments": sorted(named), "at": a.at.isoformat(),
                    "evidence": encode_plain(a.evidence), "ack": ack})
    return _json({"anomalies": out, "counts": counts})


async def api_anomaly_ack(request: web.Request) -> web.Response:
    """A supervisor marks a finding handled (已处理), with an optional note; audited."""
    wo, reader = await _reader(request)
    data = await read_json(request)
    key = text_field(data, "key", max_len=16)
    if len(key) != 16 or any(ch not in "0123456789abcdef" for ch in key):
        raise ApiError(400, "'key' must be an anomaly's key")
    note = text_field(data, "note", max_len=500, required=False)
    found = {anomaly_key(a): a for a in await wo.anomalies()}
    anomaly = found.get(key)
    if anomaly is None:
        raise ApiError(404, "no such anomaly (the detectors no longer find it)")
    c = request.app[CONSOLE]
    at = c.service.clock()
    await c.service.store.audit(at=at, actor=reader.username, role=reader.account_role.value,
                                action=ACK_ACTION, target=key, reason=note,
                                data={"kind": anomaly.kind, "orders": list(anomaly.order_ids)})
    log.info("anomaly acknowledged", kind=anomaly.kind, by=reader.username)
    return _json({"key": key, "ack": {"by": reader.username, "at": at, "note": note}})


INBOX_SENT_BACK = (str(Step.REFUSE_RETURN), str(Step.REJECT_COMPLETION), str(Step.REOPEN))
DUE_SOON = timedelta(hours=24)


async def api_inbox(request: web.Request) -> web.Response:
    """A department's 待办: new orders (dispatched, not signed for), orders sent back to it
    (return refused, completion rejected, reopened), supervised ones (督办), and those
    due within 24 hours or overdue — each list newest first, with a total to badge."""
    wo, reader = await _reader(request)
    if reader.department is None:
        raise ApiError(403, "the inbox is a department's")
    dept = reader.department
    now = wo.now()
    mine: list[Order] = []
    for state in (State.DISPATCHED, State.IN_PROGRESS, State.REPLIED):
        page, _ = await wo.list(state=str(state), department=dept, per_page=100)
        mine.extend(o for o in page if o.lead_department == dept)
    lists: dict[str, list[dict[str, Any]]] = {"new": [], "sent_back": [], "supervised": [],
                                               "due_soon": []}
    for order in sorted(mine, key=lambda o: o.updated_at, reverse=True):
        item = view(order, reader)
        trail = await wo.history(order.id)
        last_centre = next((r for r in reversed(trail) if str(r.step) in INBOX_SENT_BACK
                            or str(r.step) in (str(Step.DISPATCH), str(Step.REDISPATCH),
                                               str(Step.ACCEPT_RETURN))), None)
        if order.state is State.DISPATCHED and (last_centre is None or str(last_centre.step)
                                                 not in INBOX_SENT_BACK):
            lists["new"].append(item)
        if last_centre is not None and str(last_centre.step) in INBOX_SENT_BACK:
            lists["sent_back"].append(item | {"sent_back": {
                "step": str(last_centre.step), "reason": last_centre.reason,
                "at": last_centre.at.isoformat()}})
        if order.supervision is not None:
            lists["supervised"].append(item)
        due = min(order.handling_due, order.supervision.deadline) if order.supervision \
            else order.handling_due
        if order.state is not State.REPLIED and due - now <= DUE_SOON:
            lists["due_soon"].append(item | {"due": due.isoformat(), "overdue": due < now})
    lists["due_soon"].sort(key=lambda o: o["due"])
    return _json({"department": dept, **lists,
                  "total": sum(len(v) for v in lists.values())})


async def api_departments(request: web.Request) -> web.Response:
    wo, _ = await _reader(request)
    directory = wo.config.directory
    return _json({"centre": {"id": directory.centre.id, "name": directory.centre.name,
                             "name_en": directory.centre.name_en},
                  "departments": [{"id": d.id, "name": d.name, "name_en": d.name_en,
                                   "categories": list(d.categories)}
                                  for d in directory.departments]})


async def api_suggest(request: web.Request) -> web.Response:
    wo, _ = await _reader(request)
    text = request.query.get("text", "")
    if len(text) > MAX_TEXT:
        raise ApiError(413, f"'text' is too long (at most {MAX_TEXT} characters)")
    found = suggest_departments(text, wo.config.directory)
    return _json({"suggestions": [{"id": s.department.id, "name": s.department.name,
                                   "name_en": s.department.name_en, "score": s.score,
                                   "matched": list(s.matched)} for s in found]})


REPORT_COLUMNS = (
    "period", "start", "orders", "answered_calls", "acceptance_rate", "resolved_on_call_rate",
    "first_time_resolution_rate", "on_time_rate", "resolution_rate",
    "satisfaction_operator_answers", "satisfaction_operator_mean",
    "satisfaction_operator_satisfied_share", "satisfaction_department_answers",
    "satisfaction_department_mean", "satisfaction_department_satisfied_share",
    "returns_by_department",
)
REPORT_HEADERS = (
    "周期", "起始日", "工单数", "接通量", "受理率", "直接答复率", "一次办结率", "按时办结率",
    "解决率（市民确认）", "话务员满意度·评价数", "话务员满意度·均分", "话务员满意度·满意占比",
    "承办单位满意度·评价数", "承办单位满意度·均分", "承办单位满意度·满意占比", "退单（按单位）",
)
"""The CSV's Chinese column names (UTF-8 with BOM, so Excel reads them), in REPORT_COLUMNS order."""


def _day(request: web.Request, key: str, default: Any) -> Any:
    raw = request.query.get(key)
    if not raw:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, f"'{key}' must be a date YYYY-MM-DD") from None


async def api_report(request: web.Request) -> web.Response:
    wo, _ = await _reader(request)
    today = wo.now().date()
    end = _day(request, "to", today)
    start = _day(request, "from", end - timedelta(days=6))
    if start > end or (end - start).days > 366:
        raise ApiError(400, "'from' must be on or before 'to', at most 366 days apart")
    period = request.query.get("period", "day")
    if period not in ("day", "week"):
        raise ApiError(400, "'period' must be 'day' or 'week'")
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(400, "'format' must be 'json' or 'csv'")
    rows = await wo.report(start, end, period)
    if fmt == "json":
        return _json({"from": start.isoformat(), "to": end.isoformat(), "period": period,
                      "rows": rows})
    out = io.StringIO()
    writer = csv.writer(out)
    out.write("\ufeff")
    writer.writerow(REPORT_HEADERS)
    for row in rows:
        flat = dict(row)
        for side in ("operator", "department"):
            sat = flat.pop(f"satisfaction_{side}")
            for k, v in sat.items():
                flat[f"satisfaction_{side}_{k}"] = v
        flat["returns_by_department"] = ";".join(
            f"{k}={v}" for k, v in row["returns_by_department"].items())
        writer.writerow(["" if flat.get(c) is None else flat[c] for c in REPORT_COLUMNS])
    return web.Response(
        text=out.getvalue(), content_type="text/csv", charset="utf-8",
        headers={"Content-Disposition":
                 f'attachment; filename="orders-{start}-{end}-{period}.csv"'})


# --------------------------------------------------------------------------- OpenAPI


def _op(summary: str, roles: str, *, params: tuple[tuple[str, str, str], ...] = (),
        body: dict[str, Any] | None = None, errors: tuple[int, ...] = (401, 403),
        ok: int = 200, csrf: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "summary": summary,
        "description": f"Roles: {roles}." + (" Needs X-CSRF-Token." if csrf else ""),
        "parameters": [{"name": n, "in": where, "required": where == "path",
                        "schema": {"type": t}} for n, where, t in params],
        "responses": {str(ok): {"description": "OK", "content": {"application/json": {
            "schema": {"type": "object"}}}}} | {
            str(code): {"$ref": "#/components/responses/Error"} for code in errors},
    }
    if csrf:
        doc["parameters"].append({"name": "X-CSRF-Token", "in": "header", "required": True,
                                  "schema": {"type": "string"}})
    if body is not None:
        doc["requestBody"] = {"required": True,
                              "content": {"application/json": {"schema": body}}}
    return doc


def openapi() -> dict[str, Any]:
    """This API as an OpenAPI 3.1 document."""
    page_params = (("page", "query", "integer"), ("per_page", "query", "integer"))
    order_id = (("id", "path", "integer"),)
    create = {"type": "object", "required": ["text"], "properties": {
        "caller": {"type": "string", "maxLength": 40},
        "caller_name": {"type": "string", "maxLength": 120},
        "address": {"type": "string", "maxLength": 400},
        "call_uniqueid": {"type": "string", "maxLength": 64},
        "category": {"type": "string", "maxLength": 60},
        "text": {"type": "string", "maxLength": MAX_TEXT},
        "location": {"type": "string", "maxLength": 400},
        "urgency": {"enum": [str(u) for u in Urgency]},
        "confidential": {"type": "boolean"},
        "channel": {"enum": list(CHANNELS), "description": "where the request came in "
                    "(default phone)"}}}
    step = {"type": "object", "required": ["step"], "properties": {
        "step": {"enum": STEP_NAMES}, "reason": {"type": "string", "maxLength": 2000},
        "department": {"type": "string"}, "co_handlers": {"type": "array",
                                                          "items": {"type": "string"}},
        "text": {"type": "string"}, "answer": {"type": "string"},
        "deadline": {"type": "string", "format": "date-time"},
        "source": {"enum": ["citizen_keys", "operator_call"]},
        "resolved": {"type": "boolean"},
        "satisfaction_operator": {"enum": [1, 2, 3, None]},
        "satisfaction_department": {"enum": [1, 2, 3, None]},
        "call_id": {"type": "string", "maxLength": 64},
        "article_id": {"type": "integer", "description":
                       "resolve_on_call only: the knowledge-base article the answer came "
                       "from (counted in /api/knowledge/stats)"}}}
    staff = "operator, supervisor, admin, handler (own department)"
    return {
        "openapi": "3.1.0",
        "info": {"title": "hotline work orders", "version": "1",
                 "description": "12345 work orders: lifecycle steps are checked by the "
                                "pure core (callcenter.orders.lifecycle); errors are {\"error\": ...}."},
        "components": {
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie",
                                            "name": "hotline_session"},
                                "intakeKey": {"type": "apiKey", "in": "header",
                                              "name": "X-Api-Key"}},
            "responses": {"Error": {"description": "error", "content": {"application/json": {
                "schema": {"type": "object", "required": ["error"],
                           "properties": {"error": {"type": "string"}}}}}}},
            "schemas": {"ArticleWrite": ARTICLE_SCHEMA},
        },
        "security": [{"session": []}],
        "paths": {
            "/api/orders": {
                "post": _op("Accept a work order from a call; with Idempotency-Key a "
                            "retry answers 200 with the order filed before",
                            "operator, supervisor, admin", params=(
                                ("Idempotency-Key", "header", "string"),),
                            body=create, errors=(400, 401, 403, 409, 413), ok=201, csrf=True),
                "get": _op(
                    "Find work orders: q is an order number (or its start), a phone "
                    "number, the start of a caller's name or any words of the request; "
                    "state may list several (a,b); due=overdue|soon; confidential, mine, "
                    "followers (0 hides orders merged into another) are 1/0; sort is "
                    f"one of {', '.join(SORTS)}, '-' for descending; from/to are local "
                    "days; format=csv exports the page (per_page up to 5000). total "
                    "counts at most 1,000 (total_capped)", staff, params=(
                        ("q", "query", "string"), ("state", "query", "string"),
                        ("department", "query", "string"), ("category", "query", "string"),
                        ("urgency", "query", "string"), ("channel", "query", "string"),
                        ("from", "query", "string"), ("to", "query", "string"),
                        ("due", "query", "string"), ("confidential", "query", "string"),
                        ("mine", "query", "string"), ("followers", "query", "string"),
                        ("sort", "query", "string"), ("format", "query", "string"),
                        *page_params), errors=(400, 401, 403)),
            },
            "/api/orders/{id}": {"get": _op("A work order with its audit trail", staff,
                                            params=order_id, errors=(401, 403, 404))},
            "/api/orders/{id}/steps": {"post": _op(
                "Take one lifecycle step ('answer' records a citizen's answer heard on a "
                "recorded call)", "as the core allows", params=order_id, body=step,
                errors=(400, 401, 403, 404, 409, 413), csrf=True)},
            "/api/supervision/anomalies": {"get": _op(
                "Anomalies with kind and evidence", "supervisor, admin",
                params=(("kind", "query", "string"),))},
            "/api/departments": {"get": _op("The department directory", staff)},
            "/api/departments/suggest": {"get": _op(
                "Departments suggested for a text", staff, params=(("text", "query",
                                                                    "string"),))},
            "/api/reports/orders": {"get": _op(
                "Work-order figures per day or week (JSON or CSV)", "supervisor, admin",
                params=(("from", "query", "string"), ("to", "query", "string"),
                        ("period", "query", "string"), ("format", "query", "string")),
                errors=(400, 401, 403))},
            "/api/outbound": {"get": _op(
                "Call-backs and automatic return visits (status=manual: for an operator)",
                "supervisor, admin", params=(("status", "query", "string"),
                                             ("kind", "query", "string")),
                errors=(400, 401, 403))},
            "/api/orders/{id}/knowledge": {"post": _op(
                "Link the order to the knowledge-base article it was answered from: "
                "{article_id}", "operator, supervisor, admin", params=order_id,
                body={"type": "object", "required": ["article_id"],
                      "properties": {"article_id": {"type": "integer"}}},
                errors=(400, 401, 403, 404), csrf=True)},
            "/api/orders/duplicates": {"get": _op(
                "重复件 while taking a request: open orders with the same caller, the same "
                "place and category within 7 days, or nearly the same words; each with "
                "reasons (same_caller, same_place, similar_text) and similarity",
                "operator, supervisor, admin", params=(
                    ("caller", "query", "string"), ("location", "query", "string"),
                    ("category", "query", "string"), ("text", "query", "string")))},
            "/api/orders/{id}/duplicates": {"get": _op(
                "重复件 of an order (for the dispatcher)", "operator, supervisor, admin",
                params=order_id, errors=(401, 403, 404))},
            "/api/orders/{id}/merge": {"post": _op(
                "并案: the orders in 'followers' follow this lead order to its reply and "
                "completion (each keeps its own return visit); audited",
                "supervisor, admin", params=order_id, body={
                    "type": "object", "required": ["followers", "reason"], "properties": {
                        "followers": {"type": "array", "items": {"type": "integer"}},
                        "reason": {"type": "string", "maxLength": 2000}}},
                errors=(400, 401, 403, 404, 409), csrf=True)},
            "/api/orders/{id}/unmerge": {"post": _op(
                "Detach a follower from its lead order; audited", "supervisor, admin",
                params=order_id, body={"type": "object", "required": ["reason"],
                                       "properties": {"reason": {"type": "string"}}},
                errors=(400, 401, 403, 404, 409), csrf=True)},
            "/api/openapi.json": {"get": {"summary": "This document", "security": [],
                                          "responses": {"200": {"description": "OK"}}}},
            **openapi_paths(),
            **intake_paths(),
        },
    }


async def api_openapi(request: web.Request) -> web.Response:
    """The whole app's routes: these in detail, the rest from the permissions table."""
    return _json(complete(openapi()))
