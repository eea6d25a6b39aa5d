"""The HTTP edge's small rules: JSON errors, input checks, security headers, origins.

Every API answer that is not a success is ``{"error": "...", "error_zh": "..."}``
(one line in English, one in Chinese) with a status that says why (400 bad input,
401 no session, 403 not allowed, 404 unknown, 409 not now, 413 too large, 416 bad
range, 429 too many failed logins, 502/503/504 the PBX), and every refusal is one
log line.  Input that no handler should ever see is refused here, before any
handler runs: bodies that are not JSON objects, JSON nested deeper than
:data:`MAX_DEPTH`, and strings holding a lone UTF-16 surrogate (``"\ud800"`` is valid
JSON but cannot be encoded as UTF-8, so no database, log or PBX can take it).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

log = structlog.get_logger(__name__)

MAX_BODY = 64 * 1024
MAX_DEPTH = 16
"""Nesting of arrays and objects a request body may have (ours use 3)."""

ZH_BY_STATUS = {
    400: "请求有误", 401: "请先登录", 403: "无权执行此操作", 404: "未找到", 405: "不支持此方法",
    409: "当前状态不允许此操作", 413: "请求过大", 415: "不支持的内容类型", 416: "请求的范围无效",
    422: "请求无法处理", 429: "尝试次数过多，请稍后再试", 502: "交换机拒绝了此操作",
    503: "暂时无法处理，未执行任何操作", 504: "交换机未及时应答",
}
"""A Chinese reason per status, for refusals whose specific wording has none."""

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class ApiError(Exception):
    """An API request that cannot be served; becomes ``{"error": message}``."""

    def __init__(self, status: int, message: str, *, zh: str = "", **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra
        self.zh = zh or ZH_BY_STATUS.get(status, "请求失败")


def error_response(status: int, message: str, zh: str = "", **extra: Any) -> web.Response:
    return web.json_response(
        {"error": one_line(message), "error_zh": one_line(zh or ZH_BY_STATUS.get(
            status, "请求失败")), **extra}, status=status, headers={"Cache-Control": "no-store"})


def one_line(text: str) -> str:
    """A reason as one printable line (no control characters, no lone surrogates)."""
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text.encode("utf-8", "replace").decode("utf-8")[:300]


@web.middleware
async def json_errors(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """API failures as JSON; pages keep aiohttp's own answers."""
    api = request.path.startswith("/api/") or request.path == "/ws"
    try:
        return await handler(request)
    except ApiError as exc:
        headers = {"Retry-After": str(exc.extra["retry_after"])} if "retry_after" in exc.extra \
            else None
        _log_refusal(request, exc.status, exc.message)
        resp = error_response(exc.status, exc.message, exc.zh, **exc.extra)
        if headers:
            resp.headers.update(headers)
        return resp
    except web.HTTPException as exc:
        if not api or exc.status < 400:
            raise
        message = {404: "no such API route", 405: "method not allowed",
                   413: "request body too large",
                   416: "the requested byte range cannot be served"}.get(exc.status, exc.reason)
        _log_refusal(request, exc.status, message)
        resp = error_response(exc.status, message)
        for key in ("Content-Range", "Retry-After", "Allow"):  # what the status needs
            if key in exc.headers:
                resp.headers[key] = exc.headers[key]
        return resp
    except SQLAlchemyError:
        if not api:
            raise
        log.exception("database refused a request's write", path=request.path[:200])
        return error_response(503, "the database did not take this; nothing was changed",
                              "数据库未能写入，未做任何更改")
    except RecursionError:
        if not api:
            raise
        _log_refusal(request, 400, "input nested too deeply")
        return error_response(400, "input nested too deeply", "输入嵌套过深")
    except Exception:
        if not api:
            raise
        log.exception("API request failed", path=request.path)
        return error_response(500, "internal error")


def _log_refusal(request: web.Request, status: int, message: str) -> None:
    """One line per refused request (the path without its query; never a body)."""
    if status >= 500:
        log.warning("request failed", method=request.method, path=request.path[:200],
                    status=status, reason=one_line(message))
    else:
        log.info("request refused", method=request.method, path=request.path[:200],
                 status=status, reason=one_line(message))


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the same strict headers on every answer, static files too."""
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
    else:
        response.headers.setdefault("Cache-Control", "no-cache")


def same_origin(request: web.Request) -> bool:
    """False when the browser says the request comes from another site."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin == f"{request.scheme}://{request.host}"


async def read_json(request: web.Request, max_bytes: int = MAX_BODY) -> dict[str, Any]:
    """The request's JSON object, or ApiError 400/413."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, f"request body too large (at most {max_bytes} bytes)",
                       zh=f"请求体过大（最多 {max_bytes} 字节）")
    if request.content_type != "application/json":
        raise ApiError(400, "send JSON with Content-Type: application/json",
                       zh="请以 JSON 发送（Content-Type: application/json）")
    raw = await request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, f"request body too large (at most {max_bytes} bytes)",
                       zh=f"请求体过大（最多 {max_bytes} 字节）")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "request body is not valid JSON", zh="请求体不是有效的 JSON") from None
    except RecursionError:
        raise ApiError(400, f"request body nested deeper than {MAX_DEPTH} levels",
                       zh=f"请求体嵌套超过 {MAX_DEPTH} 层") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", zh="请求体必须是 JSON 对象")
    check_value(data)
    return data


def check_value(data: Any, where: str = "body") -> None:
    """Refuse JSON nested deeper than MAX_DEPTH and any string (key or value) with a lone
    surrogate; iterative, so no input can exhaust the stack."""
    stack: list[tuple[Any, int, str]] = [(data, 1, where)]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            if not encodable(value):
                raise ApiError(400, f"'{path}' holds a lone UTF-16 surrogate (not text)",
                               zh=f"“{path}”含有无效字符（孤立的 UTF-16 代理项）")
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise ApiError(400, f"request body nested deeper than {MAX_DEPTH} levels",
                           zh=f"请求体嵌套超过 {MAX_DEPTH} 层")
        if isinstance(value, dict):
            for k, v in value.items():
                name = k if encodable(k) else "?"
                if name == "?":
                    raise ApiError(400, "a key holds a lone UTF-16 surrogate (not text)",
                                   zh="字段名含有无效字符（孤立的 UTF-16 代理项）")
                stack.append((v, depth + 1, name[:40]))
        else:
            stack.extend((v, depth + 1, path) for v in value)


def encodable(text: str) -> bool:
    """True when ``text`` is real text (UTF-8 can carry it: no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_field(data: dict[str, Any], key: str, *, max_len: int, required: bool = True,
               strip: bool = True, default: str = "") -> str:
    """A string field of a JSON object, checked for type and length."""
    if key not in data or data[key] is None:
        if required:
            raise ApiError(400, f"'{key}' is required", zh=f"缺少“{key}”")
        return default
    value = data[key]
    if not isinstance(value, str):
        raise ApiError(400, f"'{key}' must be a string", zh=f"“{key}”必须是字符串")
    if strip:
        value = value.strip()
    if required and not value:
        raise ApiError(400, f"'{key}' must not be empty", zh=f"“{key}”不能为空")
    if len(value) > max_len:
        raise ApiError(413 if max_len >= 1000 else 400,
                       f"'{key}' is too long (at most {max_len} characters)",
                       zh=f"“{key}”过长（最多 {max_len} 个字符）")
    if "\x00" in value:
        raise ApiError(400, f"'{key}' must not contain NUL", zh=f"“{key}”不能包含 NUL 字符")
    if not encodable(value):
        raise ApiError(400, f"'{key}' holds a lone UTF-16 surrogate (not text)",
                       zh=f"“{key}”含有无效字符（孤立的 UTF-16 代理项）")
    return value


def list_field(data: dict[str, Any], key: str, *, max_items: int, max_len: int
               ) -> list[str] | None:
    """An optional list of short strings."""
    if key not in data or data[key] is None:
        return None
    value = data[key]
    if not isinstance(value, list) or len(value) > max_items:
        raise ApiError(400, f"'{key}' must be a list of at most {max_items} strings",
                       zh=f"“{key}”必须是最多 {max_items} 个字符串的列表")
    if not all(isinstance(v, str) and 0 < len(v) <= max_len and encodable(v) for v in value):
        raise ApiError(400, f"'{key}' must hold strings of 1 to {max_len} characters",
                       zh=f"“{key}”的每项必须是 1 到 {max_len} 个字符")
    return list(value)


def int_param(raw: str, name: str) -> int:
    """A path id: 1 to 18 ASCII digits (not "１", not "١"), else 404."""
    if not (0 < len(raw) <= 18 and raw.isascii() and raw.isdigit()):
        raise ApiError(404, f"no such {name}", zh="未找到")
    return int(raw)
