"""The intake API: a portal, WeChat mini-programme or the 12345 app files an order.

Route::

    POST /api/intake/orders
         X-Api-Key: hk_wechat_...          the channel's key (callcenter intake-keys create)
         Idempotency-Key: <client's id>    1-80 characters of [A-Za-z0-9._:-]; a retry with
                                           the same key never files twice
         {"text": "...", "caller": "138...", "caller_name": "...", "address": "...",
          "category": "...", "location": "...", "confidential": false}

Answers: 201 ``{"order": {"id", "number", "state", "channel", "accepted_at"}}`` for a
new order; 200 with the same body (and ``Idempotent-Replayed: true``) for a retry;
400 bad input; 401 no or bad key; 409 the same key is being filed right now (retry);
413 too large; 429 too many requests for this key (``Retry-After``).  No session,
no cookie, no CSRF token: the key is the credential (``csrf_guard`` lets
``/api/intake/`` through to this check).
"""

from __future__ import annotations

import json
import re
from typing import Any

import structlog
from aiohttp import web

from agent_console.http import ApiError, read_json, text_field
from callcenter.orders.intake import Filed, InFlight, Intake
from callcenter.orders.lifecycle import Caller, IllegalStep, NotAllowed
from callcenter.orders.store import WorkOrders

log = structlog.get_logger(__name__)

INTAKE = web.AppKey("intake", Intake)
CLIENT_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,80}$")
MAX_TEXT = 20_000
MAX_BODY = 200_000


def setup_intake(app: web.Application, work_orders: WorkOrders,
                 intake: Intake | None = None) -> Intake:
    """Add ``POST /api/intake/orders`` filing into ``work_orders``."""
    app[INTAKE] = intake or Intake(work_orders)
    app.router.add_post("/api/intake/orders", api_intake)
    return app[INTAKE]


def _answer(filed: Filed, channel: str) -> web.Response:
    o = filed.order
    doc = {"order": {"id": o.id, "number": o.number, "state": str(o.state), "channel": channel,
                     "accepted_at": o.accepted_at.isoformat()}}
    headers = {} if filed.created else {"Idempotent-Replayed": "true"}
    return web.json_response(doc, status=201 if filed.created else 200, headers=headers,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


async def api_intake(request: web.Request) -> web.Response:
    intake = request.app[INTAKE]
    found = await intake.authenticate(request.headers.get("X-Api-Key", ""))
    if found is None:
        raise ApiError(401, "a valid X-Api-Key is required")
    key_id, channel = found
    wait = intake.limit.take(key_id, intake.wo.clock())
    if wait > 0:
        raise ApiError(429, "too many requests for this key", retry_after=max(1, round(wait)))
    client_key = request.headers.get("Idempotency-Key", "")
    if not CLIENT_KEY.match(client_key):
        raise ApiError(400, "Idempotency-Key (1-80 of A-Z a-z 0-9 . _ : -) is required")
    data: dict[str, Any] = await read_json(request, MAX_BODY)
    confidential = data.get("confidential", False)
    if not isinstance(confidential, bool):
        raise ApiError(400, "'confidential' must be true or false")
    caller = Caller(name=text_field(data, "caller_name", max_len=120, required=False),
                    number=text_field(data, "caller", max_len=40, required=False),
                    address=text_field(data, "address", max_len=400, required=False))
    try:
        filed = await intake.file(
            channel, client_key, text=text_field(data, "text", max_len=MAX_TEXT),
            caller=caller, category=text_field(data, "category", max_len=60, required=False),
            location=text_field(data, "location", max_len=400, required=False),
            confidential=confidential)
    except InFlight:
        raise ApiError(409, "this Idempotency-Key is being filed right now; retry") from None
    except (IllegalStep, NotAllowed) as exc:
        raise ApiError(400, str(exc)) from None
    if filed.created:
        log.info("order filed by a channel", channel=channel, number=filed.order.number)
    return _answer(filed, channel)


def openapi_paths() -> dict[str, Any]:
    return {"/api/intake/orders": {"post": {
        "summary": "File an order from a portal, WeChat, the app, e-mail or the mayor's "
                   "mailbox (the key names the channel); idempotent by Idempotency-Key",
        "security": [{"intakeKey": []}],
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": True,
                        "schema": {"type": "string", "pattern": CLIENT_KEY.pattern}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["text"], "properties": {
                "text": {"type": "string", "maxLength": MAX_TEXT},
                "caller": {"type": "string", "maxLength": 40},
                "caller_name": {"type": "string", "maxLength": 120},
                "address": {"type": "string", "maxLength": 400},
                "category": {"type": "string", "maxLength": 60},
                "location": {"type": "string", "maxLength": 400},
                "confidential": {"type": "boolean"}}}}}},
        "responses": {"201": {"description": "filed"},
                      "200": {"description": "a retry: the order filed before"},
                      **{str(c): {"$ref": "#/components/responses/Error"}
                         for c in (400, 401, 409, 413, 429)}}}}}
