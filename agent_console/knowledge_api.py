"""The knowledge-base API (知识库): search as the operator types, articles, statistics.

Routes (JSON unless said; errors are ``{"error": ...}``)::

    GET  /knowledge                                  supervisors' page (HTML)
    GET  /api/knowledge/search?q=&category=&limit=   staff: ranked valid articles
    GET  /api/knowledge/categories                   staff: categories with counts
    GET  /api/knowledge/articles?status=&category=&page=&per_page=
    GET  /api/knowledge/articles/{id}                staff: article + version history
    GET  /api/knowledge/articles/{id}/versions/{v}   staff: the text as it was at v
    POST /api/knowledge/articles                     supervisor, admin: create
    PUT  /api/knowledge/articles/{id}                supervisor, admin: edit {version, ...}
    POST /api/knowledge/articles/{id}/retire         supervisor, admin: {version, note?}
    POST /api/knowledge/articles/{id}/restore        supervisor, admin: {version, note?}
    GET  /api/knowledge/stats?days=                  supervisor, admin: top articles,
                                                     searches that found nothing

Searching from the console (for the intake screen)
--------------------------------------------------
``GET /api/knowledge/search?q=社保卡补办&category=社会保障`` (any signed-in staff
account; ``q`` at most 100 characters, ``limit`` 1–50, default 10) answers::

    {"query": "社保卡补办", "category": "社会保障",
     "hits": [{"id": 12, "title": "...", "category": "社会保障/社保卡", "department":
               "hrss", "excerpt": "...", "score": 7.31, "version": 3,
               "valid_to": "2026-12-31" | null}, ...]}

Hits are ranked, best first; retired articles and articles outside their validity
window never appear; ``category`` narrows to that category and the ones below it.
Each search is logged for the statistics (a search with no hit is a gap in the base).

Answering from an article: take the order's ``resolve_on_call`` step with
``article_id`` beside ``answer`` (``POST /api/orders/{id}/steps {"step":
"resolve_on_call", "answer": "...", "article_id": 12}``), or link an order to an
article afterwards with ``POST /api/orders/{id}/knowledge {"article_id": 12}``;
both are in :mod:`agent_console.orders_api` and its OpenAPI document.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from agent_console.http import ApiError, int_param, read_json
from agent_console.models import Role
from agent_console.session import CONSOLE, need_session, page
from callcenter.orders.knowledge import (
    MAX_QUERY,
    Article,
    ArticleConflict,
    ArticleError,
    ArticleNotFound,
    Hit,
    KnowledgeBase,
)

KNOWLEDGE = web.AppKey("knowledge", KnowledgeBase)
READERS = (Role.OPERATOR, Role.SUPERVISOR, Role.ADMIN, Role.HANDLER)
WRITERS = (Role.SUPERVISOR, Role.ADMIN)
MAX_BODY = 128 * 1024


def setup_knowledge(app: web.Application, kb: KnowledgeBase | None = None) -> KnowledgeBase:
    """Add the knowledge-base routes to the console's app (called once from make_app)."""
    service = app[CONSOLE].service
    kb = kb or KnowledgeBase(service.store.engine, service.settings.tz, clock=service.clock)
    app[KNOWLEDGE] = kb
    r = app.router
    r.add_get("/knowledge", page("knowledge.html", lambda u: u.role in READERS))
    r.add_get("/api/knowledge/search", api_search)
    r.add_get("/api/knowledge/categories", api_categories)
    r.add_get("/api/knowledge/articles", api_articles)
    r.add_post("/api/knowledge/articles", api_create)
    r.add_get("/api/knowledge/articles/{id}", api_article)
    r.add_put("/api/knowledge/articles/{id}", api_edit)
    r.add_post("/api/knowledge/articles/{id}/retire", api_retire)
    r.add_post("/api/knowledge/articles/{id}/restore", api_restore)
    r.add_get("/api/knowledge/articles/{id}/versions/{version}", api_version)
    r.add_get("/api/knowledge/stats", api_stats)
    return kb


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.json_response(doc, status=status,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False, default=str))


def _int(request: web.Request, key: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(key)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"'{key}' must be a whole number") from None
    if not low <= value <= high:
        raise ApiError(400, f"'{key}' must be between {low} and {high}")
    return value


def hit_json(hit: Hit, kb: KnowledgeBase) -> dict[str, Any]:
    a = hit.article.json(kb.tz)
    return {"id": a["id"], "title": a["title"], "category": a["category"],
            "department": a["department"], "keywords": a["keywords"], "excerpt": hit.excerpt,
            "score": round(hit.score, 4), "version": a["version"], "valid_to": a["valid_to"]}


async def api_search(request: web.Request) -> web.Response:
    session = await need_session(request, *READERS)
    kb = request.app[KNOWLEDGE]
    q = request.query.get("q", "")
    if len(q) > MAX_QUERY:
        raise ApiError(400, f"'q' is too long (at most {MAX_QUERY} characters)")
    category = request.query.get("category", "")
    if len(category) > 120:
        raise ApiError(400, "'category' is too long (at most 120 characters)")
    limit = _int(request, "limit", 10, 1, 50)
    hits = await kb.search(q, category=category, limit=limit, actor=session.user.username)
    return _json({"query": q.strip(), "category": category,
                  "hits": [hit_json(h, kb) for h in hits]})


async def api_categories(request: web.Request) -> web.Response:
    await need_session(request, *READERS)
    found = await request.app[KNOWLEDGE].categories()
    return _json({"categories": [{"category": c, "articles": n} for c, n in found]})


async def api_articles(request: web.Request) -> web.Response:
    await need_session(request, *READERS)
    kb = request.app[KNOWLEDGE]
    status = request.query.get("status") or None
    if status not in (None, "active", "retired"):
        raise ApiError(400, "'status' must be 'active' or 'retired'")
    category = request.query.get("category", "")[:120]
    page_no = _int(request, "page", 1, 1, 100_000)
    per_page = _int(request, "per_page", 50, 1, 200)
    articles, total = await kb.list(status=status, category=category, page=page_no,
                                    per_page=per_page)
    return _json({"articles": [a.json(kb.tz) for a in articles], "total": total,
                  "page": page_no, "per_page": per_page})


async def _article_id(request: web.Request) -> int:
    return int_param(request.match_info["id"], "article")


async def api_article(request: web.Request) -> web.Response:
    await need_session(request, *READERS)
    kb = request.app[KNOWLEDGE]
    key = await _article_id(request)
    try:
        article = await kb.get(key)
    except ArticleNotFound:
        raise ApiError(404, "no such article") from None
    return _json({"article": article.json(kb.tz), "history": await kb.history(key),
                  "valid_now": article.valid_at(kb.clock())})


async def api_version(request: web.Request) -> web.Response:
    await need_session(request, *READERS)
    kb = request.app[KNOWLEDGE]
    key = await _article_id(request)
    version = int_param(request.match_info["version"], "version")
    content = await kb.version(key, version)
    if content is None:
        raise ApiError(404, "no such version of that article")
    return _json({"id": key, "version": version, "content": content})


def _version_of(data: dict[str, Any]) -> int:
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ApiError(400, "'version' (the version you edited) must be a positive integer")
    return version


def _note(data: dict[str, Any]) -> str:
    note = data.get("note", "")
    if not isinstance(note, str) or len(note) > 2000:
        raise ApiError(400, "'note' must be a string of at most 2000 characters")
    return note.strip()


async def _write(request: web.Request, action: str) -> Article:
    session = await need_session(request, *WRITERS)
    kb = request.app[KNOWLEDGE]
    data = await read_json(request, MAX_BODY)
    actor = session.user.username
    try:
        if action == "create":
            return await kb.create(data, actor, note=_note(data))
        key = await _article_id(request)
        version = _version_of(data)
        if action == "edit":
            fields = {k: v for k, v in data.items() if k not in ("version", "note")}
            return await kb.edit(key, fields, actor, version=version, note=_note(data))
        if action == "retire":
            return await kb.retire(key, actor, version=version, note=_note(data))
        return await kb.restore(key, actor, version=version, note=_note(data))
    except ArticleError as exc:
        raise ApiError(400, str(exc)) from None
    except ArticleNotFound:
        raise ApiError(404, "no such article") from None
    except ArticleConflict as exc:
        raise ApiError(409, str(exc)) from None


async def api_create(request: web.Request) -> web.Response:
    article = await _write(request, "create")
    return _json({"article": article.json(request.app[KNOWLEDGE].tz)}, 201)


async def api_edit(request: web.Request) -> web.Response:
    article = await _write(request, "edit")
    return _json({"article": article.json(request.app[KNOWLEDGE].tz)})


async def api_retire(request: web.Request) -> web.Response:
    article = await _write(request, "retire")
    return _json({"article": article.json(request.app[KNOWLEDGE].tz)})


async def api_restore(request: web.Request) -> web.Response:
    article = await _write(request, "restore")
    return _json({"article": article.json(request.app[KNOWLEDGE].tz)})


async def api_stats(request: web.Request) -> web.Response:
    await need_session(request, *WRITERS)
    kb = request.app[KNOWLEDGE]
    days = _int(request, "days", 30, 1, 366)
    return _json(await kb.stats(since=kb.clock() - days * 86400))


def openapi_paths() -> dict[str, Any]:
    """This module's routes for the console's OpenAPI document."""
    def op(summary: str, roles: str, params: tuple[str, ...] = (), body: bool = False,
           ok: int = 200, errors: tuple[int, ...] = (400, 401, 403)) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "summary": summary, "description": f"Roles: {roles}.",
            "parameters": [{"name": p, "in": "path" if p in ("id", "version") else "query",
                            "required": p in ("id", "version"),
                            "schema": {"type": "integer" if p in (
                                "id", "version", "limit", "page", "per_page", "days")
                                else "string"}} for p in params],
            "responses": {str(ok): {"description": "OK"}} | {
                str(c): {"$ref": "#/components/responses/Error"} for c in errors}}
        if body:
            doc["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ArticleWrite"}}}}
            doc["parameters"].append({"name": "X-CSRF-Token", "in": "header",
                                      "required": True, "schema": {"type": "string"}})
        return doc

    staff = "operator, supervisor, admin, handler"
    writers = "supervisor, admin"
    return {
        "/api/knowledge/search": {"get": op(
            "Search valid articles as the operator types (ranked; expired and retired "
            "hidden; category narrows to it and below). Answer: {query, category, hits: "
            "[{id, title, category, department, keywords, excerpt, score, version, "
            "valid_to}]}", staff, ("q", "category", "limit"))},
        "/api/knowledge/categories": {"get": op("Categories with active articles", staff)},
        "/api/knowledge/articles": {
            "get": op("Articles, most recently changed first", staff,
                      ("status", "category", "page", "per_page")),
            "post": op("Write an article", writers, body=True, ok=201, errors=(
                400, 401, 403, 413))},
        "/api/knowledge/articles/{id}": {
            "get": op("An article and its version history (who changed what)", staff,
                      ("id",), errors=(401, 403, 404)),
            "put": op("Edit an article: {version (the one edited), note?, fields...}",
                      writers, ("id",), body=True, errors=(400, 401, 403, 404, 409))},
        "/api/knowledge/articles/{id}/retire": {"post": op(
            "Retire an article (kept, no longer found): {version, note?}", writers, ("id",),
            body=True, errors=(400, 401, 403, 404, 409))},
        "/api/knowledge/articles/{id}/restore": {"post": op(
            "Bring a retired article back: {version, note?}", writers, ("id",), body=True,
            errors=(400, 401, 403, 404, 409))},
        "/api/knowledge/articles/{id}/versions/{version}": {"get": op(
            "The article's content at one version", staff, ("id", "version"),
            errors=(401, 403, 404))},
        "/api/knowledge/stats": {"get": op(
            "Articles that answered most orders; searches that found nothing", writers,
            ("days",))},
    }


ARTICLE_SCHEMA = {"type": "object", "properties": {
    "title": {"type": "string", "maxLength": 200},
    "body": {"type": "string", "maxLength": 20000},
    "category": {"type": "string", "maxLength": 120, "description": "path, e.g. 社会保障/社保卡"},
    "keywords": {"type": "string", "maxLength": 400},
    "department": {"type": "string", "maxLength": 64},
    "valid_from": {"type": ["string", "null"], "format": "date"},
    "valid_to": {"type": ["string", "null"], "format": "date",
                 "description": "last valid day, inclusive"},
    "version": {"type": "integer", "description": "edits: the version edited"},
    "note": {"type": "string", "maxLength": 2000}}}
