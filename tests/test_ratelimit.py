"""The general request rate limit (agent_console/ratelimit.py): per session first, per
address for requests without one; 429 with Retry-After and a reason in both languages."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent_console.auth import LoginThrottle
from agent_console.ratelimit import RATE_LIMITER, Buckets, RateSettings
from agent_console.server import make_app
from callcenter.config import ConfigError, load
from tests.console_fakes import CHEAP, Person, serving, started_service


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    b = Buckets(per_s=2.0, burst=3)
    assert [b.take("a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("a", 100.0) == pytest.approx(0.5)  # one token comes in 0.5 s
    assert b.take("b", 100.0) == 0.0  # another key has its own bucket
    assert b.take("a", 100.6) == 0.0
    assert b.take("a", 100.6) > 0


def test_buckets_forget_full_ones_first_and_stay_bounded() -> None:
    b = Buckets(per_s=1.0, burst=2, max_keys=100)
    for i in range(100):
        b.take(f"old{i}", 0.0)
    b.take("busy", 50.0)
    b.take("busy", 50.0)
    b.take("new", 50.0)  # the 101st key: the full ones (all the old) are forgotten
    assert set(b.buckets) == {"busy", "new"}
    for i in range(1000):
        b.take(f"k{i}", 50.0)  # never full again within the test: halves are dropped
    assert len(b.buckets) <= 100


def test_the_settings_are_checked() -> None:
    s = load(env={})
    assert (s.rate_session_per_s, s.rate_session_burst) == (20.0, 200)
    with pytest.raises(ValueError, match="positive rate"):
        Buckets(0, 1)
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write("[web]\nrate_session_burst = 0\n")
        f.flush()
        with pytest.raises(ConfigError, match="rate"):
            load(f.name, env={})


@pytest.fixture
async def rig(tmp_db: str) -> AsyncIterator[tuple[Any, Any, list[Person]]]:
    service, _ = await started_service(tmp_db)
    # Almost no refill within the test: what it sees is the burst.
    app = make_app(service, passwords=CHEAP, failure_delay=0, throttle=LoginThrottle(free=50),
                   rate_limit=RateSettings(0.001, 6, 0.001, 10))
    async with serving(service, app) as (server, people):
        yield server, app, people


async def test_a_session_past_its_burst_gets_429_and_others_behind_the_address_do_not(
        rig: Any) -> None:
    server, app, people = rig
    op, sup = Person(server), Person(server)
    people += [op, sup]
    assert (await op.login("op1"))[0] == 200  # sign-ins count against the address (2 of 10)
    assert (await sup.login("sup1"))[0] == 200
    statuses = [(await op.call("GET", "/api/me"))[0] for _ in range(8)]
    # The first request after signing in still counts against the address; then six.
    assert statuses == [200] * 7 + [429], statuses
    async with op.http.get(op.url("/api/me")) as r:
        body = await r.json()
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
        assert body["error"].startswith("too many requests") and body["error_zh"]
    # Everyone else behind the same address (one NAT for a floor) is not slowed.
    assert [(await sup.call("GET", "/api/me"))[0] for _ in range(5)] == [200] * 5
    # Static files and the operations routes are not counted.
    for _ in range(12):
        async with op.http.get(op.url("/healthz")) as r:
            assert r.status == 200
    assert app[RATE_LIMITER].refused == 2


async def test_requests_without_a_session_share_the_address_bucket(rig: Any) -> None:
    server, app, people = rig
    outsider = Person(server)
    people.append(outsider)
    # A made-up cookie buys no bucket of its own: it counts against the address.
    outsider.http.cookie_jar.update_cookies({"hotline_session": "x" * 40})
    statuses = [(await outsider.call("GET", "/api/me"))[0] for _ in range(12)]
    assert statuses == [401] * 10 + [429, 429], statuses
    wrong = [(await outsider.login("op1", "wrong"))[0] for _ in range(2)]
    assert wrong == [429, 429]  # sign-ins from this address wait too
    assert app[RATE_LIMITER].refused == 4


async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_key(tmp_db: str) -> None:
    service, _ = await started_service(tmp_db)
    app = make_app(service, passwords=CHEAP, failure_delay=0,
                   rate_limit=RateSettings(0.001, 6, 0.001, 2, frozenset({"127.0.0.1"})))
    async with serving(service, app) as (server, people):
        p = Person(server)
        people.append(p)

        async def me(forwarded: str) -> int:
            return (await p.call("GET", "/api/me", headers={"X-Forwarded-For": forwarded}))[0]
        # Two clients behind nginx: each has its own address bucket (2 here).
        assert [await me("10.0.0.1") for _ in range(3)] == [401, 401, 429]
        assert [await me("10.0.0.2") for _ in range(2)] == [401, 401]
        # Only the entry the proxy appended counts: a client's own prefix changes nothing.
        assert await me("1.2.3.4, 10.0.0.1") == 429


async def test_behind_a_trusted_proxy_the_login_brake_keys_on_the_client(tmp_db: str) -> None:
    # The login brake is per (account, address): behind nginx the address must be the
    # client's, or an outsider's failures would slow the real user's sign-in too.
    service, _ = await started_service(tmp_db)
    app = make_app(service, passwords=CHEAP, failure_delay=0, throttle=LoginThrottle(free=2),
                   rate_limit=RateSettings(100, 1000, 100, 1000, frozenset({"127.0.0.1"})))
    async with serving(service, app) as (server, people):
        outsider, user = Person(server), Person(server)
        people += [outsider, user]

        async def login(p: Person, password: str, address: str) -> int:
            return (await p.call("POST", "/api/login", {"username": "op1", "password": password},
                                 headers={"X-Forwarded-For": address}))[0]
        assert [await login(outsider, "wrong", "10.9.9.9") for _ in range(4)] == [401] * 3 + [429]
        assert await login(user, "demo", "10.0.0.7") == 200  # another client: not slowed


def test_the_client_address_is_trusted_only_from_a_configured_proxy() -> None:
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request

    from agent_console.ratelimit import client_address

    def request(remote: str, forwarded: str | None) -> Any:
        transport = mock.Mock()
        transport.get_extra_info.return_value = (remote, 40000)
        return make_mocked_request("GET", "/api/me", transport=transport, headers=(
            {"X-Forwarded-For": forwarded} if forwarded is not None else {}))
    nginx = {"127.0.0.1"}
    assert client_address(request("127.0.0.1", "10.0.0.9"), nginx) == "10.0.0.9"
    # Only the entry the proxy appended: what the client wrote before it is its own word.
    assert client_address(request("127.0.0.1", "6.6.6.6, 10.0.0.9"), nginx) == "10.0.0.9"
    assert client_address(request("10.0.0.9", "6.6.6.6"), nginx) == "10.0.0.9"  # not a proxy
    assert client_address(request("127.0.0.1", ""), nginx) == "127.0.0.1"
    assert client_address(request("127.0.0.1", "x" * 46), nginx) == "127.0.0.1"
