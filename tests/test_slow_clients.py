"""Slow websocket clients are cut (agent_console.live._send_watchdog): a client that
keeps sending and never reads is disconnected once its unsent backlog passes the
bound, with close code 4408, and its transport is aborted (buffers freed); a client
that reads stays.  The hostile client here is a raw socket with a small receive
window that asks for a full snapshot again and again and never reads an answer.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from pathlib import Path

import pytest

from agent_console.live import CLOSE_TOO_SLOW
from agent_console.session import CONSOLE, COOKIE
from tests.test_console_api import Rig, receive, rig  # noqa: F401 - rig is a fixture

COMMON_JS = Path(__file__).resolve().parent.parent / "agent_console" / "static" / "common.js"


def masked_text(text: str) -> bytes:
    """One client->server text frame (clients must mask)."""
    payload = text.encode()
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


async def non_reading_client(port: int, token: str) -> socket.socket:
    """A websocket that completes the handshake, then only ever writes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Cookie: {COOKIE}={token}\r\n\r\n").encode())
    head = await asyncio.wait_for(loop.sock_recv(sock, 1024), 5)
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionRefusedError(head.split(b"\r\n")[0].decode())
    return sock


async def test_a_client_that_never_reads_is_cut_and_its_buffers_freed(rig: Rig) -> None:  # noqa: F811
    c = rig.server.app[CONSOLE]
    c.max_unsent_bytes, c.max_unsent_age_s = 48 * 1024, 3.0
    sup = await rig.as_user("sup1")
    reader = await sup.ws()  # a wallboard that reads
    assert (await receive(reader, "snapshot"))["type"] == "snapshot"
    cookie = sup.http.cookie_jar.filter_cookies(rig.server.make_url("/"))[COOKIE].value
    slow = await non_reading_client(rig.server.port, cookie)
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.2)
    assert len(c.sockets) == 2
    slow_ws = next(ws for ws in c.sockets if c.transports[ws] is not None
                   and c.transports[ws].get_extra_info("peername")[1] == slow.getsockname()[1])
    transport = c.transports[slow_ws]
    deadline = time.monotonic() + 15
    try:
        while slow_ws in c.sockets and time.monotonic() < deadline:
            for _ in range(20):  # keep asking for the whole wall, never read a byte
                try:
                    await loop.sock_sendall(slow, masked_text('{"type":"resync"}'))
                except OSError:
                    break
            await asyncio.sleep(0.05)
        assert slow_ws not in c.sockets, "the non-reading client was never cut"
        assert c.slow_cuts == 1
        assert transport.is_closing() and slow_ws not in c.transports
        assert slow_ws not in c.backlog_since and slow_ws not in c.senders
        # it may come back after a cool-down (2 s after the first cut), not at once
        with pytest.raises(ConnectionRefusedError, match="429"):
            await non_reading_client(rig.server.port, cookie)
        await asyncio.sleep(2.2)
        again = await non_reading_client(rig.server.port, cookie)
        again.close()
        # the reading wallboard is still served
        rig.pbx.caller_joins("5.1", "13800000005", "王五")
        await rig.settle()
        msg = await receive(reader, "update", timeout=5)
        assert msg["type"] == "update"
        assert len(c.sockets) == 1
    finally:
        slow.close()
        await reader.close()


def test_the_page_reconnects_and_resumes_on_the_too_slow_close_code() -> None:
    js = COMMON_JS.read_text(encoding="utf-8")
    assert f"ev.code === {CLOSE_TOO_SLOW}" in js
    assert "setTimeout(() => this.connect(), this.backoff)" in js
    assert "?stream=${encodeURIComponent(this.stream)}&seq=${this.seq}" in js
