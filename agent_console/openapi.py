"""The whole app as one OpenAPI 3.1 document (``GET /api/openapi.json``).

The work-order, knowledge and intake modules describe their own routes in detail
(:func:`agent_console.orders_api.openapi`); :func:`complete` adds every other route of
the permissions table (:data:`agent_console.permissions.ROUTES`, which the suite keeps
equal to the app's router), with the request bodies and query parameters below, the
roles from the table, and the error answer every route shares.  So the document
describes every route, and ``tests/test_openapi_fuzz.py`` (schemathesis) can generate
requests for all of them.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from agent_console.permissions import ROUTES, Access

_STR = {"type": "string"}


def _obj(required: tuple[str, ...] = (), **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": props}


def _text(n: int) -> dict[str, Any]:
    return {"type": "string", "maxLength": n}


REASON = _text(500)
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/login"): _obj(("username", "password"), username=_text(64),
                                 password=_text(256)),
    ("POST", "/api/agent/signin"): _obj(queues={"type": "array", "items": _text(80),
                                                "maxItems": 50}),
    ("POST", "/api/agent/pause"): _obj(("reason",), reason=_text(40)),
    ("POST", "/api/call/hangup"): _obj(("uniqueid",), uniqueid=_text(64)),
    ("POST", "/api/call/transfer"): _obj(("uniqueid", "kind", "target"), uniqueid=_text(64),
                                         kind={"enum": ["queue", "department"]},
                                         target=_text(80)),
    ("POST", "/api/drafts"): _obj(call_uniqueid=_text(64)),
    ("PUT", "/api/drafts/{id}"): _obj(caller=_text(40), category=_text(60), text=_text(20000)),
    ("POST", "/api/supervisor/agents/{name}/ready"): _obj(("reason",), reason=REASON),
    ("POST", "/api/supervisor/agents/{name}/signout"): _obj(("reason",), reason=REASON),
    ("POST", "/api/supervise/{name}/spy"): _obj(("mode", "reason"), reason=REASON,
                                                mode={"enum": ["listen", "whisper", "barge"]}),
    ("POST", "/api/supervise/spy/stop"): _obj(reason=REASON),
}
"""Request bodies of the routes the other modules do not describe themselves."""

QUERIES: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("GET", "/ws"): (("stream", "string"), ("seq", "integer")),
    ("GET", "/login"): (("next", "string"),),
    ("GET", "/api/reports/summary"): (("period", "string"), ("day", "string"),
                                      ("queue", "string"), ("department", "string")),
    ("GET", "/api/reports/export.csv"): (("period", "string"), ("day", "string"),
                                         ("table", "string")),
    ("GET", "/api/reports/export.xlsx"): (("period", "string"), ("day", "string")),
}

PATH_TYPES = {"id": "integer", "version": "integer"}
ERRORS = (400, 401, 403, 404, 409, 413, 416, 429, 502, 503, 504)


def _roles(access: Access) -> str:
    if access.roles is None:
        return "anyone"
    names = ", ".join(sorted(r.value for r in access.roles))
    return names + (f" ({access.scope})" if access.scope else "")


def operation(method: str, path: str, access: Access) -> dict[str, Any]:
    """One route's operation, from its row and the tables above."""
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": PATH_TYPES.get(name, "string")}}
        for name in re.findall(r"{(\w+)}", path)]
    params += [{"name": name, "in": "query", "required": False, "schema": {"type": t}}
               for name, t in QUERIES.get((method, path), ())]
    if method not in ("GET", "HEAD") and path != "/api/login":
        params.append({"name": "X-CSRF-Token", "in": "header", "required": True,
                       "schema": _STR})
    ok: dict[str, Any] = {"description": "OK"}
    if path.startswith("/api/"):
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    doc: dict[str, Any] = {
        "summary": f"{method} {path}",
        "description": f"Roles: {_roles(access)}. Errors are "
                       '{"error": English, "error_zh": Chinese}.',
        "parameters": params,
        "responses": {"200": ok, "302": {"description": "a page redirects to sign in"}} | {
            str(code): {"$ref": "#/components/responses/Error"} for code in ERRORS},
    }
    if access.roles is None:
        doc["security"] = []
    body = BODIES.get((method, path))
    if body is None and method in ("POST", "PUT"):
        body = {"type": "object"}
    if body is not None:
        doc["requestBody"] = {"required": True,
                              "content": {"application/json": {"schema": body}}}
    return doc


def complete(base: dict[str, Any]) -> dict[str, Any]:
    """``base`` (the detailed work-order document) with every other route of the table."""
    doc = copy.deepcopy(base)
    paths = doc.setdefault("paths", {})
    for (method, path), access in sorted(ROUTES.items()):
        where = "/static/{filename}" if path == "/static" else path
        if method.lower() in paths.get(where, {}):
            continue
        paths.setdefault(where, {})[method.lower()] = operation(method, where, access)
    errors = doc.setdefault("components", {}).setdefault("responses", {})
    errors["Error"] = {"description": "refused: one line in English and one in Chinese",
                       "content": {"application/json": {"schema": {
                           "type": "object", "required": ["error"],
                           "properties": {"error": _STR, "error_zh": _STR}}}}}
    doc["info"]["title"] = "hotline console"
    return doc
