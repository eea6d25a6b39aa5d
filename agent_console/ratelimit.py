"""A general request rate limit on the web app (issue 12): per session first, per address
for what has no session.

Theory of operation
-------------------
Every request but the static files and the operations routes (``/healthz``,
``/readyz``, ``/metrics``: the load balancer and the scraper) takes one token from a
bucket (:class:`Buckets`, pure: time comes in as an argument).  The bucket is the
session's when the request carries the cookie of a session this app has seen signed
in (:meth:`RateLimiter.seen`, kept in memory, no database query), else the remote
address's.  So a centre floor of 300 operators behind one NAT address is never
slowed by each other: each signed-in operator has a bucket of their own, and only
sign-ins and unknown cookies share the address's (a made-up cookie cannot buy a
fresh bucket).  Past its bucket a request is answered 429 with ``Retry-After`` and
a reason in Chinese and English, and a log line.

Defaults (``[web]`` in the configuration): a session 20 requests/s with bursts of
200; an address without a session 50/s with bursts of 1,000 (a floor of several
hundred signing in at the start of a shift: the sign-in page and ``POST
/api/login`` each; a refused sign-in page says how many seconds to wait).  A person clicking through the console or wallboard stays
far below either (the live picture comes over one websocket); a script looping
over the API does not.  Memory is bounded: full buckets are forgotten first, and
at most ``max_keys`` are kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

import structlog
from aiohttp import web

from agent_console.auth import token_hash
from agent_console.http import ApiError
from agent_console.session import COOKIE, SESSION

log = structlog.get_logger(__name__)

EXEMPT_PREFIXES = ("/static/",)
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass(frozen=True, slots=True)
class RateSettings:
    """Requests per second and burst, per session and per address; 0 per second = off."""

    session_per_s: float = 20.0
    session_burst: int = 200
    address_per_s: float = 50.0
    address_burst: int = 1000
    #: Reverse proxies (nginx) whose ``X-Forwarded-For`` names the client: for a request
    #: from one of them the address is the last entry it appended, not the proxy's own.
    trusted_proxies: frozenset[str] = frozenset()



#: No request rate limit (0 per second is off), for a rig whose many clients all come
#: from one address: the bench's browsers and the API test rigs, all on 127.0.0.1.
UNLIMITED = RateSettings(0, 1, 0, 1)

class Buckets:
    """Token buckets by key: ``burst`` requests at once, then ``per_s`` a second (pure)."""

    def __init__(self, per_s: float, burst: int, max_keys: int = 50_000) -> None:
        if per_s <= 0 or burst < 1:
            raise ValueError("a bucket needs a positive rate and a burst of at least 1")
        self.per_s, self.burst, self.max_keys = per_s, float(burst), max_keys
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str, now: float) -> float:
        """0.0 when allowed (one token taken), else the seconds to wait."""
        tokens, at = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.per_s)
        if key not in self.buckets and len(self.buckets) >= self.max_keys:
            self.prune(now)
        if tokens >= 1.0:
            self.buckets[key] = (tokens - 1.0, now)
            return 0.0
        self.buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.per_s

    def prune(self, now: float) -> None:
        """Forget the buckets that are full again (nothing lost); if that is not enough,
        the oldest half."""
        full = [k for k, (tokens, at) in self.buckets.items()
                if tokens + (now - at) * self.per_s >= self.burst]
        for k in full:
            del self.buckets[k]
        if len(self.buckets) >= self.max_keys:
            for k in list(self.buckets)[: len(self.buckets) // 2]:
                del self.buckets[k]


class RateLimiter:
    """The app's limiter: session buckets, address buckets, the sessions seen."""

    def __init__(self, settings: RateSettings, clock: Callable[[], float],
                 cookie: str = COOKIE, max_sessions: int = 50_000) -> None:
        self.settings, self.clock, self.cookie = settings, clock, cookie
        self.sessions = (Buckets(settings.session_per_s, settings.session_burst)
                         if settings.session_per_s > 0 else None)
        self.addresses = (Buckets(settings.address_per_s, settings.address_burst)
                          if settings.address_per_s > 0 else None)
        self._seen: OrderedDict[str, None] = OrderedDict()  # session token hashes
        self.max_sessions = max_sessions
        self.refused = 0

    def seen(self, token: str) -> None:
        """A request with this cookie was served for a live session."""
        h = token_hash(token)
        self._seen[h] = None
        self._seen.move_to_end(h)
        while len(self._seen) > self.max_sessions:
            self._seen.popitem(last=False)

    def wait(self, token: str | None, address: str) -> float:
        """Seconds this request must wait (0.0: go on), its token taken."""
        now = self.clock()
        if token and len(token) <= 100 and token_hash(token) in self._seen:
            return 0.0 if self.sessions is None else self.sessions.take(token_hash(token), now)
        return 0.0 if self.addresses is None else self.addresses.take(address, now)

    def address(self, request: web.Request) -> str:
        """The client's address (:func:`client_address`)."""
        return client_address(request, self.settings.trusted_proxies)

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """The aiohttp middleware (after the JSON errors, before the permissions)."""
        @web.middleware
        async def rate_limit(request: web.Request,
                             handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                             ) -> web.StreamResponse:
            path = request.path
            if path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES):
                return await handler(request)
            token = request.cookies.get(self.cookie)
            address = self.address(request)
            wait = self.wait(token, address)
            if wait > 0:
                self.refused += 1
                log.warning("request rate limited", path=path, address=address,
                            by="session" if token and token_hash(token) in self._seen
                            else "address", wait_s=round(wait, 2))
                raise ApiError(429, "too many requests; slow down and retry later",
                               zh="请求过于频繁，请稍后再试", retry_after=max(1, round(wait + 0.5)))
            try:
                return await handler(request)
            finally:  # the session was looked up (by the permissions) and is live
                if token and request.get(SESSION) is not None:
                    self.seen(token)

        return rate_limit


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)


def client_address(request: web.Request, trusted_proxies: Collection[str]) -> str:
    """The client's address: the remote end, or behind a trusted proxy (nginx, or a
    ``callcenter web`` worker in front of the core) the last ``X-Forwarded-For``
    entry (nginx's ``$proxy_add_x_forwarded_for`` appends the address it saw; entries
    before it are the client's word and not trusted).

    The rate limit, the login brake and the web workers' relay all use it, so that
    behind a proxy none of them takes the whole floor for one address.
    """
    remote = request.remote or ""
    if remote in trusted_proxies:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if 0 < len(last) <= 45:
            return last
    return remote
