"""Recording playback over HTTP: one aiohttp handler with Range support, role checks, audit.

``recording_handler(store, authorize=..., audit=...)`` returns a handler for a
route such as ``GET /api/recordings/{uniqueid}``.  ``authorize(request)``
returns the actor (anything with a ``role``) or None; no actor is 401, a role
outside ``roles`` is 403, an unknown call 404.  Every playback request that
passes these checks is handed to ``audit(actor, uniqueid)`` before a byte is
sent.  A single byte range (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) gives
206 with Content-Range; an unsatisfiable or malformed one 416 with
``Content-Range: bytes */size``; several ranges or another unit are ignored
and the whole file is sent, as RFC 9110 allows.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import structlog
from aiohttp import web

from recordings.store import RECORDING_KEY, RecordingStore, UnsafePath

log = structlog.get_logger("recordings.http")

CHUNK = 64 * 1024
# ASCII digits only, at most 18 (a 5,000-digit number is not a byte offset: 416, not 500)
_RANGE = re.compile(r"^\s*([0-9]{0,18})\s*-\s*([0-9]{0,18})\s*$", re.ASCII)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RangeNotSatisfiable(ValueError):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range ``(first, last)`` asked for, None for the whole file.

    Raises :class:`RangeNotSatisfiable` for a bad or unsatisfiable bytes range.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    m = _RANGE.match(spec)
    if m is None or not (m[1] or m[2]):
        raise RangeNotSatisfiable(header)
    if not m[1]:  # suffix: the last n bytes
        n = int(m[2])
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - n), size - 1
    first = int(m[1])
    last = int(m[2]) if m[2] else size - 1
    if first >= size or last < first:
        raise RangeNotSatisfiable(header)
    return first, min(last, size - 1)


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def recording_handler(
    store: RecordingStore,
    *,
    authorize: Callable[[web.Request], Any],
    audit: Callable[[Any, str], Any],
    roles: Collection[str] = ("supervisor", "admin"),
    own_call: Callable[[Any, str], Any] | None = None,
    content_type: str = "audio/wav",
) -> Handler:
    """An aiohttp handler streaming ``store``'s recording of ``match_info['uniqueid']``.

    ``roles`` may play any recording; with ``own_call(actor, uniqueid)`` another
    actor (an operator) may play the calls it returns True for (their own).
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        actor = await _maybe(authorize(request))
        if actor is None:
            raise web.HTTPUnauthorized(text="log in to play recordings")
        uniqueid = request.match_info.get("uniqueid", "")
        if str(getattr(actor, "role", "")) not in roles and not (
                own_call is not None and RECORDING_KEY.match(uniqueid)
                and await _maybe(own_call(actor, uniqueid))):
            raise web.HTTPForbidden(text="your role may not play this recording")
        if not RECORDING_KEY.match(uniqueid):
            raise web.HTTPNotFound(text="no such recording")
        try:
            path = store.file(uniqueid)
        except UnsafePath:
            log.warning("recording_path_refused", uniqueid=uniqueid)
            raise web.HTTPNotFound(text="no such recording") from None
        if path is None or not path.is_file():
            raise web.HTTPNotFound(text="no such recording")
        size = path.stat().st_size
        try:
            wanted = parse_range(request.headers.get("Range"), size)
        except RangeNotSatisfiable:
            raise web.HTTPRequestRangeNotSatisfiable(
                headers={"Content-Range": f"bytes */{size}"}) from None
        await _maybe(audit(actor, uniqueid))
        log.info("recording_played", uniqueid=uniqueid, actor=getattr(actor, "username", None),
                 range=(request.headers.get("Range") or "")[:60])
        first, last = wanted if wanted is not None else (0, size - 1)
        resp = web.StreamResponse(status=206 if wanted is not None else 200)
        resp.headers["Accept-Ranges"] = "bytes"
        resp.headers["Cache-Control"] = "private, no-store"
        resp.content_type = content_type
        resp.content_length = max(0, last - first + 1)
        if wanted is not None:
            resp.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        with path.open("rb") as f:
            f.seek(first)
            left = last - first + 1
            while left > 0:
                chunk = await asyncio.to_thread(f.read, min(CHUNK, left))
                if not chunk:
                    break
                await resp.write(chunk)
                left -= len(chunk)
        await resp.write_eof()
        return resp

    return handler
