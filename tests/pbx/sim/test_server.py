"""The simulator's TCP edge: banner, login, list framing, event masks, slow clients."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from callcenter.pbx.sim import (
    Pbx,
    PbxConfig,
    PbxSimServer,
    frame_dict,
)
from callcenter.pbx.traffic import (
    RandomTraffic,
    TrafficConfig,
)

T0 = 1_800_000_000.0


# --------------------------------------------------------------------------- over TCP


class RawAmi:
    """A plain asyncio AMI client: bytes in, frames out, nothing clever."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, rcvbuf: int | None = None) -> RawAmi:
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    def send(self, *pairs: tuple[str, str]) -> None:
        self.writer.write("".join(f"{k}: {v}\r\n" for k, v in pairs).encode() + b"\r\n")

    async def frame(self, timeout: float = 3.0) -> str:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        return raw.decode("utf-8")

    async def until(self, pred: str, timeout: float = 3.0) -> list[str]:
        """Frames up to and including the first one containing ``pred``."""
        out: list[str] = []
        while True:
            out.append(await self.frame(timeout))
            if pred in out[-1]:
                return out

    async def login(self, secret: str = "hotline", events: str = "on") -> list[str]:
        assert await self.reader.readline() == b"Asterisk Call Manager/11.0.0\r\n"
        self.send(("Action", "Login"), ("ActionID", "l1"), ("Username", "hotline"),
                  ("Secret", secret), ("Events", events))
        return [await self.frame()]

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


@pytest.fixture
async def server() -> AsyncIterator[PbxSimServer]:
    pbx = Pbx(PbxConfig(agents=3, agent_breaks=False), start_time=T0, seed=3)
    srv = PbxSimServer(pbx, port=0, users={"hotline": "hotline"}, speed=20.0)
    await srv.start()
    yield srv
    await srv.stop()


async def test_banner_login_ping_and_unknown_action(server: PbxSimServer) -> None:
    ami = await RawAmi.connect(server.port)
    [reply] = await ami.login()
    assert reply == ("Response: Success\r\nActionID: l1\r\n"
                     "Message: Authentication accepted\r\n\r\n")
    booted = frame_dict(await ami.frame())
    assert booted["Event"] == "FullyBooted" and booted["Privilege"] == "system,all"
    ami.send(("Action", "Ping"), ("ActionID", "p1"))
    pong = frame_dict((await ami.until("ActionID: p1"))[-1])
    assert (pong["Response"], pong["Ping"]) == ("Success", "Pong") and "Timestamp" in pong
    ami.send(("Action", "MakeCoffee"), ("ActionID", "x1"))
    assert (await ami.until("ActionID: x1"))[-1] == (
        "Response: Error\r\nActionID: x1\r\nMessage: Invalid/unknown command\r\n\r\n")
    ami.send(("Action", "Logoff"), ("ActionID", "bye"))
    assert "Response: Goodbye" in (await ami.until("ActionID: bye"))[-1]
    assert await asyncio.wait_for(ami.reader.read(), 2) == b""
    await ami.close()


async def test_wrong_secret_is_refused_and_the_connection_closed(server: PbxSimServer) -> None:
    ami = await RawAmi.connect(server.port)
    [reply] = await ami.login(secret="nope")
    assert reply == "Response: Error\r\nActionID: l1\r\nMessage: Authentication failed\r\n\r\n"
    assert await asyncio.wait_for(ami.reader.read(), 2) == b""
    await ami.close()


async def test_queue_status_list_framing_and_queue_add(server: PbxSimServer) -> None:
    ami = await RawAmi.connect(server.port)
    await ami.login(events="off")
    ami.send(("Action", "QueueStatus"), ("ActionID", "qs-1"))
    frames = await ami.until("QueueStatusComplete")
    assert frames[0] == ("Response: Success\r\nActionID: qs-1\r\nEventList: start\r\n"
                         "Message: Queue status will follow\r\n\r\n")
    items = frames[1:-1]
    assert [frame_dict(f)["Event"] for f in items] == ["QueueParams"] + ["QueueMember"] * 3
    assert all(f.endswith("ActionID: qs-1\r\n\r\n") for f in items)
    assert frames[-1] == ("Event: QueueStatusComplete\r\nActionID: qs-1\r\n"
                          "EventList: Complete\r\nListItems: 4\r\n\r\n")
    ami.send(("Action", "QueueAdd"), ("ActionID", "add"), ("Queue", "hotline"),
             ("Interface", "Local/2001@agents/n"), ("MemberName", "agent2001"),
             ("Penalty", "0"))
    assert (await ami.until("ActionID: add"))[-1] == (
        "Response: Success\r\nActionID: add\r\nMessage: Added interface to queue\r\n\r\n")
    ami.send(("Action", "QueueStatus"), ("ActionID", "qs-2"), ("Member", "agent2001"))
    frames = await ami.until("QueueStatusComplete")
    assert [frame_dict(f).get("Name") for f in frames[1:-1]] == [None, "agent2001"]
    await ami.close()


async def test_event_masks_filter_by_privilege_class(server: PbxSimServer) -> None:
    agent_only = await RawAmi.connect(server.port)
    call_only = await RawAmi.connect(server.port)
    await agent_only.login(events="agent")
    await call_only.login(events="call")
    driver = await RawAmi.connect(server.port)
    await driver.login(events="off")
    driver.send(("Action", "QueueAdd"), ("ActionID", "a"), ("Queue", "hotline"),
                ("Interface", "Local/2002@agents/n"), ("MemberName", "agent2002"))
    driver.send(("Action", "Originate"), ("ActionID", "o"), ("Channel", "Local/s@inbound"),
                ("Context", "caller"), ("Exten", "s"), ("Priority", "1"),
                ("CallerID", '"张三" <13700000001>'), ("Async", "true"))
    await driver.until("ActionID: o")
    agent_frames = await agent_only.until("QueueCallerJoin")
    call_frames = await call_only.until("NewCallerid")
    assert any("QueueMemberAdded" in f for f in agent_frames)
    assert all("Privilege: agent,all" in f for f in agent_frames)
    assert all("Privilege: call,all" in f for f in call_frames)
    assert any("CallerIDName: 张三" in f for f in call_frames)
    call_only.send(("Action", "Events"), ("ActionID", "ev"), ("EventMask", "off"))
    assert (await call_only.until("ActionID: ev"))[-1] == (
        "Response: Success\r\nActionID: ev\r\nEvents: Off\r\n\r\n")
    channel = next(frame_dict(f)["Channel"] for f in call_frames if "Event: NewCallerid" in f)
    driver.send(("Action", "Hangup"), ("ActionID", "h"), ("Channel", channel))
    await driver.until("ActionID: h")
    await agent_only.until("QueueCallerAbandon")
    with pytest.raises(asyncio.TimeoutError):  # nothing more for the muted client
        await call_only.frame(timeout=0.3)
    for ami in (agent_only, call_only, driver):
        await ami.close()


async def test_a_client_that_never_reads_is_dropped_without_stalling_others() -> None:
    t0 = 1_800_000_000.0
    pbx = Pbx(PbxConfig(agents=300, agent_breaks=False),
              RandomTraffic(TrafficConfig(rate=10.0, talk_median=20), seed=5, origin=t0),
              start_time=t0, seed=5)
    srv = PbxSimServer(pbx, port=0, speed=20.0, max_client_buffer=256 * 1024, sndbuf=8192)
    await srv.start()
    try:
        stuck = await RawAmi.connect(srv.port, rcvbuf=4096)
        await stuck.login()  # ... and never reads again
        reader = await RawAmi.connect(srv.port)
        await reader.login()
        received = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 8
        while stuck_client_alive(srv, 2) and loop.time() < deadline:
            received += len(await reader.reader.read(65536))
        assert not stuck_client_alive(srv, 2), "the non-reading client was never dropped"
        start = loop.time()
        reader.send(("Action", "Ping"), ("ActionID", "after"))
        while b"ActionID: after" not in await reader.reader.read(65536):
            pass
        assert loop.time() - start < 1.0 and received > 256 * 1024
        await stuck.close()
        await reader.close()
    finally:
        await srv.stop()


def stuck_client_alive(srv: PbxSimServer, expected: int) -> bool:
    return len(srv.clients) >= expected

