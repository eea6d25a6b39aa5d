"""A small hand-written fake of Asterisk's manager interface, over real TCP.

It speaks just enough AMI for the link tests: banner, Login (closing the
connection on a wrong secret, as Asterisk does), Ping, and per-test handlers.
It records every action it receives and every byte, so tests can count
``Originate``s or prove that nothing was written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

BANNER = b"Asterisk Call Manager/11.0.0\r\n"

Handler = Callable[[dict[str, str]], list[bytes]]


def frame(*lines: str, **headers: str) -> bytes:
    """Build one AMI frame from ``"Key: value"`` lines and/or keyword headers."""
    text = [*lines, *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(text) + "\r\n\r\n").encode()


def reply(action: dict[str, str], response: str = "Success", **headers: str) -> bytes:
    """A response frame echoing the action's ActionID."""
    return frame(f"Response: {response}", f"ActionID: {action.get('ActionID', '')}",
                 *(f"{k}: {v}" for k, v in headers.items()))


class FakeAmi:
    """One listening socket; the newest client connection is the current one."""

    def __init__(self, *, secret: str = "s3cret") -> None:
        self.secret = secret
        self.actions: list[dict[str, str]] = []
        self.raw = bytearray()
        self.connections = 0
        self.login_times: list[float] = []
        self.handlers: dict[str, Handler] = {}
        self.ignore: set[str] = set()
        self.mute = False  # stop answering on the current connection (reset on connect)
        self.mute_after_login = False  # accept the login, then never answer again
        self.port = 0
        self.banner_chunks: list[bytes] = [BANNER]  # written one by one, banner_pause apart
        self.banner_pause = 0.0
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self, port: int = 0) -> int:
        """Listen on 127.0.0.1 (a free port unless given); return the port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        """Stop listening and drop the current client."""
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def count(self, name: str) -> int:
        """How many actions called ``name`` were received, over all connections."""
        return sum(1 for a in self.actions if a.get("Action") == name)

    def drop(self) -> None:
        """Close the current client connection from the server side."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def send(self, data: bytes, *, pause: float = 0.0) -> None:
        """Write bytes to the current client (as one write), then pause."""
        assert self._writer is not None, "no client connected"
        self._writer.write(data)
        await self._writer.drain()
        if pause:
            await asyncio.sleep(pause)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.mute = False
        self._writer = writer
        for chunk in self.banner_chunks:
            writer.write(chunk)
            if self.banner_pause:
                await writer.drain()
                await asyncio.sleep(self.banner_pause)
        buf = b""
        try:
            while data := await reader.read(65536):
                self.raw += data
                *frames, buf = (buf + data).split(b"\r\n\r\n")
                for raw in frames:
                    self._handle(raw, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _handle(self, raw: bytes, writer: asyncio.StreamWriter) -> None:
        action = dict(line.split(": ", 1) for line in raw.decode().split("\r\n"))
        self.actions.append(action)
        name = action.get("Action", "")
        if self.mute or name in self.ignore or writer is not self._writer:
            return
        if name == "Login":
            self.login_times.append(asyncio.get_running_loop().time())
            if action.get("Secret") != self.secret:
                writer.write(reply(action, "Error", Message="Authentication failed"))
                writer.close()
                return
            writer.write(reply(action, Message="Authentication accepted"))
            writer.write(frame("Event: FullyBooted", "Privilege: system,all",
                               "Status: Fully Booted"))
            self.mute = self.mute_after_login
        elif name == "Ping":
            writer.write(reply(action, Ping="Pong", Timestamp="1700000000.000000"))
        elif name in self.handlers:
            for out in self.handlers[name](action):
                writer.write(out)
        else:
            writer.write(reply(action, "Error", Message="Invalid/unknown command"))
