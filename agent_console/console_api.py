"""The operator console and the supervisor wallboard on aiohttp: pages, JSON API, ``/ws``.

Theory of operation
-------------------
Pages are static files; everything they show comes from ``/ws`` (see
:mod:`agent_console.hub`: a snapshot, then numbered updates, resumable) and
everything they do goes through the JSON API below.  The API never changes an
agent's state itself: it sends the AMI action (QueueAdd, QueuePause,
QueueRemove, Hangup, Redirect) and the screen moves when the PBX's events come
back through the service's consumer.

Routes (JSON unless said)::

    GET  /  /login  /console  /wallboard        pages (HTML)
    POST /api/login  {username, password}      -> {csrf, role, home, ...}; sets the cookie
    POST /api/logout                            GET /api/me
    GET  /api/live                              the caller's view (wallboard or own console)
    GET  /api/metrics                           supervisor: ``callcenter replay --json`` shape
    POST /api/agent/signin {queues?}  /api/agent/ready  /api/agent/pause {reason}
    POST /api/agent/signout
    POST /api/call/hangup {uniqueid}  /api/call/transfer {uniqueid, kind, target}
    GET  /api/calls/{uniqueid}/history          the caller's earlier calls and work orders
    GET  /api/drafts   POST /api/drafts {call_uniqueid?}
    GET|PUT /api/drafts/{id} {caller?, text?, fields?}   GET /api/work-orders/{id}
    POST /api/drafts/{id}/submit {outcome: accept|answer|dispatch, answer?, article_id?,
                                  department?}
    GET  /api/intake-form                       the intake form's lists (config/intake.toml)
    GET  /api/callers?number=                   lookup: a number's calls and work orders
    POST /api/supervisor/agents/{name}/ready|signout {reason}   (audited)
    GET  /api/fastagi/refusals                  FastAGI refusals (supervisors): newest first
    GET  /api/set-aside                         rows the database refused (supervisors)
    GET  /ws?stream=ID&seq=N                    live updates (session required)

Every POST/PUT needs the session's CSRF token in ``X-CSRF-Token`` (login aside,
which needs a JSON body and a same-origin request).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import structlog
from aiohttp import web

from agent_console.auth import (
    SESSION_MAX_S,
    User,
)
from agent_console.http import (
    ApiError,
    int_param,
    list_field,
    read_json,
    text_field,
)
from agent_console.hub import dumps
from agent_console.intake import IntakeError, clean_fields, order_parts, problems_for_submit
from agent_console.knowledge_api import KNOWLEDGE
from agent_console.models import Role
from agent_console.orders import DraftError, draft_fields, draft_json, order_json
from agent_console.orders_api import WORK_ORDERS
from agent_console.permissions import order_visible
from agent_console.ratelimit import RATE_LIMITER
from agent_console.session import (
    CONSOLE,
    COOKIE,
    RECORDINGS,
    Console,
    audited,
    current_session,
    home_for,
    need_operator,
    need_session,
    page,
    pbx,
)
from agent_console.views import (
    answered_by,
    call_belongs_to,
    operator_agent,
    operator_queues,
    operator_view,
)
from callcenter.orders.lifecycle import redact
from callcenter.orders.store import ACCOUNT_ROLES
from callcenter.pbx.ami import AmiError

log = structlog.get_logger(__name__)


async def root(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)
    raise web.HTTPFound(home_for(session.user) if session else "/login")


_login_form = page("login.html", None)


async def login_page(request: web.Request) -> web.StreamResponse:
    """The sign-in form; a browser already signed in goes to its account's home page (the
    back button from /console showed a sign-in form to a signed-in operator).  An account
    with no home page (``/login?none=1``) gets the form, saying so.  Never stored: a
    back or forward step to it asks again."""
    session = await current_session(request)
    if session is not None and not home_for(session.user).startswith("/login"):
        raise web.HTTPFound(home_for(session.user), headers={"Cache-Control": "no-store"})
    resp = await _login_form(request)
    resp.headers["Cache-Control"] = "no-store"
    return resp


# --------------------------------------------------------------------------- login


async def api_login(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    data = await read_json(request, 4096)
    username = text_field(data, "username", max_len=64)
    password = text_field(data, "password", max_len=256, strip=False)
    ip = request.app[RATE_LIMITER].address(request)  # behind nginx: the client, not nginx
    now = c.now()
    wait = c.throttle.retry_after(username, ip, now)
    if wait > 0:  # slowed, not locked: this account from this address only
        log.warning("login refused: too many failures", username=username, ip=ip)
        await c.service.store.audit(at=now, actor=username, role="", action="login_throttled",
                                    data={"ip": ip, "retry_after": math.ceil(wait)})
        raise ApiError(429, "too many failed sign-ins from here; wait and try again",
                       zh=f"登录失败次数过多，请 {math.ceil(wait)} 秒后再试",
                       retry_after=math.ceil(wait))
    user = await c.users.authenticate(username, password)
    if user is None:
        failures = c.throttle.failed(username, ip, now)
        log.warning("login failed", username=username, ip=ip, failures=failures)
        await c.service.store.audit(at=now, actor=username, role="", action="login_failed",
                                    data={"ip": ip, "failures": failures})
        if c.failure_delay:
            await asyncio.sleep(c.failure_delay)
        raise ApiError(401, "wrong username or password", zh="用户名或密码错误")
    c.throttle.succeeded(username, ip)
    if user.member_name:
        c.names[user.member_name] = user.display_name
    token, session = await c.users.open_session(user, ip)
    await c.service.store.audit(at=now, actor=user.username, role=user.role.value,
                                action="login", data={"ip": ip})
    log.info("signed in", username=user.username, role=user.role.value)
    resp = web.json_response({"csrf": session.csrf, "role": user.role.value,
                              "username": user.username, "display_name": user.display_name,
                              "home": home_for(user)})
    resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=request.secure,
                    path="/", max_age=SESSION_MAX_S)
    return resp


async def api_logout(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    session = await need_session(request)
    await c.users.close_session(session)
    await c.service.store.audit(at=c.now(), actor=session.user.username,
                                role=session.user.role.value, action="logout")
    resp = web.json_response({"ok": True})
    resp.del_cookie(COOKIE, path="/")
    return resp


async def api_me(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    session = await need_session(request)
    return web.json_response({"user": session.user.public(), "csrf": session.csrf,
                              "home": home_for(session.user), "config": c.config.public()},
                             dumps=dumps)


async def api_live(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    session = await need_session(request)
    now = c.now()
    if session.user.is_supervisor:
        doc = c.wall(now)
    else:  # the queue figures as they are now, not as operator screens last got them
        doc = operator_view(c.service.centre, c.tracker, session.user,
                            operator_queues(c.snapshot(now), c.service.centre))
    return web.json_response({"at": now, "data": doc}, dumps=dumps)


async def api_metrics(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    await need_session(request)
    return web.json_response(c.service.metrics_json(), dumps=dumps)


async def api_agent_signin(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    data = await read_json(request)
    offered = [q for q, _ in c.config.queues]
    wanted = list_field(data, "queues", max_items=50, max_len=80) or list(user.queues) or offered
    unknown = sorted(set(wanted) - set(offered))
    if unknown:
        raise ApiError(400, f"unknown queue {unknown[0]}")
    # A queue may be hosted by several PBXs ([[pbx]] queues): the operator becomes a
    # member on each of them that is up (their phone is reachable from every PBX hosting
    # their queues); a PBX that is down is skipped and named, unless all of them are.
    members = {a.pbx: a for a in c.service.members_of(user.interface, user.member_name)}
    multi = len(c.service.edges) > 1
    sent: list[str] = []
    sent_to: list[list[str]] = []
    skipped: list[list[str]] = []
    async with audited(c, user, "agent_signin", target=user.member_name or user.username,
                       data={"interface": user.interface, "queues": wanted,
                             "sent": sent, "sent_to": sent_to, "skipped": skipped}):
        for queue in wanted:
            hosts = c.service.pbxs_hosting(queue)
            up = [p for p in hosts if c.service.link_for(p).up] if multi else hosts
            for where in hosts:
                member = members.get(where)
                if member is not None and queue in member.memberships:
                    continue
                if where not in up and up:
                    skipped.append([queue, where])
                    continue
                await pbx(c, {"Action": "QueueAdd", "Queue": queue,
                              "Interface": user.interface,
                              "MemberName": user.member_name or user.username,
                              "Paused": "false"}, ignore=("already there",), to=where)
                sent_to.append([queue, where])
                if queue not in sent:
                    sent.append(queue)
    out: dict[str, Any] = {"ok": True, "queues": sent}
    if multi:
        out |= {"sent_to": sent_to, "skipped": skipped}
    return web.json_response(out)


async def api_agent_ready(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    agents = _signed_in(c, user)
    async with audited(c, user, "agent_ready", target=user.member_name or user.username,
                       data={"interface": user.interface, "pbxs": [a.pbx for a in agents]}):
        for a in agents:  # on every PBX the operator is a member on
            await pbx(c, {"Action": "QueuePause", "Interface": user.interface,
                          "Paused": "false"}, to=a.pbx)
    return web.json_response({"ok": True})


async def api_agent_pause(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    data = await read_json(request)
    reason = text_field(data, "reason", max_len=40)
    if reason not in c.config.pause_reasons:
        raise ApiError(400, f"unknown pause reason {reason!r}")
    agents = _signed_in(c, user)
    async with audited(c, user, "agent_pause", target=user.member_name or user.username,
                       reason=reason, data={"interface": user.interface,
                                            "pbxs": [a.pbx for a in agents]}):
        for a in agents:
            await pbx(c, {"Action": "QueuePause", "Interface": user.interface,
                          "Paused": "true", "Reason": reason}, to=a.pbx)
    return web.json_response({"ok": True})


async def api_agent_signout(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    agents = _signed_in(c, user)
    queues = sorted({q for a in agents for q in a.memberships})
    async with audited(c, user, "agent_signout", target=user.member_name or user.username,
                       data={"interface": agents[0].interface, "queues": queues,
                             "pbxs": [a.pbx for a in agents]}):
        for a in agents:
            for queue in sorted(a.memberships):
                await pbx(c, {"Action": "QueueRemove", "Queue": queue,
                              "Interface": a.interface}, ignore=("not there",), to=a.pbx)
    return web.json_response({"ok": True})


def _signed_in(c: Console, user: User) -> list[Any]:
    """The operator's members that are in a queue, one per PBX (409 when none)."""
    agents = [a for a in c.service.members_of(user.interface, user.member_name)
              if a.memberships]
    if not agents:
        raise ApiError(409, "not signed in to any queue")
    return agents


def _my_live_call(c: Console, user: User, data: dict[str, Any]) -> Any:
    uniqueid = text_field(data, "uniqueid", max_len=64)
    agent = operator_agent(c.service.centre, user)
    # The Uniqueid is the operator's PBX's: looked up there, never on another PBX.
    call = c.service.centre_of(agent.pbx).calls.get(uniqueid) if agent is not None else None
    if agent is None or call is None or agent.call != uniqueid:
        raise ApiError(409, "that call is not connected to you")
    if not call.channel:
        raise ApiError(409, "the caller's channel is not known")
    return call


async def api_call_hangup(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    call = _my_live_call(c, user, await read_json(request))
    async with audited(c, user, "hangup", target=call.uniqueid, data={"pbx": call.pbx}):
        await pbx(c, {"Action": "Hangup", "Channel": call.channel}, to=call.pbx)
    return web.json_response({"ok": True})


async def _dialplan_has(c: Console, exten: str, context: str, on: str = "") -> bool | None:
    """Whether Asterisk's dialplan (of PBX ``on``) would take ``exten@context`` (its own
    pattern rules), from ``Command: dialplan show exten@context``; None when the PBX
    would not say."""
    try:
        reply = await c.service.link_for(on).action(
            {"Action": "Command", "Command": f"dialplan show {exten}@{context}"},
            idempotent=True)
    except AmiError:
        return None
    first = reply[0] if isinstance(reply, list) and reply else reply
    if not isinstance(first, dict):
        return None
    output = str(first.get("Output", ""))
    if "There is no existence of" in output:
        return False
    if first.get("Response") == "Error" and "Command output follows" not in str(
            first.get("Message", "")):
        return None  # e.g. the manager user lacks "command": nothing known
    return True if "=>" in output else None


async def api_call_transfer(request: web.Request) -> web.Response:
    """Redirect the operator's caller to a queue or a department's line.

    The target must be in the configured list (the queues, departments.toml
    ``line``) and in Asterisk's dialplan: a Redirect to an extension the context
    lacks is answered "Redirect successful" and then drops the caller ("sent to
    invalid extension"), so it is checked first (409 ``transfer_target_missing``).
    """
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    data = await read_json(request)
    call = _my_live_call(c, user, data)
    kind = text_field(data, "kind", max_len=20)
    target = text_field(data, "target", max_len=80)
    if kind == "queue":
        allowed = {q for q, _ in c.config.queues}
    elif kind == "department":
        allowed = {n for n, _ in c.config.departments}
    else:
        raise ApiError(400, "'kind' must be 'queue' or 'department'")
    if target not in allowed:
        raise ApiError(400, f"unknown {kind} {target!r}", code="transfer_target_unknown")
    context = c.config.transfer_context
    async with audited(c, user, "transfer", target=call.uniqueid,
                       data={"kind": kind, "to": target, "pbx": call.pbx}):
        exists = await _dialplan_has(c, target, context, call.pbx)
        if exists is False:
            raise ApiError(409, f"the PBX has no extension {target}@{context}: the caller "
                                "stays with you", code="transfer_target_missing",
                           zh=f"交换机拨号计划中没有 {target}@{context}，未转接，来电仍在您这里")
        await pbx(c, {"Action": "Redirect", "Channel": call.channel,
                      "Context": context, "Exten": target, "Priority": "1"}, to=call.pbx)
    return web.json_response({"ok": True})


# --------------------------------------------------------------------------- supervisor


async def _supervise(request: web.Request, action: str) -> web.Response:
    c = request.app[CONSOLE]
    session = await need_session(request)
    name = request.match_info["name"]
    data = await read_json(request)
    reason = text_field(data, "reason", max_len=500)
    agent = c.service.centre.agent_by_name(name)
    if agent is None:
        raise ApiError(404, f"no agent {name}")
    # The operator's members on every PBX they are signed in on, each told by its PBX.
    agents = [a for a in c.service.members_of(agent.interface, name) if a.memberships]
    if not agents:
        raise ApiError(409, f"agent {name} is not signed in")
    async with audited(c, session.user, action, target=name, reason=reason,
                       data={"interface": agent.interface, "pbxs": [a.pbx for a in agents]}):
        for a in agents:
            if action == "force_ready":
                await pbx(c, {"Action": "QueuePause", "Interface": a.interface,
                              "Paused": "false"}, to=a.pbx)
            else:
                for queue in sorted(a.memberships):
                    await pbx(c, {"Action": "QueueRemove", "Queue": queue,
                                  "Interface": a.interface}, ignore=("not there",), to=a.pbx)
    return web.json_response({"ok": True})


async def api_fastagi_refusals(request: web.Request) -> web.Response:
    """What the FastAGI edge refused (an address not allowed, a bad header, a write
    without a valid token), from the audit log, newest first (at most 200)."""
    from sqlalchemy import select

    from callcenter.db import AuditRow

    c = request.app[CONSOLE]
    await need_session(request, Role.SUPERVISOR, Role.ADMIN)
    async with c.service.store.sessions() as s:
        rows = await s.scalars(select(AuditRow).where(AuditRow.action == "fastagi_refused")
                               .order_by(AuditRow.id.desc()).limit(200))
        items = [{"at": r.at, "peer": r.target, "why": r.reason, "details": r.data}
                 for r in rows]
    return web.json_response({"refusals": items})


async def api_set_aside(request: web.Request) -> web.Response:
    """Rows the database refused for their own sake (``set_aside`` table, issue 12),
    newest first, at most 200: ``{"rows": [{"at", "table", "error", "row"}],
    "total"}``; a caller's number in a row is masked as on the wallboard."""
    from sqlalchemy import func, select

    from callcenter.db import SetAsideRow
    from callcenter.service import mask_number

    c = request.app[CONSOLE]
    rows = await c.service.store.set_aside_rows(limit=200)
    async with c.service.store.sessions() as s:
        total = await s.scalar(select(func.count()).select_from(SetAsideRow))
    items = []
    for table, row, error, at in reversed(rows):
        if isinstance(row.get("caller_num"), str):
            row["caller_num"] = mask_number(row["caller_num"])
        items.append({"at": at, "table": table, "error": error, "row": row})
    return web.json_response({"rows": items, "total": total})


async def api_force_ready(request: web.Request) -> web.Response:
    return await _supervise(request, "force_ready")


async def api_force_signout(request: web.Request) -> web.Response:
    return await _supervise(request, "force_signout")


# --------------------------------------------------------------------------- history, drafts


async def api_history(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    session = await need_session(request)
    uniqueid = request.match_info["uniqueid"]
    if len(uniqueid) > 64:
        raise ApiError(404, "no such call")
    if session.user.is_supervisor:
        call = c.service.centre.calls.get(uniqueid)
    else:
        call = call_belongs_to(c.service.centre, session.user, uniqueid)
    if call is None:
        raise ApiError(404, "no such call of yours")
    history = await c.caller_history(call.caller_num)
    history["calls"] = [h for h in history.get("calls", []) if h.get("uniqueid") != uniqueid]
    store = request.app.get(RECORDINGS)
    user = session.user
    for h in history["calls"]:  # playable: supervisors any, an operator their own calls
        if store is not None and store.get(str(h.get("uniqueid", ""))) is not None and (
                user.is_supervisor or answered_by(user, h.get("agent"), h.get("interface"))):
            h["recording"] = f"/api/recordings/{h['uniqueid']}"
    return web.json_response({"caller": call.caller_num, **history}, dumps=dumps)


async def api_drafts(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    drafts = await c.orders.open_drafts(user.username)
    return web.json_response({"drafts": [draft_json(d) for d in drafts]}, dumps=dumps)


#: The IVR's CATEGORY codes that are also a 诉求类型 (the rest are topics, not types).
IVR_REQUEST_TYPES = {"consult": "consult", "complaint": "complaint",
                     "suggestion": "suggestion"}


async def api_draft_open(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    data = await read_json(request)
    uniqueid = text_field(data, "call_uniqueid", max_len=64, required=False) or None
    if uniqueid is None:
        draft = await c.orders.open_draft(user.username)
    else:
        call = call_belongs_to(c.service.centre, user, uniqueid)
        if call is None:
            raise ApiError(404, "no such call of yours")
        # Prefilled from the pop: the caller's number and name; the type if the IVR knew it.
        fields = {"caller_name": (call.caller_name or "")[:60], "reply_method": "phone"}
        if call.category in IVR_REQUEST_TYPES:
            fields["request_type"] = IVR_REQUEST_TYPES[call.category]
        draft = await c.orders.open_draft(user.username, uniqueid, caller=call.caller_num,
                                          fields=fields)
    return web.json_response(draft_json(draft), dumps=dumps)


async def _my_draft_id(request: web.Request) -> tuple[Console, User, int]:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    return c, user, int_param(request.match_info["id"], "draft")


async def api_draft_get(request: web.Request) -> web.Response:
    c, user, draft_id = await _my_draft_id(request)
    draft = await c.orders.draft(user.username, draft_id)
    if draft is None:
        raise ApiError(404, "no such draft of yours")
    return web.json_response(draft_json(draft), dumps=dumps)


async def api_draft_save(request: web.Request) -> web.Response:
    c, user, draft_id = await _my_draft_id(request)
    data = await read_json(request, 200_000)  # 20,000 characters, escaped
    fields: dict[str, Any] = {}
    for key, max_len in (("caller", 40), ("category", 60), ("text", 20000)):
        if key in data:
            fields[key] = text_field(data, key, max_len=max_len, required=False,
                                     strip=key != "text")
    if "fields" in data:
        try:
            fields["fields"] = clean_fields(c.intake, data["fields"])
        except IntakeError as exc:
            raise ApiError(400, str(exc), zh=exc.zh,
                           **({"code": exc.code} if exc.code else {})) from None
    try:
        draft = await c.orders.save_draft(user.username, draft_id, fields)
    except LookupError:
        raise ApiError(404, "no such draft of yours") from None
    except DraftError as exc:
        raise ApiError(409, str(exc)) from None
    return web.json_response(draft_json(draft), dumps=dumps)


SUBMIT_OUTCOMES = ("accept", "answer", "dispatch")


async def api_draft_submit(request: web.Request) -> web.Response:
    """受理 the draft as a work order: kept at the centre (accept), answered on the call
    (直接答复 / 当场办结, with the answer and optionally the knowledge-base article), or
    dispatched at once to a department.  Submitting twice returns the same order."""
    from callcenter.orders.lifecycle import IllegalStep, NotAllowed, Step, order_view, redact
    from callcenter.orders.store import AlreadyFiled, OrderConflict, account_actor

    c, user, draft_id = await _my_draft_id(request)
    data = await read_json(request, 200_000) if request.can_read_body else {}
    outcome = text_field(data, "outcome", max_len=16, required=False, default="accept")
    if outcome not in SUBMIT_OUTCOMES:
        raise ApiError(400, f"'outcome' must be one of {', '.join(SUBMIT_OUTCOMES)}")
    answer = text_field(data, "answer", max_len=4000, required=False)
    department = text_field(data, "department", max_len=64, required=False)
    wo = request.app[WORK_ORDERS]
    if outcome == "answer" and not answer:
        raise ApiError(400, "an answer on the call needs the answer given", missing=["answer"])
    article_id = await _article_for_answer(request, data.get("article_id"), outcome)
    if outcome == "dispatch" and not wo.config.knows(department):
        raise ApiError(400, "dispatch needs a known department", missing=["department"])
    draft = await c.orders.draft(user.username, draft_id)
    if draft is None:
        raise ApiError(404, "no such draft of yours")
    actor = account_actor(user.username, user.role.value, None, wo.config.directory.centre.id)
    if draft.work_order_id is not None:  # submitted before: the same order, nothing new
        order = await wo.get(str(draft.work_order_id))
        return web.json_response({"order": redact(order_view(order), actor.role),
                                  "number": order.number, "id": order.id}, dumps=dumps)
    fields = draft_fields(draft)
    missing = problems_for_submit(fields, draft.text, draft.caller)
    if missing:
        raise ApiError(400, "the order is not complete: " + ", ".join(missing), missing=missing)
    parts = order_parts(fields, draft.caller, str(article_id or ""))
    try:
        try:  # the draft's id is its idempotency key: a double click or a retry after a
            # crash between the order and the draft's mark never files a second order
            order, _ = await wo.create(actor, text=draft.text.strip(),
                                       call_uniqueid=draft.call_uniqueid, **parts,
                                       once=("draft", str(draft_id)))
        except AlreadyFiled as exc:
            if exc.order_id is None:
                raise ApiError(409, "this draft is being submitted right now; retry") from None
            order = await wo.get(str(exc.order_id))
            try:  # the service died before marking the draft: mark it and go on
                await c.orders.mark_submitted(user.username, draft_id, int(order.id),
                                              user.role.value, order.number)
            except DraftError:  # the other submit marked it and takes its steps
                return web.json_response({"order": redact(order_view(order), actor.role),
                                          "number": order.number, "id": order.id},
                                         dumps=dumps)
        else:
            await c.orders.mark_submitted(user.username, draft_id, int(order.id),
                                          user.role.value, order.number)
        if outcome == "answer":
            order, _ = await wo.step(order.id, Step.RESOLVE_ON_CALL, actor, answer=answer)
            if article_id is not None:  # which article answers the calls (the statistics)
                await request.app[KNOWLEDGE].record_use(article_id, int(order.id),
                                                        user.username)
        elif outcome == "dispatch":
            order, _ = await wo.step(order.id, Step.DISPATCH, actor, department=department)
    except IllegalStep as exc:
        raise ApiError(400, str(exc)) from None
    except NotAllowed as exc:
        raise ApiError(403, str(exc)) from None
    except OrderConflict as exc:
        raise ApiError(409, str(exc)) from None
    except DraftError as exc:
        raise ApiError(409, str(exc)) from None
    log.info("work order accepted", number=order.number, by=user.username, outcome=outcome)
    return web.json_response({"order": redact(order_view(order), actor.role),
                              "number": order.number, "id": order.id}, dumps=dumps)


async def _article_for_answer(request: web.Request, raw: Any, outcome: str) -> int | None:
    """The knowledge-base article a 直接答复 came from: an existing article id, or None."""
    if raw is None:
        return None
    if outcome != "answer":
        raise ApiError(400, "'article_id' goes with an answer on the call")
    if not isinstance(raw, int) or isinstance(raw, bool) or not 1 <= raw < 2**62:
        raise ApiError(400, "'article_id' must be a knowledge-base article id")
    try:
        await request.app[KNOWLEDGE].get(raw)
    except LookupError:
        raise ApiError(400, "'article_id' must be a knowledge-base article id") from None
    return raw


async def api_intake(request: web.Request) -> web.Response:
    """The intake form's lists: 诉求类型, 回复方式, the category tree, districts, and the
    IVR's category codes as names (``ivr_categories``: {code: {"zh", "en"}}).  Configuration
    only: departments read it too, for the names in the English UI."""
    c = request.app[CONSOLE]
    await need_session(request, Role.OPERATOR, Role.SUPERVISOR, Role.ADMIN, Role.HANDLER)
    lists = c.intake.public(request.app[WORK_ORDERS].config.directory)
    # The IVR's category codes (CATEGORY, shown in the pop and history) as names per language.
    lists["ivr_categories"] = c.ivr_categories
    # Whether the knowledge base's search is served (the console offers it for 直接答复).
    lists["knowledge"] = any(r.resource is not None and r.resource.canonical ==
                             "/api/knowledge/search" for r in request.app.router.routes())
    return web.json_response(lists, dumps=dumps)


async def api_caller_lookup(request: web.Request) -> web.Response:
    """An operator's lookup by phone number: that number's calls and work orders."""
    c = request.app[CONSOLE]
    session = await need_session(request, Role.OPERATOR, Role.SUPERVISOR, Role.ADMIN)
    number = request.query.get("number", "").strip()
    if not number or len(number) > 40 or not all(ch.isdigit() or ch in "+-" for ch in number):
        raise ApiError(400, "'number' must be a phone number (digits, + and -)")
    history = await c.caller_history(number)
    user = session.user
    for h in history.get("calls", []):
        h.pop("recording", None)
    log.info("caller looked up", by=user.username, orders=len(history.get("work_orders", [])))
    return web.json_response({"caller": number, **history}, dumps=dumps)


async def api_work_order(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    session = await need_session(request)
    order_id = int_param(request.match_info["id"], "work order")
    order = await c.orders.work_order(order_id)
    user = session.user
    full, department = None, None
    wo = request.app[WORK_ORDERS]
    if order is not None:
        full = await wo.get(str(order_id))
    if order is not None and user.role is Role.HANDLER:  # the same rule as /api/orders/{id}
        department = await wo.department_of(user.username)
    if order is None or full is None or not order_visible(user.role, department, full):
        raise ApiError(404, "no such work order", zh="未找到该工单")
    doc = order_json(order)
    # 保密件: the caller's number (also inside the text) as the reader's role may see it
    seen = redact({"caller_number": doc["caller"], "text": doc["text"],
                   "confidential": full.confidential}, ACCOUNT_ROLES[user.role.value])
    doc["caller"], doc["text"] = seen["caller_number"], seen["text"]
    if full.confidential and user.role is Role.SUPERVISOR:  # as on /api/orders/{id}
        await c.service.store.audit(at=c.service.clock(), actor=user.username,
                                    role=user.role.value,
                                    action="confidential_identity_viewed",
                                    target=full.number, data={"order_id": full.id})
    return web.json_response(doc, dumps=dumps)
