"""Sessions' last_seen, batched (agent_console.auth.Users): kept in memory, written in
one statement at most every ``seen_every`` seconds; the open websockets' sessions
checked with one query (``Users.alive``)."""

from __future__ import annotations

from sqlalchemy import select

from agent_console.auth import SESSION_IDLE_S, Role, Users
from agent_console.models import SessionRow
from callcenter.db import Store
from tests.console_fakes import CHEAP


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def stored_last_seen(store: Store) -> dict[str, float]:
    async with store.engine.connect() as conn:
        return dict((await conn.execute(select(SessionRow.token_hash, SessionRow.last_seen))
                     ).all())


async def test_last_seen_is_written_in_batches(store: Store) -> None:
    clock = Clock()
    users = Users(store.engine, CHEAP, clock=clock, seen_every=300.0)
    alice = await users.add("op1", "secret", Role.OPERATOR)
    bob = await users.add("op2", "secret", Role.OPERATOR)
    t1, s1 = await users.open_session(alice)
    t2, s2 = await users.open_session(bob)
    opened = clock.now
    clock.now += 120
    assert (await users.session(t1)) is not None  # the first batch goes at once
    assert (await stored_last_seen(store))[s1.token_hash] == clock.now
    clock.now += 120
    assert (await users.alive([s1.token_hash, s2.token_hash, "nope"])) == {
        s1.token_hash, s2.token_hash}
    seen = await stored_last_seen(store)
    assert seen[s2.token_hash] == opened  # not yet: within seen_every of the last batch
    clock.now += 400
    assert await users.session(t2) is not None
    seen = await stored_last_seen(store)  # one statement wrote both
    assert seen[s1.token_hash] == clock.now - 400 and seen[s2.token_hash] == clock.now


async def test_a_session_seen_but_not_yet_written_is_not_idle(store: Store) -> None:
    clock = Clock()
    users = Users(store.engine, CHEAP, clock=clock, seen_every=10 * SESSION_IDLE_S)
    token, session = await users.open_session(await users.add("op1", "secret", Role.OPERATOR))
    await users.flush_seen()
    for _ in range(3):  # kept alive by its websocket; written only in memory
        clock.now += SESSION_IDLE_S * 0.9
        assert await users.alive([session.token_hash]) == {session.token_hash}
    assert await users.session(token) is not None
    clock.now += SESSION_IDLE_S + 1  # then nothing for longer than the idle limit
    assert await users.session(token) is None
    assert await users.alive([session.token_hash]) == set()


async def test_the_wallboards_names_are_every_members_display_name(store: Store) -> None:
    """``display_names`` (two columns, read every minute) names each member as the
    accounts read whole do: the display name, else the username; no member, no name."""
    users = Users(store.engine, CHEAP)
    await users.add("op1", "pw-123456", Role.OPERATOR, display_name="王芳",
                    member_name="agent1001", interface="PJSIP/1001")
    await users.add("op2", "pw-123456", Role.OPERATOR, member_name="agent1002",
                    interface="PJSIP/1002")
    await users.add("sup1", "pw-123456", Role.SUPERVISOR)
    names = await users.display_names()
    assert names == {"agent1001": "王芳", "agent1002": "op2"}
    assert names == {u.member_name: u.display_name for u in await users.all() if u.member_name}
