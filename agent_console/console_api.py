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
    GET|PUT /api/drafts/{id}   POST /api/drafts/{id}/submit   GET /api/work-orders/{id}
    POST /api/supervisor/agents/{name}/ready|signout {reason}   (audited)
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
from agent_console.models import Role
from agent_console.orders import DraftError, draft_json, order_json
from agent_console.session import (
    CONSOLE,
    COOKIE,
    RECORDINGS,
    Console,
    current_session,
    home_for,
    need_operator,
    need_session,
    pbx,
)
from agent_console.views import (
    answered_by,
    call_belongs_to,
    operator_agent,
    operator_queues,
    operator_view,
)
from callcenter.pbx.ami import AmiError

log = structlog.get_logger(__name__)


async def root(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)
    raise web.HTTPFound(home_for(session.user) if session else "/login")


# --------------------------------------------------------------------------- login


async def api_login(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    data = await read_json(request, 4096)
    username = text_field(data, "username", max_len=64)
    password = text_field(data, "password", max_len=256, strip=False)
    ip = request.remote or ""
    now = c.now()
    wait = c.throttle.retry_after(username, ip, now)
    if wait > 0:
        log.warning("login refused: too many failures", username=username, ip=ip)
        raise ApiError(429, "too many failed sign-ins; wait and try again",
                       retry_after=math.ceil(wait))
    user = await c.users.authenticate(username, password)
    if user is None:
        failures = c.throttle.failed(username, ip, now)
        log.warning("login failed", username=username, ip=ip, failures=failures)
        await c.service.store.audit(at=now, actor=username, role="", action="login_failed",
                                    data={"ip": ip, "failures": failures})
        if c.failure_delay:
            await asyncio.sleep(c.failure_delay)
        raise ApiError(401, "wrong username or password")
    c.throttle.succeeded(username)
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
    session = await need_session(request, Role.OPERATOR, Role.SUPERVISOR, Role.ADMIN)
    now = c.now()
    if session.user.is_supervisor:
        doc = c.wall(now)
    else:  # the queue figures as they are now, not as operator screens last got them
        doc = operator_view(c.service.centre, c.tracker, session.user,
                            operator_queues(c.snapshot(now), c.service.centre))
    return web.json_response({"at": now, "data": doc}, dumps=dumps)


async def api_metrics(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    await need_session(request, Role.SUPERVISOR, Role.ADMIN)
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
    agent = operator_agent(c.service.centre, user)
    already = set(agent.memberships) if agent else set()
    sent = []
    for queue in wanted:
        if queue in already:
            continue
        await pbx(c, {"Action": "QueueAdd", "Queue": queue, "Interface": user.interface,
                      "MemberName": user.member_name or user.username, "Paused": "false"},
                  ignore=("already there",))
        sent.append(queue)
    return web.json_response({"ok": True, "queues": sent})


async def api_agent_ready(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    _signed_in(c, user)
    await pbx(c, {"Action": "QueuePause", "Interface": user.interface, "Paused": "false"})
    return web.json_response({"ok": True})


async def api_agent_pause(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    data = await read_json(request)
    reason = text_field(data, "reason", max_len=40)
    if reason not in c.config.pause_reasons:
        raise ApiError(400, f"unknown pause reason {reason!r}")
    _signed_in(c, user)
    await pbx(c, {"Action": "QueuePause", "Interface": user.interface, "Paused": "true",
                  "Reason": reason})
    return web.json_response({"ok": True})


async def api_agent_signout(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    agent = _signed_in(c, user)
    for queue in sorted(agent.memberships):
        await pbx(c, {"Action": "QueueRemove", "Queue": queue, "Interface": agent.interface},
                  ignore=("not there",))
    return web.json_response({"ok": True})


def _signed_in(c: Console, user: User) -> Any:
    agent = operator_agent(c.service.centre, user)
    if agent is None or not agent.memberships:
        raise ApiError(409, "not signed in to any queue")
    return agent


def _my_live_call(c: Console, user: User, data: dict[str, Any]) -> Any:
    uniqueid = text_field(data, "uniqueid", max_len=64)
    agent = operator_agent(c.service.centre, user)
    call = c.service.centre.calls.get(uniqueid)
    if agent is None or call is None or agent.call != uniqueid:
        raise ApiError(409, "that call is not connected to you")
    if not call.channel:
        raise ApiError(409, "the caller's channel is not known")
    return call


async def api_call_hangup(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    call = _my_live_call(c, user, await read_json(request))
    await pbx(c, {"Action": "Hangup", "Channel": call.channel})
    await c.service.store.audit(at=c.now(), actor=user.username, role=user.role.value,
                                action="hangup", target=call.uniqueid)
    return web.json_response({"ok": True})


async def _dialplan_has(c: Console, exten: str, context: str) -> bool | None:
    """Whether Asterisk's dialplan would take ``exten@context`` (its own pattern rules),
    from ``Command: dialplan show exten@context``; None when the PBX would not say."""
    try:
        reply = await c.service.link.action(
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
    exists = await _dialplan_has(c, target, context)
    audit = {"kind": kind, "to": target, "dialplan": exists}
    if exists is False:
        await c.service.store.audit(at=c.now(), actor=user.username, role=user.role.value,
                                    action="transfer_refused", target=call.uniqueid,
                                    reason=f"{target}@{context} not in the dialplan",
                                    data=audit)
        raise ApiError(409, f"the PBX has no extension {target}@{context}: the caller "
                            "stays with you", code="transfer_target_missing")
    await c.service.store.audit(at=c.now(), actor=user.username, role=user.role.value,
                                action="transfer", target=call.uniqueid, data=audit)
    await pbx(c, {"Action": "Redirect", "Channel": call.channel,
                  "Context": context, "Exten": target, "Priority": "1"})
    return web.json_response({"ok": True})


# --------------------------------------------------------------------------- supervisor


async def _supervise(request: web.Request, action: str) -> web.Response:
    c = request.app[CONSOLE]
    session = await need_session(request, Role.SUPERVISOR, Role.ADMIN)
    name = request.match_info["name"]
    data = await read_json(request)
    reason = text_field(data, "reason", max_len=500)
    agent = c.service.centre.agent_by_name(name)
    if agent is None:
        raise ApiError(404, f"no agent {name}")
    if not agent.memberships:
        raise ApiError(409, f"agent {name} is not signed in")
    result = "ok"
    try:
        if action == "force_ready":
            await pbx(c, {"Action": "QueuePause", "Interface": agent.interface,
                          "Paused": "false"})
        else:
            for queue in sorted(agent.memberships):
                await pbx(c, {"Action": "QueueRemove", "Queue": queue,
                              "Interface": agent.interface}, ignore=("not there",))
    except ApiError as exc:
        result = exc.message
        raise
    finally:
        await c.service.store.audit(at=c.now(), actor=session.user.username,
                                    role=session.user.role.value, action=action,
                                    target=name, reason=reason,
                                    data={"interface": agent.interface, "result": result})
        log.info("supervisor action", action=action, agent=name, by=session.user.username,
                 result=result)
    return web.json_response({"ok": True})


async def api_force_ready(request: web.Request) -> web.Response:
    return await _supervise(request, "force_ready")


async def api_force_signout(request: web.Request) -> web.Response:
    return await _supervise(request, "force_signout")


# --------------------------------------------------------------------------- history, drafts


async def api_history(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    session = await need_session(request, Role.OPERATOR, Role.SUPERVISOR, Role.ADMIN)
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
        draft = await c.orders.open_draft(user.username, uniqueid, caller=call.caller_num,
                                          category=call.category)
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
    fields = {}
    for key, max_len in (("caller", 40), ("category", 60), ("text", 20000)):
        if key in data:
            fields[key] = text_field(data, key, max_len=max_len, required=False,
                                     strip=key != "text")
    try:
        draft = await c.orders.save_draft(user.username, draft_id, fields)
    except LookupError:
        raise ApiError(404, "no such draft of yours") from None
    except DraftError as exc:
        raise ApiError(409, str(exc)) from None
    return web.json_response(draft_json(draft), dumps=dumps)


async def api_draft_submit(request: web.Request) -> web.Response:
    c, user, draft_id = await _my_draft_id(request)
    try:
        order = await c.orders.submit(user.username, draft_id)
    except LookupError:
        raise ApiError(404, "no such draft of yours") from None
    except DraftError as exc:
        raise ApiError(409, str(exc)) from None
    log.info("work order accepted", number=order.number, by=user.username)
    return web.json_response(order_json(order), dumps=dumps)


async def api_work_order(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    session = await need_session(request)
    order = await c.orders.work_order(int_param(request.match_info["id"], "work order"))
    if order is None or not (session.user.is_supervisor
                             or order.created_by == session.user.username):
        raise ApiError(404, "no such work order")
    return web.json_response(order_json(order), dumps=dumps)
