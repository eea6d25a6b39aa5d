"""The HTTP edge's small rules: JSON errors, input checks, security headers, origins.

Every API answer that is not a success is ``{"error": "..."}`` with a status that
says why (400 bad input, 401 no session, 403 not allowed, 404 unknown, 409 not
now, 413 too large, 429 too many failed logins, 502/503/504 the PBX).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

MAX_BODY = 64 * 1024

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

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status,
                             headers={"Cache-Control": "no-store"})


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
        resp = error_response(exc.status, exc.message, **exc.extra)
        if headers:
            resp.headers.update(headers)
        return resp
    except web.HTTPException as exc:
        if not api or exc.status < 400:
            raise
        message = {404: "no such API route", 405: "method not allowed",
                   413: "request body too large"}.get(exc.status, exc.reason)
        return error_response(exc.status, message)
    except Exception:
        if not api:
            raise
        log.exception("API request failed", path=request.path)
        return error_response(500, "internal error")


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
        raise ApiError(413, f"request body too large (at most {max_bytes} bytes)")
    if request.content_type != "application/json":
        raise ApiError(400, "send JSON with Content-Type: application/json")
    raw = await request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, f"request body too large (at most {max_bytes} bytes)")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def text_field(data: dict[str, Any], key: str, *, max_len: int, required: bool = True,
               strip: bool = True, default: str = "") -> str:
    """A string field of a JSON object, checked for type and length."""
    if key not in data or data[key] is None:
        if required:
            raise ApiError(400, f"'{key}' is required")
        return default
    value = data[key]
    if not isinstance(value, str):
        raise ApiError(400, f"'{key}' must be a string")
    if strip:
        value = value.strip()
    if required and not value:
        raise ApiError(400, f"'{key}' must not be empty")
    if len(value) > max_len:
        raise ApiError(413 if max_len >= 1000 else 400,
                       f"'{key}' is too long (at most {max_len} characters)")
    if "\x00" in value:
        raise ApiError(400, f"'{key}' must not contain NUL")
    return value


def list_field(data: dict[str, Any], key: str, *, max_items: int, max_len: int
               ) -> list[str] | None:
    """An optional list of short strings."""
    if key not in data or data[key] is None:
        return None
    value = data[key]
    if not isinstance(value, list) or len(value) > max_items:
        raise ApiError(400, f"'{key}' must be a list of at most {max_items} strings")
    if not all(isinstance(v, str) and 0 < len(v) <= max_len for v in value):
        raise ApiError(400, f"'{key}' must hold strings of 1 to {max_len} characters")
    return list(value)


def int_param(raw: str, name: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(404, f"no such {name}") from None
    if value < 0 or value > 2**62:
        raise ApiError(404, f"no such {name}")
    return value
