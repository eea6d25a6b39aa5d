"""The simulator's IO edge: the AMI TCP server around a :class:`~callcenter.pbx.sim.app_queue.Pbx`,
and the ``callcenter pbx-sim`` entry point.

*The IO edge* (:class:`PbxSimServer`) is a thin asyncio TCP server: banner,
per-connection :class:`AmiSession` (login, event mask, ping, logoff), a timer
that advances the core to ``v0 + (monotonic - m0) * speed`` in slices of at
most ``batch`` frames and writes each client the frames its mask allows, one
write per slice.  A core too busy to keep up lags behind the wall clock rather
than bursting; a client whose unsent bytes exceed a bound is dropped instead of
stalling the others.  Opt-in (``agi_url``, ``--agi-url``): the core holds each
arrival (``hold_arrivals``) and the edge first runs it through the FastAGI IVR
as Asterisk's ``AGI()`` would (:func:`run_agi`), the caller pressing the digits
of its ``ivr_path``; the call then joins the queue the script chose.  The AGI
session stays open while the caller is in Queue(): ``agi_uniqueid``/``agi_channel``
are the ``;2`` channel's (allocated ahead, :meth:`Pbx.reserve_caller`) that the
queue events carry.  When the operator hangs up first ``EXEC Queue`` gets
``200 result=0`` and the script may ``GET VARIABLE MEMBERINTERFACE`` (``200 result=1
(Local/1001@agents/n)``) and play the survey (``GET DATA`` answered with the
citizen model's key); a caller who hangs up, abandons or leaves the queue gets
``200 result=-1``.  The core emits the caller's Hangup at the end of the bridge as
the trace shows, so the survey conversation finishes after that Hangup event.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from callcenter.pbx.sim.agi import QueueEnd, run_agi
from callcenter.pbx.sim.app_queue import Pbx
from callcenter.pbx.sim.model import AgiRun, Call, PbxConfig, QueueConfig, Recording
from callcenter.pbx.sim.wire import (
    BANNER,
    SYSTEM,
    ActionFields,
    Frame,
    error_frame,
    event_mask,
    mask_number,
    parse_frame,
    response_frame,
)
from callcenter.pbx.traffic import (
    CallSource,
    CallSpec,
    CitizenModel,
    RandomTraffic,
    ScriptedTraffic,
    TrafficConfig,
    Until,
    load_scenario,
)

log = structlog.get_logger(__name__)


# --------------------------------------------------------------------------- AMI sessions


class AmiSession:
    """One manager connection's protocol state: login, event mask and session actions."""

    def __init__(self, pbx: Pbx, users: Mapping[str, str]) -> None:
        self.pbx = pbx
        self.users = users
        self.username = ""
        self.authenticated = False
        self.mask = 0
        self.closing = False
        self._buf = b""

    def feed(self, data: bytes) -> list[list[tuple[str, str]]]:
        """Bytes in, complete action frames out (CRLF or LF line ends)."""
        self._buf += data
        frames = []
        while True:
            buf = self._buf
            i, j = buf.find(b"\r\n\r\n"), buf.find(b"\n\n")
            if i < 0 and j < 0:
                break
            end, skip = (i, 4) if i >= 0 and (j < 0 or i < j) else (j, 2)
            raw, self._buf = buf[:end], buf[end + skip:]
            fields = parse_frame(raw.decode("utf-8", errors="replace"))
            if fields:
                frames.append(fields)
        return frames

    def handle(self, action: list[tuple[str, str]]) -> str:
        """The reply to one action; sets ``closing`` after Logoff or a failed login."""
        f = ActionFields(action)
        name, aid = f.get("action").lower(), f.get("actionid")
        if not name:
            return error_frame(aid, "Missing action in request")
        if name == "login":
            return self._login(f, aid)
        if name == "logoff":
            self.closing = True
            return response_frame(aid, "Goodbye", Message="Thanks for all the fish.")
        if not self.authenticated:
            return error_frame(aid, "Authentication Required")
        if name == "ping":
            return response_frame(aid, Ping="Pong", Timestamp=f"{self.pbx.now:.6f}")
        if name == "events":
            self.mask = event_mask(f.get("eventmask", "off"))
            return response_frame(aid, Events="On" if self.mask else "Off")
        return self.pbx.handle_action(action)

    def _login(self, f: ActionFields, aid: str) -> str:
        user, secret = f.get("username"), f.get("secret")
        if user not in self.users or self.users[user] != secret:
            self.closing = True
            log.warning("pbx_sim.login_failed", username=user)
            return error_frame(aid, "Authentication failed")
        self.username, self.authenticated = user, True
        self.mask = event_mask(f.d.get("events"))
        text = response_frame(aid, Message="Authentication accepted")
        if self.mask & SYSTEM[0]:
            up = int(self.pbx.now - self.pbx.started)
            text += (f"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: {up}\r\n"
                     f"LastReload: {up}\r\nStatus: Fully Booted\r\n\r\n")
        return text


# --------------------------------------------------------------------------- the TCP edge


class _Client(asyncio.Protocol):
    """One TCP connection: bytes to the session, replies and events back."""

    def __init__(self, server: PbxSimServer) -> None:
        self.server = server
        self.session = AmiSession(server.pbx, server.users)
        self.transport: asyncio.Transport | None = None
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = str(transport.get_extra_info("peername"))
        if self.server.sndbuf:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.server.sndbuf)
        self.server.clients.add(self)
        transport.write(BANNER.encode())
        log.info("pbx_sim.client_connected", peer=self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.clients.discard(self)
        log.info("pbx_sim.client_disconnected", peer=self.peer, user=self.session.username)

    def data_received(self, data: bytes) -> None:
        for action in self.session.feed(data):
            if self.transport is None or self.transport.is_closing():
                return
            self.server.sync()
            self.server.flush()
            reply = self.session.handle(action)
            self.transport.write(reply.encode())
            self.server.service()
            self.server.flush()
            if self.session.closing:
                self.transport.close()
                return
        self.server.reschedule()

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > self.server.max_client_buffer:
            log.warning("pbx_sim.client_dropped", peer=self.peer, user=self.session.username,
                        reason="not reading", buffered=self.transport.get_write_buffer_size())
            self.server.clients.discard(self)
            self.transport.abort()


class PbxSimServer:
    """The asyncio TCP server around a :class:`Pbx`, paced at ``speed`` PBX seconds per second.

    With ``agi_url`` (and a core built with ``hold_arrivals=True``) every caller of
    the traffic model first runs that FastAGI script as Asterisk would, pressing the
    digits of its ``ivr_path``; the variables the script sets and the queue it
    enters go on the call.  A caller whose script ends without a queue (a
    call-back request) never joins; an unreachable script lets the call join as is.
    The AGI session stays open while the caller is in Queue() (``agi_uniqueid`` and
    ``agi_channel`` are those of the caller's ``;2`` channel in the queue events):
    when the operator hangs up first, ``EXEC Queue`` returns ``200 result=0``,
    ``GET VARIABLE MEMBERINTERFACE`` gives the member's interface and the survey's
    ``GET DATA`` the citizen model's key; otherwise it returns ``200 result=-1``.  The
    core still emits the caller's Hangup when the bridge ends (as the trace does),
    so the survey conversation finishes after that Hangup event.

    Channels answered into ``AGI(url,args)`` (a return-visit Originate) run that
    FastAGI script the same way (``agi_arg_N``, ``GET VARIABLE`` from the channel's
    variables, keys from ``citizen``); the channel hangs up when the script ends.
    With ``recordings_root`` every MixMonitor that stops writes a small tone WAV
    (length = time recorded, at most 20 s) to ``recordings_root / File``; absolute
    paths and ``..`` are refused (nothing written, a warning logged).
    """

    def __init__(self, pbx: Pbx, *, host: str = "127.0.0.1", port: int = 5038,
                 users: Mapping[str, str] | None = None, speed: float = 1.0,
                 max_client_buffer: int = 4 << 20, tick: float = 0.005, batch: int = 2000,
                 sndbuf: int | None = None, agi_url: str | None = None,
                 citizen: CitizenModel | None = None,
                 recordings_root: Path | str | None = None, agi_secret: str = "",
                 queue_log: Path | str | None = None, name: str = "") -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        if agi_url is not None and not pbx.hold_arrivals:
            raise ValueError("agi_url needs a Pbx built with hold_arrivals=True")
        self.pbx = pbx
        if citizen is not None:
            pbx.citizen = citizen
        self.recordings_root = Path(recordings_root) if recordings_root is not None else None
        #: Where the core's queue_log lines are appended as they happen (Asterisk's file).
        self.queue_log = Path(queue_log) if queue_log is not None else None
        self._logged = 0
        self.recordings_written: list[Path] = []
        self._queue_waiters: dict[Call, asyncio.Future[tuple[str, str]]] = {}
        self._write_tasks: set[asyncio.Future[Any]] = set()
        self.agi_url = agi_url
        self.agi_secret = agi_secret  # extensions.conf HOTLINE_AGI_SECRET: AGI_TOKEN's key
        #: extensions.conf HOTLINE_PBX: this PBX's [[pbx]] name, set on every AGI channel
        #: ("" = none; several simulators share one address, so the IVR needs it)
        self.name = name
        self.missing_prompts: set[str] = set()  # sound files this PBX lacks (STREAM FILE -1)
        self._agi_tasks: set[asyncio.Task[None]] = set()
        self._agi_seq = 0
        self.host = host
        self._port = port
        self.users = dict(users or {"hotline": "hotline"})
        self.speed = speed
        self.max_client_buffer = max_client_buffer
        self.tick = tick
        self.batch = batch
        self.sndbuf = sndbuf
        self._lagging = False
        self.clients: set[_Client] = set()
        self._server: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._timer_at = 0.0
        self._v0 = pbx.now
        self._m0 = 0.0
        self._held: float | None = None  # the PBX time the clock stands at (hold_clock)
        self.frames_sent = 0
        self._pending: list[Frame] = []
        #: Events to lose, by name: how many of the next ones no client gets (a frame
        #: the service could not read, or one lost with a link cut).
        self.lose: dict[str, int] = {}

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Client(self), self.host, self._port)
        self._v0, self._m0 = self.pbx.now, loop.time()
        self.reschedule()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._agi_tasks):
            task.cancel()
        for fut in self._queue_waiters.values():
            fut.cancel()
        self._queue_waiters.clear()
        if self._write_tasks:
            await asyncio.gather(*self._write_tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.abort()
        self.clients.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def virtual_now(self) -> float:
        if self._held is not None:
            return self._held
        return self._v0 + (asyncio.get_running_loop().time() - self._m0) * self.speed

    def hold_clock(self) -> None:
        """Stop the PBX clock where it is (before :meth:`start`: at the core's start time):
        nothing timed happens until :meth:`release_clock`, while actions are still
        answered.  A test holds it until its service has connected, so that no call
        ends before the service could have seen it."""
        if self._held is None:
            self._held = self.virtual_now() if self._server is not None else self.pbx.now

    def release_clock(self) -> None:
        """Let the PBX clock run again from where it was held."""
        if self._held is None:
            return
        self._v0, self._m0, self._held = self._held, asyncio.get_running_loop().time(), None
        self.reschedule()

    def sync(self) -> bool:
        """Advance the core towards the wall clock's virtual time, one slice of at most
        ``batch`` frames (they wait for flush); True when it is not there yet."""
        target = self.virtual_now()
        self._pending.extend(self.pbx.advance(target, self.batch))
        nxt = self.pbx.next_event_time()
        behind = nxt is not None and nxt <= target
        if behind and target - self.pbx.now > 2 * self.speed and not self._lagging:
            log.warning("pbx_sim.behind_real_time", lag_pbx_seconds=round(target - self.pbx.now))
        self._lagging = behind
        return behind

    def write_queue_log(self) -> None:
        """Append the core's new queue_log lines to the file (before the frames go out,
        as Asterisk writes the line before it sends the event)."""
        lines = self.pbx.queue_log
        if self.queue_log is None or self._logged >= len(lines):
            return
        with self.queue_log.open("a", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines[self._logged:]))
        self._logged = len(lines)

    def restart_pbx(self) -> None:
        """Asterisk killed and started again: the core restarts (see :meth:`Pbx.restart`)
        and every AMI session dies with the old process."""
        self.pbx.restart()
        self._pending = []
        self.pbx.drain()
        self.write_queue_log()
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.abort()

    def flush(self) -> None:
        """Write every pending frame to each logged-in client its mask allows."""
        self.write_queue_log()
        frames = self._pending + self.pbx.drain()
        self._pending = []
        if self.lose:
            frames = [fr for fr in frames if not self._lost(fr)]
        if not frames:
            return
        self.frames_sent += len(frames)
        by_mask: dict[int, bytes] = {}
        for client in list(self.clients):
            s = client.session
            if not s.authenticated or not s.mask:
                continue
            data = by_mask.get(s.mask)
            if data is None:
                data = "".join(fr.text for fr in frames if fr.mask & s.mask).encode()
                by_mask[s.mask] = data
            if data:
                client.send(data)

    def _lost(self, frame: Frame) -> bool:
        left = self.lose.get(frame.name, 0)
        if left <= 0:
            return False
        self.lose[frame.name] = left - 1
        return True

    def _task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._agi_tasks.add(task)
        task.add_done_callback(self._agi_tasks.discard)

    def _start_ivr(self) -> None:
        """Hand each held arrival to the FastAGI script (one task per caller)."""
        for spec in self.pbx.held_arrivals:
            self._task(self._ivr_call(spec))
        self.pbx.held_arrivals.clear()

    def service(self) -> None:
        """Do what the core asks of the IO edge: AGI scripts on answered channels, the
        ends of watched queue calls, recordings to write."""
        pbx = self.pbx
        if self.agi_url is not None and pbx.held_arrivals:
            self._start_ivr()
        if pbx.agi_runs:
            runs, pbx.agi_runs = pbx.agi_runs, []
            for run in runs:
                self._task(self._channel_agi(run))
        if pbx.queue_exits:
            exits, pbx.queue_exits = pbx.queue_exits, []
            for call, how in exits:
                fut = self._queue_waiters.pop(call, None)
                if fut is not None and not fut.done():
                    member = call.member.interface if call.member is not None else ""
                    fut.set_result((how, member))
        if pbx.recordings:
            recs, pbx.recordings = pbx.recordings, []
            for rec in recs:
                self._write_recording(rec)

    def _write_recording(self, rec: Recording) -> None:
        root = self.recordings_root
        if root is None:
            return
        rel = Path(rec.file)
        if not rec.file or rel.is_absolute() or ".." in rel.parts or rec.file.startswith("\\"):
            log.warning("pbx_sim.recording_refused", file=rec.file, channel=rec.channel)
            return
        path = root / rel
        seconds = min(max(rec.seconds, 0.0), 20.0)
        freq = 300.0 + (sum(map(ord, rec.uniqueid)) % 8) * 60.0

        def write() -> None:
            from recordings.store import write_wav
            write_wav(path, seconds, freq)
            self.recordings_written.append(path)

        fut = asyncio.get_running_loop().run_in_executor(None, write)
        self._write_tasks.add(fut)
        fut.add_done_callback(self._write_tasks.discard)

    async def wait_recordings(self) -> None:
        """Until every recording handed to a thread so far is written (tests)."""
        while self._write_tasks:
            await asyncio.gather(*list(self._write_tasks), return_exceptions=True)

    async def _channel_agi(self, run: AgiRun) -> None:
        """``AGI(agi://.../script,args)`` on an answered originated channel."""
        script = run.url.removeprefix("agi://").partition("/")[2]
        headers = {"agi_channel": run.channel, "agi_language": "en", "agi_type": "Local",
                   "agi_uniqueid": run.uniqueid, "agi_version": "22.0.0",
                   "agi_callerid": run.callerid, "agi_calleridname": run.calleridname,
                   "agi_callingpres": "0", "agi_callingani2": "0", "agi_callington": "0",
                   "agi_callingtns": "0", "agi_dnid": "unknown", "agi_rdnis": "unknown",
                   "agi_context": run.context, "agi_extension": run.exten,
                   "agi_priority": "1", "agi_enhanced": "0.0", "agi_accountcode": "",
                   "agi_threadid": str(140000000000000 + self._agi_seq)}
        self._agi_seq += 1
        for i, arg in enumerate(run.args, 1):
            headers[f"agi_arg_{i}"] = arg
        keys = self.pbx.citizen.keys_for(script)
        variables = dict(run.variables)
        if self.name:
            variables.setdefault("HOTLINE_PBX", self.name)
        try:
            await run_agi(run.url, headers, keys, variables=variables, timeout=30.0,
                          alive=lambda: run.channel in self.pbx.channels,
                          missing_prompts=self.missing_prompts)
        except (TimeoutError, OSError, ValueError) as exc:
            log.warning("pbx_sim.agi_failed", error=str(exc), channel=run.channel,
                        script=script)
        self.pbx.agi_done(run.channel)
        self.service()
        self.flush()
        self.reschedule()

    async def _ivr_call(self, spec: CallSpec) -> None:
        assert self.agi_url is not None
        self._agi_seq += 1
        res = self.pbx.reserve_caller()
        # As a real Asterisk in [inbound-ivr] (entered by Goto): dnid "unknown", exten "s";
        # the dialplan set HOTLINE and AGI_TOKEN = SHA1(secret + uniqueid).
        headers = {"agi_channel": res.name2, "agi_uniqueid": res.uid2,
                   "agi_callerid": spec.number or "unknown", "agi_calleridname": spec.name,
                   "agi_dnid": "unknown", "agi_extension": "s",
                   "agi_context": "inbound-ivr", "agi_language": "zh"}
        token = hashlib.sha1((self.agi_secret + res.uid2).encode()).hexdigest()
        dialplan_vars = {"HOTLINE": spec.hotline, "AGI_TOKEN": token}
        if self.name:
            dialplan_vars["HOTLINE_PBX"] = self.name
        keys = [k for k in spec.ivr_path if k in "0123456789*#"]
        joined: list[Call] = []

        async def on_queue(queue: str, v: dict[str, str]) -> QueueEnd:
            call = self.pbx.inject_call(replace(
                spec, at=self.pbx.now, hotline=v.get("HOTLINE", spec.hotline),
                category=v.get("CATEGORY", spec.category),
                ivr_path=v.get("IVR_PATH", spec.ivr_path),
                queue=queue if queue in self.pbx.queues else spec.queue), reserved=res)
            call.watched = True
            joined.append(call)
            fut: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
            self._queue_waiters[call] = fut
            self.flush()
            self.reschedule()
            how, member = await fut
            if how == "agent":
                return QueueEnd(0, {"MEMBERINTERFACE": member},
                                self.pbx.citizen.keys_for("survey"))
            return QueueEnd(-1, {}, [])

        try:
            out = await run_agi(self.agi_url, headers, keys, on_queue=on_queue,
                                variables=dialplan_vars, missing_prompts=self.missing_prompts)
        except (TimeoutError, OSError, ValueError) as exc:
            log.warning("pbx_sim.agi_failed", error=str(exc), caller=mask_number(spec.number))
            if not joined:
                self.pbx.inject_call(replace(spec, at=self.pbx.now), reserved=res)
        else:
            if out.queue is None:
                log.info("pbx_sim.ivr_left", caller=mask_number(spec.number))
                return
        self.flush()
        self.reschedule()

    def _tick(self) -> None:
        self._timer = None
        behind = self.sync()
        self.service()
        self.flush()
        if behind:  # let the sockets drain and actions in, then go on at once
            loop = asyncio.get_running_loop()
            self._timer_at = loop.time()
            self._timer = loop.call_soon(self._tick)
        else:
            self.reschedule()

    def reschedule(self) -> None:
        """Arm the timer for the core's next event (at most every ``tick`` seconds)."""
        loop = asyncio.get_running_loop()
        nxt = self.pbx.next_event_time()
        delay = 1.0 if nxt is None else min(1.0, max(self.tick, (nxt - self.virtual_now())
                                                     / self.speed))
        at = loop.time() + delay
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._tick)


# --------------------------------------------------------------------------- entry points


def build_pbx(*, seed: int, agents: int, queues: Sequence[QueueConfig | str] | None = None,
              rate: float | None = None, scenario: str | Path | None = None,
              start_time: float | None = None, start_hour: float = 9.5,
              peak_calls_per_hour: float = 120.0,
              channelvars: Sequence[str] = ("HOTLINE", "IVR_PATH", "CATEGORY"),
              hold_arrivals: bool = False, calls_for: float | None = None,
              talk_median: float | None = None,
              patience_median: float | None = None) -> Pbx:
    """A Pbx with random (or constant-rate, or scripted) traffic, ready to advance;
    ``calls_for`` PBX seconds of arrivals at most (None: for ever); the medians in PBX
    seconds replace the traffic model's (:class:`TrafficConfig`)."""
    qcfgs = tuple(q if isinstance(q, QueueConfig) else QueueConfig(name=q)
                  for q in (queues or [QueueConfig()]))
    t0 = time.time() if start_time is None else start_time
    traffic: CallSource
    if scenario is not None:
        traffic = ScriptedTraffic(load_scenario(scenario), origin=t0 + 1.0)
    else:
        shape: dict[str, float] = {}
        if talk_median is not None:
            shape |= {"talk_median": talk_median, "talk_min": min(15.0, talk_median / 3)}
        if patience_median is not None:
            shape["patience_median"] = patience_median
        traffic = RandomTraffic(TrafficConfig(rate=rate, start_hour=start_hour,
                                              peak_calls_per_hour=peak_calls_per_hour,
                                              **shape),  # type: ignore[arg-type]
                                seed=seed, origin=t0)
        if calls_for is not None:
            traffic = Until(traffic, t0 + calls_for)
    config = PbxConfig(queues=qcfgs, agents=agents, channelvars=tuple(channelvars),
                       agent_breaks=scenario is None)
    return Pbx(config, traffic, start_time=t0, seed=seed, hold_arrivals=hold_arrivals)


def pregenerate(pbx: Pbx, seconds: float, step: float = 1.0) -> list[Frame]:
    """Run the core flat out for ``seconds`` of PBX time and return every frame (benchmarks)."""
    out: list[Frame] = []
    end = pbx.now + seconds
    t = pbx.now
    while t < end:
        t = min(end, t + step)
        out.extend(pbx.advance(t))
    return out


async def run_pbx_sim(host: str, port: int, *, seed: int, speed: float, agents: int,
                      queues: Sequence[QueueConfig | str] | None = None,
                      users: Mapping[str, str], rate: float | None = None,
                      scenario: str | Path | None = None, start_hour: float = 9.5,
                      peak_calls_per_hour: float = 120.0,
                      ready: Callable[[PbxSimServer], None] | None = None,
                      agi_url: str | None = None,
                      recordings_root: str | Path | None = None,
                      queue_log: str | Path | None = None, calls_for: float | None = None,
                      talk_median: float | None = None,
                      patience_median: float | None = None, pbxs: int = 1) -> None:
    """Serve ``pbxs`` simulated Asterisks until cancelled: the first on ``host:port``, the
    n-th on ``port + n - 1`` (each on a port of its own with port 0), seeds ``seed``,
    ``seed + 1`` ...  Each is independent: its own calls, members and counters.

    ``queue_log``: append Asterisk's queue_log lines to this file (with several PBXs,
    PBX n to ``<queue_log>.pbx<n>``); ``calls_for``: no caller arrives after this many
    PBX seconds (the calls under way finish); ``talk_median`` / ``patience_median``: PBX
    seconds (the traffic model's medians; the talk minimum follows at a third of the
    median).  ``ready`` is called once per server.  With several PBXs, prints the
    ``[[pbx]]`` tables that reach them."""
    if not 1 <= pbxs <= 64:
        raise ValueError("pbxs must be 1 to 64")
    servers: list[PbxSimServer] = []
    user, secret = next(iter(users.items()))
    try:
        for i in range(pbxs):
            pbx = build_pbx(seed=seed + i, agents=agents, queues=queues, rate=rate,
                            scenario=scenario, start_hour=start_hour,
                            peak_calls_per_hour=peak_calls_per_hour,
                            hold_arrivals=agi_url is not None, calls_for=calls_for,
                            talk_median=talk_median, patience_median=patience_median)
            qlog = (f"{queue_log}.pbx{i + 1}" if pbxs > 1 else queue_log) if queue_log else None
            server = PbxSimServer(pbx, host=host, port=port + i if port else 0, users=users,
                                  speed=speed, agi_url=agi_url,
                                  recordings_root=recordings_root, queue_log=qlog,
                                  name=f"pbx{i + 1}" if pbxs > 1 else "")
            await server.start()
            servers.append(server)
            print(f"pbx-sim: AMI on {host}:{server.port} user {user!r} secret {secret!r} "
                  f"({agents} agents, queues {', '.join(pbx.queues)}, speed {speed:g}x, "
                  f"seed {seed + i})", flush=True)
            log.info("pbx_sim.listening", host=host, port=server.port, agents=agents,
                     speed=speed, pbx=f"pbx{i + 1}")
        if pbxs > 1:
            print("pbx-sim: for callcenter.toml:\n" + "\n".join(
                f'[[pbx]]\nname = "pbx{i + 1}"\nhost = "{host}"\nport = {srv.port}\n'
                f'user = "{user}"\nsecret = "{secret}"'
                + (f'\nqueue_log = "{srv.queue_log}"' if srv.queue_log else "")
                for i, srv in enumerate(servers)), flush=True)
        if ready is not None:
            for server in servers:
                ready(server)
        await asyncio.Event().wait()
    finally:
        for server in servers:
            await server.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``callcenter pbx-sim`` options."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5038)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--speed", type=float, default=1.0, help="PBX seconds per second")
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--rate", type=float, default=None,
                        help="constant calls per second instead of the daily profile")
    parser.add_argument("--peak", type=float, default=120.0,
                        help="calls per hour at the daily peak (default 120)")
    parser.add_argument("--start-hour", type=float, default=9.5,
                        help="time of day the simulation starts at (default 9.5 = 09:30)")
    parser.add_argument("--queue", action="append", dest="queues", default=None,
                        help="queue name (repeat for several; default hotline)")
    parser.add_argument("--scenario", default=None, help="scenario.json to replay")
    parser.add_argument("--username", default="hotline")
    parser.add_argument("--secret", default="hotline")
    parser.add_argument("--agi-url", default=None,
                        help="run each caller through this FastAGI script first, "
                             "e.g. agi://127.0.0.1:4573/hotline")
    parser.add_argument("--recordings-root", default=None,
                        help="write a tone WAV here for every MixMonitor that stops")
    parser.add_argument("--queue-log", default=None,
                        help="append Asterisk's queue_log lines to this file "
                             "(with --pbxs N: FILE.pbx1 ... FILE.pbxN)")
    parser.add_argument("--calls-for", type=float, default=None,
                        help="no caller arrives after this many PBX seconds")
    parser.add_argument("--talk-median", type=float, default=None,
                        help="median talk time in PBX seconds (default 180)")
    parser.add_argument("--patience-median", type=float, default=None,
                        help="median caller patience in PBX seconds (default 75)")
    parser.add_argument("--pbxs", type=int, default=1,
                        help="run this many independent PBXs on consecutive ports "
                             "(seeds seed, seed+1 ...)")


async def main_from_args(args: argparse.Namespace) -> None:
    """Run the simulator from parsed ``add_arguments`` options."""
    await run_pbx_sim(args.host, args.port, seed=args.seed, speed=args.speed,
                      agents=args.agents, queues=args.queues,
                      users={args.username: args.secret}, rate=args.rate,
                      scenario=args.scenario, start_hour=args.start_hour,
                      peak_calls_per_hour=args.peak, agi_url=args.agi_url,
                      recordings_root=getattr(args, "recordings_root", None),
                      queue_log=args.queue_log, calls_for=args.calls_for,
                      talk_median=args.talk_median, patience_median=args.patience_median,
                      pbxs=getattr(args, "pbxs", 1))
