"""The FastAGI gate: the AGI port served by a process of its own, out of the service's GIL.

Why: on one process a burst of connections (500 opened at once) costs about a millisecond
each to accept, wrap, refuse and close.  On a thread of the service's process
(:class:`ivr.fastagi.AgiThread`) that work still holds the service's GIL, and on this
loaded 2-core machine the web app's worst response during such a burst reached 402 ms
(load 7.4; README).  The gate process does all of it - the address check, the
connection cap, the bounded header read (:func:`ivr.fastagi.read_headers`: line, count
and time limits) and the script-name check - and hands each conversation that passed to
the service: the connected socket itself (``socket.send_fds`` over a ``SOCK_SEQPACKET``
Unix socket pair) with its headers as JSON.  The service runs the script on its AGI
thread exactly as before (:meth:`ivr.fastagi.FastAgiServer.adopt`): tokens, audit
before act and the one writer are unchanged.  Refusals come over the same pair and are
audited by the service (:meth:`GateThread.start` ``on_refused``), at most once a minute
per address and reason as before.

Messages (one JSON object per datagram, at most ``MAX_MESSAGE`` bytes):

* gate -> service ``{"kind": "listening", "port": 4573}`` once bound, or
  ``{"kind": "error", "message": "..."}`` (then it exits);
* gate -> service ``{"kind": "session", "headers": {...}}`` with one file descriptor;
* gate -> service ``{"kind": "refused", "why": "...", "details": {...}}``.

The gate exits when the service's end of the pair closes (the service stopped or died),
so it never outlives the service.  Run as ``python -m ivr.agi_gate --fd N ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any

import structlog

from callcenter.runtime import wait_within
from ivr.fastagi import (
    DEFAULT_PORT,
    HEADER_TIMEOUT_S,
    MAX_CLIENTS,
    AgiChannel,
    AgiThread,
    FastAgiServer,
    HotlineAgi,
    Maybe,
    on_loop,
    parse_allow,
)

log = structlog.get_logger("ivr.agi_gate")

#: Largest message on the pair (a header block: Asterisk sends ~25 short lines).
MAX_MESSAGE = 60_000


def _send(chan: socket.socket, message: Mapping[str, Any], fds: Iterable[int] = ()) -> None:
    data = json.dumps(message, ensure_ascii=False).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError("message too large")
    socket.send_fds(chan, [data], list(fds))


# --------------------------------------------------------------------------- the gate process


async def _gate(chan: socket.socket, host: str, port: int, allow: list[str],
                scripts: list[str], max_clients: int, header_timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    chan.setblocking(True)  # datagrams are small; the service reads them at once

    def refused(why: str, details: Mapping[str, Any]) -> None:
        try:
            _send(chan, {"kind": "refused", "why": why, "details": dict(details)})
        except OSError:
            loop.stop()

    async def hand_over(agi: AgiChannel) -> None:
        """A conversation whose headers passed: its socket goes to the service."""
        sock = agi.writer.get_extra_info("socket")
        if sock is None or agi.reader._buffer:  # bytes after the blank line: no AGI client
            await server.refuse("data after the headers", agi.headers.get("peer", "?"))
            return
        headers = {k: v for k, v in agi.headers.items() if k != "peer"}
        try:
            _send(chan, {"kind": "session", "headers": headers,
                         "peer": agi.headers.get("peer", "?")}, [sock.fileno()])
        except ValueError:
            await server.refuse("headers too large", agi.headers.get("peer", "?"))
        except OSError:
            loop.stop()  # the service is gone
        # Our copy closes when the edge closes the writer; the service holds its own.

    server = FastAgiServer({name: hand_over for name in scripts}, parse_allow(allow),
                           on_refused=refused, max_clients=max_clients,
                           header_timeout_s=header_timeout_s)
    try:
        listener = await server.start(host, port)
    except OSError as exc:
        _send(chan, {"kind": "error", "message": f"{exc.strerror or exc}"})
        return
    _send(chan, {"kind": "listening", "port": listener.sockets[0].getsockname()[1]})
    # The service's end closing (stop, crash, kill -9) ends the gate.
    closed = loop.create_future()
    loop.add_reader(chan.fileno(), lambda: closed.done() or closed.set_result(None))
    await closed
    listener.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ivr.agi_gate", description=__doc__)
    p.add_argument("--fd", type=int, required=True, help="this end of the SEQPACKET pair")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4573)
    p.add_argument("--allow", action="append", default=[])
    p.add_argument("--script", action="append", default=[])
    p.add_argument("--max-clients", type=int, default=MAX_CLIENTS)
    p.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT_S)
    a = p.parse_args(argv)
    chan = socket.socket(fileno=a.fd)
    try:
        asyncio.run(_gate(chan, a.host, a.port, a.allow or ["127.0.0.1", "::1"], a.script,
                          a.max_clients, a.header_timeout))
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- the service side


class GateThread(AgiThread):
    """The FastAGI edge with its listener in a gate process (see the module).

    The conversations the gate hands over run on this thread's loop in ``edge``
    (:meth:`ivr.fastagi.FastAgiServer.adopt`), as with :class:`AgiThread`.
    ``await start(host, port)`` returns the gate's bound port (OSError if it cannot
    listen); ``await stop()`` closes the pair (the gate exits), and joins both.
    """

    def __init__(self, edge: FastAgiServer, *, header_timeout_s: float | None = None) -> None:
        super().__init__(edge)
        self.header_timeout_s = (edge.header_timeout_s if header_timeout_s is None
                                 else header_timeout_s)
        self.proc: asyncio.subprocess.Process | None = None
        self._chan: socket.socket | None = None

    async def start(self, host: str, port: int) -> int:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        args = [sys.executable, "-m", "ivr.agi_gate", "--fd", str(theirs.fileno()),
                "--host", host, "--port", str(port),
                "--max-clients", str(self.edge.max_clients),
                "--header-timeout", str(self.header_timeout_s)]
        for net in self.edge.allow:
            args += ["--allow", str(net)]
        for name in self.edge.scripts:
            args += ["--script", name]
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        self.proc = await asyncio.create_subprocess_exec(*args, pass_fds=[theirs.fileno()],
                                                         env=env)
        theirs.close()
        self._chan = mine
        ready: Future[int] = Future()
        self._thread = threading.Thread(target=self._run_gate, args=(mine, ready),
                                        name="fastagi", daemon=True)
        self._thread.start()
        try:
            self.port = await asyncio.wrap_future(ready)
        except BaseException:
            await self.stop()
            raise
        return self.port

    def _run_gate(self, chan: socket.socket, ready: Future[int]) -> None:
        loop = self.loop = self._new_loop()
        chan.setblocking(False)
        tasks: set[asyncio.Task[None]] = set()

        def receive() -> None:
            while True:
                try:
                    data, fds, _, _ = socket.recv_fds(chan, MAX_MESSAGE + 1, 1)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    self._gate_gone(ready, f"gate unreadable: {exc}", loop)
                    return
                if not data:
                    for fd in fds:
                        os.close(fd)
                    self._gate_gone(ready, "gate process ended", loop)
                    return
                self._message(data, fds, ready, tasks)

        loop.add_reader(chan.fileno(), receive)
        self._run_until_stopped(loop, lambda: loop.remove_reader(chan.fileno()))

    def _gate_gone(self, ready: Future[int], why: str, loop: asyncio.AbstractEventLoop) -> None:
        if not ready.done():
            ready.set_exception(OSError(why))
            loop.stop()
            return
        log.error("fastagi_gate_gone", why=why)
        if self._chan is not None:
            loop.remove_reader(self._chan.fileno())

    def _message(self, data: bytes, fds: list[int], ready: Future[int],
                 tasks: set[asyncio.Task[None]]) -> None:
        try:
            msg = json.loads(data)
            kind = msg["kind"]
        except (ValueError, KeyError, TypeError):
            kind, msg = "?", {}
        if kind == "session" and len(fds) == 1 and isinstance(msg.get("headers"), dict):
            sock = socket.socket(fileno=fds[0])
            headers = {str(k): str(v) for k, v in msg["headers"].items()}
            headers["peer"] = str(msg.get("peer", "?"))
            task = asyncio.get_running_loop().create_task(self.edge.adopt(sock, headers))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            return
        for fd in fds:
            os.close(fd)
        if kind == "refused":
            details = msg.get("details") if isinstance(msg.get("details"), dict) else {}
            task = asyncio.get_running_loop().create_task(
                self.edge.report(str(msg.get("why", ""))[:200], details))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif kind == "listening" and not ready.done():
            ready.set_result(int(msg["port"]))
        elif kind == "error" and not ready.done():
            ready.set_exception(OSError(str(msg.get("message", "gate failed"))))
        else:
            log.warning("fastagi_gate_message_ignored", kind=str(kind)[:40])

    async def stop(self, timeout: float = 5.0) -> None:
        if self._chan is not None:
            chan, self._chan = self._chan, None
            loop = self.loop
            if loop is not None:
                try:
                    loop.call_soon_threadsafe(loop.stop)
                except RuntimeError:
                    pass
            if self._thread is not None:
                await asyncio.to_thread(self._thread.join, timeout)
            chan.close()  # the gate sees EOF and exits
        self.loop = None
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                await wait_within(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()


if __name__ == "__main__":
    main()


async def start_agi_server(agi: HotlineAgi, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                           *, allow: Iterable[str] = ("127.0.0.1", "::1"),
                           on_refused: Callable[[str, Mapping[str, str]], Maybe] | None = None,
                           gate: bool = True) -> AgiThread:
    """Listen for Asterisk's FastAGI connections: in a gate process that hands each checked
    conversation to a thread of this process (:class:`ivr.agi_gate.GateThread`), or with
    ``gate=False`` on a thread of its own (:class:`AgiThread`); ``agi``'s callbacks and
    ``on_refused`` run on the caller's loop.  ``await stop()`` it."""
    run = on_loop(asyncio.get_running_loop())
    agi.run = run
    edge = FastAgiServer(agi.routes(), parse_allow(allow), on_refused=on_refused, run=run)
    thread = GateThread(edge) if gate else AgiThread(edge)
    await thread.start(host, port)
    return thread
