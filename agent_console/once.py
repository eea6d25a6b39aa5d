"""Forwarded actions done once: ``X-Action-Id``.

A web worker relays each state-changing request (sign-in, pause, transfer, listen-in,
an order's step ...) to the active core with an id it made for that browser request,
``X-Action-Id``, and sends it again, same id, when the core did not answer (a failover).
Without an id a repeat would run the action twice; with one the core answers a repeat
with the first answer and sends nothing to the PBX again.

Theory of operation (:func:`action_once`, the innermost middleware of the core's app,
after the session and CSRF checks)::

    request with X-Action-Id
      -> claim the id: INSERT forwarded_actions (id, actor, method, path)   [before anything]
      -> run the handler; audited() writes the id on its audit row
      -> store the answer on the claim (status, content type, body)

A repeat of an id (its INSERT conflicts), by the rule table :data:`REPEAT`:

==============================  ===============================================
the claim has its answer        that answer again (``X-Action-Repeat: first``)
still running on this core      wait for it, then its answer
no answer, an audit row has     409 ``action.answer_lost``: it ran (it may have
the id                          reached the PBX) on a core that died; not again
no answer, no audit row         the first never reached its audit row, so nothing
                                reached the PBX: it runs now
==============================  ===============================================

An answer of 503 means nothing was done (the audit row could not be written, or the
PBX link was down): it is not kept, so a retry runs.  The same id with another
account, method or path is refused (409).  Requests without the header run as before
(a browser talking to the core directly), and so do those of no signed-in account
(signing in and out: their answer is a cookie, and doing them twice is harmless; the
channels' API has its own ``Idempotency-Key``).  Ids are 8-64 of ``A-Z a-z 0-9 _ -``.
Claims are kept :data:`KEEP_S` (a day), then deleted: a retry comes within seconds, and
an answer may hold what the account saw.  The deleting is a periodic task of the app
(:func:`prune_ctx`, every :data:`PRUNE_EVERY_S`), never a request's work: a request does
not wait for it, and a prune that fails costs no request its answer.
The claim and the answer live in the shared database, so the standby that takes over
sees them (``tests/test_action_once.py``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from agent_console.http import ApiError, json_errors
from agent_console.session import SAFE_METHODS, current_session
from callcenter.db import ACTION_ID, AuditRow, ForwardedActionRow
from callcenter.runtime import periodic

log = structlog.get_logger(__name__)

HEADER = "X-Action-Id"
REPEAT_HEADER = "X-Action-Repeat"
VALID_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
MAX_BODY = 256 * 1024  # an answer kept whole up to this (the API's are a few hundred bytes)
KEEP_S = 86400.0  # a claim and its answer are deleted after a day
PRUNE_EVERY_S = 600.0
NOT_ACTIONS = frozenset({"/api/login", "/api/logout"})

#: What a repeat gets, by the state of its claim (the module doc's table; log lines).
REPEAT = {
    "answered": "first answer",
    "running": "wait, then the first answer",
    "audited": "409 action.answer_lost",
    "unaudited": "run now",
}

Answer = tuple[int, str, bytes]  # status, content type, body
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(eq=False)
class ActionLedger:
    """The claims and first answers of forwarded actions (``forwarded_actions``)."""

    engine: AsyncEngine
    clock: Callable[[], float]
    #: id -> ((actor, method, path), its answer to come): the ids running on this core
    running: dict[str, tuple[tuple[str, str, str], asyncio.Future[Answer]]] = field(
        default_factory=dict)

    def __post_init__(self) -> None:
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def claim(self, action_id: str, actor: str, method: str,
                    path: str) -> ForwardedActionRow | None:
        """None when the id is now ours; else the row of whoever claimed it first."""
        try:
            async with self.sessions() as s, s.begin():
                s.add(ForwardedActionRow(action_id=action_id, at=self.clock(), actor=actor,
                                         method=method, path=path[:200], status=None,
                                         content_type="", body=""))
            return None
        except IntegrityError:
            async with self.sessions() as s:
                return await s.get(ForwardedActionRow, action_id)

    async def prune(self) -> int:
        """Delete the claims older than :data:`KEEP_S`; how many went.  Raises
        SQLAlchemyError when the database is away (:func:`prune_ctx` tries again later)."""
        async with self.sessions() as s, s.begin():
            res = await s.execute(delete(ForwardedActionRow)
                                  .where(ForwardedActionRow.at < self.clock() - KEEP_S))
        return int(getattr(res, "rowcount", 0) or 0)

    async def audited(self, action_id: str) -> bool:
        async with self.sessions() as s:
            return await s.scalar(select(AuditRow.id).where(
                AuditRow.action_id == action_id).limit(1)) is not None

    async def answer(self, action_id: str, answer: Answer) -> None:
        status, content_type, body = answer
        async with self.sessions() as s, s.begin():
            if status == 503:  # nothing was done: a retry may run it
                await s.execute(delete(ForwardedActionRow)
                                .where(ForwardedActionRow.action_id == action_id))
                return
            await s.execute(update(ForwardedActionRow)
                            .where(ForwardedActionRow.action_id == action_id)
                            .values(status=status, content_type=content_type[:120],
                                    body=body.decode("utf-8", "replace"),
                                    answered_at=self.clock()))

    async def retake(self, action_id: str) -> None:
        """A claim whose first attempt never reached its audit row is ours now."""
        async with self.sessions() as s, s.begin():
            await s.execute(update(ForwardedActionRow)
                            .where(ForwardedActionRow.action_id == action_id)
                            .values(at=self.clock()))


LEDGER = web.AppKey("action_ledger", ActionLedger)
PRUNE_EVERY = web.AppKey("action_prune_every", float)  # seconds; PRUNE_EVERY_S unless set


async def prune_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's periodic prune of old claims (``app.cleanup_ctx``): at start, then every
    ``app[PRUNE_EVERY]`` s (:data:`PRUNE_EVERY_S`); a failure is logged and tried again
    at the next turn."""
    ledger = app[LEDGER]

    async def turn() -> None:
        gone = await ledger.prune()
        if gone:
            log.info("old action ids deleted", count=gone)

    # (the database away: logged, the next turn tries again)
    async with periodic("action-ids-prune", app.get(PRUNE_EVERY, PRUNE_EVERY_S), turn,
                        failed="could not delete old action ids"):
        yield


def _answer_of(resp: web.StreamResponse) -> Answer:
    body = resp.body if isinstance(resp, web.Response) else None
    data = bytes(body) if isinstance(body, bytes | bytearray) else b""
    if len(data) > MAX_BODY:
        data = b""
    return resp.status, resp.headers.get("Content-Type", ""), data


def _replay(answer: Answer) -> web.Response:
    status, content_type, body = answer
    headers = {REPEAT_HEADER: "first", "Cache-Control": "no-store"}
    if content_type:
        headers["Content-Type"] = content_type
    return web.Response(status=status, body=body, headers=headers)


def _not_yours() -> ApiError:
    """The refusal of an action id another account, method or path already used."""
    return ApiError(409, f"this {HEADER} belongs to another request", zh="该操作编号已用于另一请求")


@web.middleware
async def action_once(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The rule of the module doc for requests carrying ``X-Action-Id``."""
    action_id = request.headers.get(HEADER)
    if action_id is None or request.method in SAFE_METHODS:
        return await handler(request)
    if not VALID_ID.fullmatch(action_id):
        raise ApiError(400, f"{HEADER} must be 8-64 letters, digits, '_' or '-'")
    session = await current_session(request)
    if session is None or request.path in NOT_ACTIONS:
        return await handler(request)
    ledger = request.app[LEDGER]
    who = (session.user.username, request.method, request.path[:200])
    running = ledger.running.get(action_id)
    if running is not None:  # a repeat while the first runs on this core
        if running[0] != who:
            raise _not_yours()
        log.info("action repeated", action_id=action_id, path=who[2],
                 answer=REPEAT["running"])
        return _replay(await asyncio.shield(running[1]))
    # Reserved here before the claim, so a repeat arriving meanwhile waits for this one.
    done: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
    ledger.running[action_id] = (who, done)
    token = ACTION_ID.set(action_id)
    try:
        resp = await _once(request, handler, ledger, action_id, who)
        done.set_result(_answer_of(resp))
        return resp
    except asyncio.CancelledError:
        done.cancel()
        raise
    except BaseException as exc:
        done.set_exception(exc)
        done.exception()  # (retrieved: no "never retrieved" warning without waiters)
        raise
    finally:
        ACTION_ID.reset(token)
        ledger.running.pop(action_id, None)


async def _once(request: web.Request, handler: Handler, ledger: ActionLedger,
                action_id: str, who: tuple[str, str, str]) -> web.StreamResponse:
    actor, _method, path = who
    try:
        first = await ledger.claim(action_id, actor, request.method, path)
    except SQLAlchemyError:
        raise ApiError(503, "could not record the action's id; nothing was done",
                       zh="无法记录操作编号，未执行任何操作") from None
    if first is not None:
        if (first.actor, first.method, first.path) != who:
            raise _not_yours()
        if first.status is not None:
            log.info("action repeated", action_id=action_id, path=path,
                     answer=REPEAT["answered"])
            return _replay((first.status, first.content_type, first.body.encode()))
        if await ledger.audited(action_id):
            log.warning("action repeated", action_id=action_id, path=path,
                        answer=REPEAT["audited"])
            raise ApiError(409, "this action was received before a failover and may have "
                           "been done; its answer was lost, so it is not done again",
                           zh="该操作在主备切换前已收到，可能已执行；结果已丢失，不再重复执行",
                           code="action.answer_lost", action_id=action_id)
        log.info("action repeated", action_id=action_id, path=path,
                 answer=REPEAT["unaudited"])
        await ledger.retake(action_id)
    resp = await json_errors(request, handler)  # its answer, as the browser gets it
    try:
        await ledger.answer(action_id, _answer_of(resp))
    except SQLAlchemyError:  # a repeat then finds its audit row: answer_lost
        log.error("action answer not stored", action_id=action_id)
    return resp
