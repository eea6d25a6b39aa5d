"""The guarded AMI link: one TCP session to Asterisk's manager interface.

Theory of operation
-------------------
Asterisk's manager interface (AMI) is a stream of frames: ``Key: value`` lines
ended by CRLF, one blank line (``b"\\r\\n\\r\\n"``) closing each frame. We keep
panoramisk 1.4 as the protocol basis (``_AmiProtocol`` subclasses its
``AMIProtocol``) but replace the parts that a hotline cannot live with:

* **Bytes first.** ``FrameBuffer`` collects raw bytes and cuts them on the blank
  line; only a complete frame is decoded, once (``parse_frame``). A Chinese
  caller name split between two TCP reads therefore arrives intact, where
  panoramisk decodes every read on its own with ``errors="ignore"``.
* **Nothing bad goes out.** ``action()`` refuses a key or value holding CR, LF or
  NUL (``ActionRefused``) before anything is built or written: such a value
  would smuggle extra headers or whole actions into Asterisk.
* **Nothing bad comes in and kills the link.** Garbage lines, duplicated headers,
  NUL bytes, invalid UTF-8, cut frames and over-long lines are logged (one
  line, truncated, caller numbers masked) and skipped or delivered sanitized.
* **Every action ends.** Each action has its own timer (default 10 s). When the
  link drops, every pending action fails at once with ``LinkDown``. Nothing is
  queued while the link is down and nothing is ever re-sent: panoramisk's
  ``Manager`` replays unanswered actions after a reconnect, which would ring a
  citizen twice for one ``Originate``; we never use that path.
* **Replies are matched by ActionID with our own rules.** A reply opens a list
  only when Asterisk says so (``EventList: start`` or "... will follow"); the
  list ends at the ``*Complete`` event. panoramisk takes QueueAdd's "Added
  interface to queue" for a list start and never returns.
* **Liveness.** After login we send ``Ping`` every ``ping_interval``; a watchdog
  declares the link down when no reply came for three intervals (a silently
  dead peer keeps the TCP socket open forever).
* **Reconnect.** ``start()`` runs connect -> login -> ``on_connected`` -> wait for
  the drop, then sleeps an exponential backoff with jitter and tries again.
  ``connect_once()`` is the fail-fast path: one attempt, a one-line ``AmiError``.

Events go to ``on_event(headers, received_at)`` synchronously, in wire order;
frames read in one socket read share one ``received_at`` from ``clock``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import structlog
from panoramisk.ami_protocol import AMIProtocol

from callcenter.runtime import wait_within

log = structlog.get_logger(__name__)

__all__ = [
    "NON_IDEMPOTENT_ACTIONS",
    "ActionRefused",
    "ActionTimeout",
    "AmiError",
    "AmiLink",
    "AuthenticationFailed",
    "ConnectFailed",
    "Frame",
    "FrameBuffer",
    "LinkDown",
    "command_output",
    "parse_frame",
]

EOL = b"\r\n"
END_OF_FRAME = b"\r\n\r\n"
BANNER_PREFIX = b"Asterisk Call Manager/"
MAX_LINE = 64 * 1024
STOP_WAIT_S = 5.0  # how long stop() waits for the connection task to end
MAX_FRAME = 4 * 1024 * 1024

#: Actions whose second execution would do something a second time (ring a
#: citizen, transfer a call, log or record twice). They are never re-sent, and an
#: error for them after they were written says the outcome is unknown.
NON_IDEMPOTENT_ACTIONS = frozenset({
    "agi", "atxfer", "blindtransfer", "bridge", "command", "messagesend",
    "mixmonitor", "monitor", "originate", "park", "playdtmf", "queuelog",
    "redirect", "sendtext", "userevent",
})

#: Actions the link performs itself; sending them through ``action()`` would
#: break its bookkeeping.
RESERVED_ACTIONS = frozenset({"login", "logoff", "challenge"})


# ---------------------------------------------------------------- errors


class AmiError(Exception):
    """Base of every error of the AMI link; ``str()`` is always one line."""


class ActionRefused(AmiError, ValueError):
    """The action was refused before anything was written (e.g. CR/LF in a value)."""


class ConnectFailed(AmiError):
    """Connecting or logging in failed (host unreachable, no answer, closed)."""


class AuthenticationFailed(ConnectFailed):
    """Asterisk refused the Username/Secret."""


class _OutcomeError(AmiError):
    """An action that may or may not have reached Asterisk.

    ``sent`` tells whether it was written to the socket; ``retry_safe`` whether
    the caller may send it again (idempotent, or never written).
    """

    def __init__(self, message: str, *, action: str, sent: bool, idempotent: bool) -> None:
        super().__init__(message)
        self.action = action
        self.sent = sent
        self.retry_safe = idempotent or not sent


class ActionTimeout(_OutcomeError):
    """No reply to the action within its timeout."""


class LinkDown(_OutcomeError):
    """The link was down, or went down before the action was answered."""


# ---------------------------------------------------------------- parsing


class Frame(dict[str, str]):
    """One AMI frame: a plain dict of headers as on the wire (first value wins).

    ``multi`` holds every value of a header that appeared more than once,
    ``loose`` the lines that were not ``Key: value``, ``problems`` what had to be
    sanitized. All three are empty for a well-formed frame.
    """

    multi: Mapping[str, list[str]] = MappingProxyType({})
    loose: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    def getall(self, key: str) -> list[str]:
        """Every value of ``key`` in wire order (``[]`` when absent)."""
        values = self.multi.get(key)
        if values is not None:
            return list(values)
        return [self[key]] if key in self else []


def parse_frame(raw: bytes) -> Frame:
    """Parse one complete frame (without its closing blank line).

    The fast path is one decode, one split and one pass of ``str.partition``
    (strings only: no per-line lists for the garbage collector to track);
    repeated headers, such as one ``ChanVariable`` per channel variable, go to
    ``multi`` on the way.  Anything unusual (a line without ``": "``, NUL, a bare
    LF, invalid UTF-8, blank lines) falls through to a careful path that
    sanitizes and records ``problems``.
    """
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return _parse_careful(raw)
    lines = text.split("\r\n")
    if "\x00" in text or text.count("\n") >= len(lines):
        return _parse_careful(raw)  # NUL, or a bare LF (legacy Command body)
    frame = Frame()
    multi: dict[str, list[str]] | None = None
    for line in lines:
        key, sep, value = line.partition(": ")
        if not key or not sep:
            return _parse_careful(raw)
        if key in frame:
            if multi is None:
                multi = {}
            multi.setdefault(key, [frame[key]]).append(value)
        else:
            frame[key] = value
    if multi is not None:
        frame.multi = multi
        merged = [k for k in ("Event", "Response", "ActionID") if k in multi]
        if merged:
            frame.problems = ("repeated " + "/".join(merged) + " (merged or cut frame)",)
    return frame


def _parse_careful(raw: bytes) -> Frame:
    problems: list[str] = []
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "replace")
        problems.append("invalid UTF-8 replaced")
    if "\x00" in text:
        text = text.replace("\x00", "")
        problems.append("NUL bytes removed")
    frame = Frame()
    multi: dict[str, list[str]] = {}
    loose: list[str] = []
    for line in text.split("\r\n"):
        if not line:
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")
        if not sep or not key or "\n" in key or "\r" in key:
            loose.append(line)
        elif key in frame:
            multi.setdefault(key, [frame[key]]).append(value)
        else:
            frame[key] = value
    if multi:
        frame.multi = multi
        merged = [k for k in ("Event", "Response", "ActionID") if k in multi]
        if merged:
            problems.append("repeated " + "/".join(merged) + " (merged or cut frame)")
    if loose:
        frame.loose = tuple(loose)
        if frame.get("Response") != "Follows":
            problems.append(f"{len(loose)} line(s) without 'Key: value'")
    if problems:
        frame.problems = tuple(problems)
    return frame


def command_output(frame: Mapping[str, str]) -> list[str]:
    """The output lines of a ``Command`` reply, whatever its shape.

    Asterisk 14+ sends one ``Output:`` header per line (panoramisk hands back a
    list, or a plain string for one line); older versions send a
    ``Response: Follows`` body ended by ``--END COMMAND--``.
    """
    if isinstance(frame, Frame):
        lines = frame.getall("Output")
        loose = frame.loose
    else:
        lines = [frame["Output"]] if "Output" in frame else []
        loose = ()
    if lines:
        return [part for line in lines for part in line.split("\n")]
    body = [part for line in loose for part in line.split("\n")]
    if body and body[-1] == "--END COMMAND--":
        body.pop()
    return body


class FrameBuffer:
    """Byte-exact frame reassembly across TCP reads.

    ``feed(data)`` returns the complete frames (bytes, blank line removed) and
    keeps the rest. A line longer than ``max_line`` is dropped up to its CRLF, a
    frame growing past ``max_frame`` is dropped up to its blank line; both are
    logged. With ``banner=True`` a leading ``Asterisk Call Manager/x.y.z`` line
    (which ends with a single CRLF) is taken off and kept in ``banner``.
    """

    def __init__(self, *, max_line: int = MAX_LINE, max_frame: int = MAX_FRAME,
                 banner: bool = False) -> None:
        self.max_line = max_line
        self.max_frame = max_frame
        self.banner: str | None = None
        self._want_banner = banner
        self._tail = b""
        self._skip_to: bytes | None = None  # terminator we are discarding bytes up to
        self._carry = b""                    # last bytes seen while discarding
        self._keep = b""                     # complete lines before a dropped long line
        self._dropped = 0

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the end of a frame."""
        return len(self._tail)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes read from the socket; return the frames they complete."""
        if self._skip_to is not None:
            data = self._skip(data)
            if not data:
                return []
        if self._tail:
            data = self._tail + data
        if self._want_banner:
            rest = self._take_banner(data)
            if rest is None:
                self._tail = data
                return []
            data = rest
        frames = data.split(END_OF_FRAME)
        self._tail = frames.pop()
        if len(self._tail) > self.max_line:
            self._limit_tail()
        if len(data) > self.max_line:
            frames = [f if len(f) <= self.max_line else self._cut_long_lines(f) for f in frames]
        return frames

    def _take_banner(self, data: bytes) -> bytes | None:
        if not (data.startswith(BANNER_PREFIX) or BANNER_PREFIX.startswith(data)):
            self._want_banner = False
            return data
        end = data.find(EOL)
        if end < 0:
            if len(data) > 1024:
                self._want_banner = False
                return data
            return None
        self._want_banner = False
        self.banner = data[:end].decode("utf-8", "replace")
        return data[end + 2:]

    def _limit_tail(self) -> None:
        tail = self._tail
        self._tail = b""
        if len(tail) > self.max_frame:
            self._start_skip(END_OF_FRAME, b"", tail)
            return
        last = tail.rfind(EOL)
        start = last + 2 if last >= 0 else 0
        line_length = len(tail) - start - (1 if tail.endswith(b"\r") else 0)  # "\r" of CRLF?
        if line_length > self.max_line:
            self._start_skip(EOL, tail[:last] if last >= 0 else b"", tail[start:])
        else:
            self._tail = tail

    def _start_skip(self, terminator: bytes, keep: bytes, skipped: bytes) -> None:
        width = len(terminator) - 1
        self._skip_to = terminator
        self._keep = keep
        self._carry = skipped[-width:]
        self._dropped = len(skipped) - len(self._carry)

    def _skip(self, data: bytes) -> bytes:
        assert self._skip_to is not None
        buf = self._carry + data
        end = buf.find(self._skip_to)
        if end < 0:
            width = len(self._skip_to) - 1
            self._carry = buf[-width:]
            self._dropped += len(buf) - len(self._carry)
            return b""
        what = "line" if self._skip_to == EOL else "frame"
        limit = self.max_line if self._skip_to == EOL else self.max_frame
        log.warning("ami.oversized_dropped", what=what, bytes=self._dropped + end, limit=limit)
        rest = self._keep + buf[end:] if self._skip_to == EOL else buf[end + 4:]
        self._skip_to, self._carry, self._keep, self._dropped = None, b"", b"", 0
        return rest

    def _cut_long_lines(self, frame: bytes) -> bytes:
        lines = frame.split(EOL)
        kept = [line for line in lines if len(line) <= self.max_line]
        for line in lines:
            if len(line) > self.max_line:
                log.warning("ami.oversized_dropped", what="line", bytes=len(line),
                            limit=self.max_line)
        return EOL.join(kept)


# ---------------------------------------------------------------- logging help

_NUMBER_HEADER = re.compile(
    r"(?im)^([\w()-]*?(?:CallerIDNum|ConnectedLineNum|CallerID|Exten|DNID|RDNIS)[ \t]*:[ \t]*)"
    r"([^\r\n]*)")
_LONG_DIGITS = re.compile(r"(?<![\d.])\d{7,}(?![\d.])")
_ESCAPES = {0: "\\0", 9: "\\t", 10: "\\n", 13: "\\r"} | {
    c: f"\\x{c:02x}" for c in (*range(1, 9), 11, 12, *range(14, 32), 127)}


def _mask_tail4(value: str) -> str:
    return "*" * max(len(value) - 4, 0) + value[-4:]


def _mask_numbers(text: str) -> str:
    """Mask caller numbers to their last 4 digits (named headers and digit runs)."""
    text = _NUMBER_HEADER.sub(
        lambda m: m[1] + (_mask_tail4(m[2]) if any(c.isdigit() for c in m[2]) else m[2]), text)
    return _LONG_DIGITS.sub(lambda m: _mask_tail4(m[0]), text)


def excerpt(raw: bytes, limit: int = 160) -> str:
    """A one-line, truncated, number-masked rendering of raw AMI bytes for logs."""
    text = _mask_numbers(raw[: limit * 4].decode("utf-8", "replace")).translate(_ESCAPES)
    if len(text) > limit or len(raw) > limit * 4:
        text = text[:limit] + f"...[{len(raw)} bytes]"
    return text


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


# ---------------------------------------------------------------- the link


@dataclass(slots=True)
class _Pending:
    """An action written to Asterisk and waiting for its reply."""

    name: str
    future: asyncio.Future[Any]
    idempotent: bool
    timeout: float
    timer: asyncio.TimerHandle | None = None
    items: list[Frame] | None = None  # set once a list reply has started
    sent: bool = False


@dataclass(slots=True)
class _Session:
    """State of one TCP connection."""

    protocol: _AmiProtocol
    lost: asyncio.Future[str]
    keepalive: asyncio.Task[None] | None = None
    watchdog: asyncio.TimerHandle | None = None
    dead: bool = False
    up_since: float = 0.0
    last_rx: float = 0.0  # loop time of the last bytes received: any frame proves life


class _AmiProtocol(AMIProtocol):
    """panoramisk's protocol with our byte-exact reader and a raw writer.

    panoramisk's ``send``, ``handle_message`` and ``close`` (which feeds the
    ``Manager`` replay queue) are never used.
    """

    def __init__(self, link: AmiLink) -> None:
        self._link = link
        self.frames = FrameBuffer(banner=True)
        self.session: _Session | None = None
        self.transport: asyncio.Transport | None = None
        self.version: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.log = log  # panoramisk sets a stdlib logger here

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is not None and session.dead:
            return
        # The banner is written on accept and can arrive (in pieces) before the session
        # exists: it is fed too, or its "\r" and "\n" end up in different frames.
        frames = self.frames.feed(data)
        if self.version is None and self.frames.banner is not None:
            self.version = self.frames.banner.partition("/")[2]
            log.debug("ami.banner", version=self.version)
        if session is None:
            if frames:
                log.warning("ami.frames_before_login", frames=len(frames))
            return
        session.last_rx = asyncio.get_running_loop().time()
        if frames:
            try:
                self._link._on_frames(frames)
            except Exception:  # a bug here must not take the transport down
                log.exception("ami.frames_failed", frames=len(frames))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.frames.pending:
            log.warning("ami.cut_frame_discarded", bytes=self.frames.pending)
        if self.session is not None:
            reason = "connection closed by peer" if exc is None else _describe(exc)
            self._link._drop(self.session, reason)

    def write(self, payload: bytes) -> None:
        """Write an already validated action."""
        assert self.transport is not None
        self.transport.write(payload)

    def send(self, data: Any, as_list: bool = False) -> Any:
        """Disabled: panoramisk's unguarded writer (use ``AmiLink.action``)."""
        raise NotImplementedError("use AmiLink.action()")

    def close(self, abort: bool = False) -> None:
        """Close the transport without touching panoramisk's replay queue."""
        if self.transport is not None and not self.transport.is_closing():
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        self.closed = True


def _describe(exc: BaseException) -> str:
    """A short reason for a socket error (no errno noise, no traceback)."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        if exc.errno and exc.errno > 0:
            return os.strerror(exc.errno)
        if exc.strerror:
            return exc.strerror
    return _one_line(str(exc)) or type(exc).__name__


def _check_header(name: str, key: object, value: object) -> list[str]:
    """Validate one header of an outgoing action; return its value(s) as text."""
    if not isinstance(key, str) or not key or key != key.strip():
        raise ActionRefused(f"AMI action {name} refused: bad header name {key!r:.40}")
    if any(c in key for c in "\r\n\x00:"):
        raise ActionRefused(f"AMI action {name} refused: header name {key!r:.40} contains "
                            "CR, LF, NUL or ':'")
    values = value if isinstance(value, list | tuple) else [value]
    out: list[str] = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ActionRefused(f"AMI action {name} refused: value of {key} is not text")
        text = str(item)
        if "\r" in text or "\n" in text or "\x00" in text:
            raise ActionRefused(f"AMI action {name} refused: value of {key} contains CR, LF or NUL")
        out.append(text)
    return out


class AmiLink:
    """A guarded, self-healing link to Asterisk's manager interface."""

    def __init__(self, host: str, port: int, username: str, secret: str, *,
                 events: str = "agent,call,system",
                 on_event: Callable[[dict[str, str], float], None],
                 on_link: Callable[[bool, str], None] | None = None,
                 on_connected: Callable[[AmiLink], Awaitable[None]] | None = None,
                 on_list: Callable[[str, list[Frame], float], None] | None = None,
                 ping_interval: float = 5.0, action_timeout: float = 10.0,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self.port = port
        self.where = f"{host}:{port}"
        self._login = {"Action": "Login", "Username": username, "Secret": secret,
                       "Events": events}
        self._on_event = on_event
        self._on_link = on_link
        self._on_connected = on_connected
        # Called synchronously when a list answer completes, at its place in the
        # event stream (e.g. to mark where a QueueStatus snapshot was taken).
        self._on_list = on_list
        self.ping_interval = ping_interval
        self.action_timeout = action_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        self._session: _Session | None = None
        self._up = False
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self._ids = itertools.count(1)
        self._id_prefix = f"hl-{uuid.uuid4().hex[:8]}-"
        self._random = random.Random()
        self._encode("Login", self._login)  # refuse CR/LF in credentials right away

    # ------------------------------------------------------------ public API

    @property
    def up(self) -> bool:
        """True between a successful login and the next drop."""
        return self._up

    async def start(self) -> None:
        """Begin connecting in the background; reconnect forever until ``stop()``.

        Also takes over a session opened by ``connect_once()``.
        """
        if self._runner is None or self._runner.done():
            self._stopping = False
            self._runner = asyncio.create_task(self._run(), name=f"ami-link {self.where}")

    async def connect_once(self) -> None:
        """Fail-fast path (``fail_fast=True``): connect and log in once, or raise.

        Raises ``ConnectFailed`` / ``AuthenticationFailed`` with a one-line
        message such as ``AMI login to 127.0.0.1:5038 failed: Authentication
        failed``. A later drop is not repaired (actions then raise ``LinkDown``).
        """
        if self._session is not None:
            return
        self._stopping = False
        session = await self._open_session()
        await self._connected(session)

    async def stop(self) -> None:
        """Stop reconnecting, close the connection, fail whatever is pending.

        The session is dropped before the connection task is cancelled and awaited: a
        cancellation lost on the way (Python 3.11's ``wait_for`` drops one that comes
        as its connect completes, gh-86296) left the task waiting for the session's end,
        which came only after the task had ended: ``stop`` never returned (a test's
        teardown standing still for its 300 s under load).  The task is given
        ``STOP_WAIT_S`` at most."""
        self._stopping = True
        runner, self._runner = self._runner, None
        if self._session is not None:
            self._drop(self._session, "stopped", abort=False)
        if runner is not None:
            runner.cancel()
            done, _ = await asyncio.wait({runner}, timeout=STOP_WAIT_S)
            if not done:
                log.error("ami.stop_gave_up_waiting", where=self.where, after_s=STOP_WAIT_S)
            elif not runner.cancelled() and runner.exception() is not None:
                log.error("ami.runner_failed", where=self.where,
                          error=_one_line(repr(runner.exception())))

    async def action(self, action: Mapping[str, Any], *, idempotent: bool | None = None,
                     timeout: float | None = None) -> dict[str, str] | list[dict[str, str]]:
        """Send one action and return its reply.

        A single reply comes back as a dict; a list reply (``EventList: start``,
        e.g. QueueStatus, QueueSummary, CoreShowChannels) as the list
        ``[response, event, ..., *Complete event]``. A ``Response: Error`` is
        returned, not raised. For ``Command`` the ``Output`` value is all output
        lines joined with ``\\n`` (``command()`` gives the list).

        Raises ``ActionRefused`` (nothing written), ``LinkDown``, ``ActionTimeout``.
        ``idempotent`` defaults to False for ``NON_IDEMPOTENT_ACTIONS``; it only
        decides ``retry_safe`` on errors: nothing is ever re-sent by the link.
        """
        name = self._action_name(action)
        action_id, payload = self._encode(name, action)
        if idempotent is None:
            idempotent = name.lower() not in NON_IDEMPOTENT_ACTIONS
        session = self._session
        if not self._up or session is None or session.dead:
            raise LinkDown(f"AMI link to {self.where} is down; {name} not sent",
                           action=name, sent=False, idempotent=idempotent)
        if action_id in self._pending:
            raise ActionRefused(f"AMI action {name} refused: ActionID {action_id!r:.60} in use")
        future = self._submit(session, action_id, name, payload, idempotent=idempotent,
                              timeout=self.action_timeout if timeout is None else timeout)
        try:
            reply = await future
        finally:
            self._forget(action_id, future)
        if name.lower() == "command" and isinstance(reply, Frame) and (
                "Output" in reply or reply.loose):
            reply["Output"] = "\n".join(command_output(reply))
        return reply

    async def command(self, command: str, *, timeout: float | None = None) -> list[str]:
        """Run a CLI command through the ``Command`` action; return its output lines."""
        reply = await self.action({"Action": "Command", "Command": command}, timeout=timeout)
        assert isinstance(reply, dict)
        return reply["Output"].split("\n") if reply.get("Output") else []

    # ------------------------------------------------------------ building actions

    @staticmethod
    def _action_name(action: Mapping[str, Any]) -> str:
        if not isinstance(action, Mapping):
            raise ActionRefused("AMI action refused: not a mapping")
        for key, value in action.items():
            if isinstance(key, str) and key.lower() == "action":
                if not isinstance(value, str) or not value.strip():
                    break
                name = value
                if any(c in name for c in "\r\n\x00"):
                    raise ActionRefused("AMI action refused: action name contains CR, LF or NUL")
                if name.lower() in RESERVED_ACTIONS:
                    raise ActionRefused(f"AMI action {name} refused: managed by the link itself")
                return name
        raise ActionRefused("AMI action refused: no 'Action' header")

    def _encode(self, name: str, action: Mapping[str, Any]) -> tuple[str, bytes]:
        """Validate every header, then serialize: Action, ActionID, the rest."""
        seen: set[str] = set()
        action_id = ""
        lines = [f"Action: {name}"]
        for key, value in action.items():
            values = _check_header(name, key, value)
            lower = key.lower()
            if lower in seen:
                raise ActionRefused(f"AMI action {name} refused: header {key} given twice")
            seen.add(lower)
            if lower == "action":
                continue
            if lower == "actionid":
                if len(values) != 1 or not values[0]:
                    raise ActionRefused(f"AMI action {name} refused: bad ActionID")
                action_id = values[0]
                continue
            lines.extend(f"{key}: {v}" for v in values)
        if not action_id:
            action_id = f"{self._id_prefix}{next(self._ids)}"
        lines.insert(1, f"ActionID: {action_id}")
        lines.append("\r\n")
        return action_id, "\r\n".join(lines).encode()

    # ------------------------------------------------------------ pending actions

    def _submit(self, session: _Session, action_id: str, name: str, payload: bytes, *,
                idempotent: bool, timeout: float) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        pending = _Pending(name, future, idempotent, timeout)
        pending.timer = loop.call_later(timeout, self._expire, action_id, pending)
        self._pending[action_id] = pending
        session.protocol.write(payload)
        pending.sent = True
        return future

    def _forget(self, action_id: str, future: asyncio.Future[Any]) -> None:
        pending = self._pending.get(action_id)
        if pending is not None and pending.future is future:
            del self._pending[action_id]
            if pending.timer is not None:
                pending.timer.cancel()

    def _expire(self, action_id: str, pending: _Pending) -> None:
        if self._pending.get(action_id) is pending:
            del self._pending[action_id]
        if not pending.future.done():
            log.warning("ami.action_timeout", action=pending.name, action_id=action_id,
                        timeout=pending.timeout)
            pending.future.set_exception(ActionTimeout(
                f"AMI action {pending.name} got no reply within {pending.timeout:g} s",
                action=pending.name, sent=pending.sent, idempotent=pending.idempotent))

    def _finish(self, action_id: str, pending: _Pending, result: Any) -> None:
        del self._pending[action_id]
        if pending.timer is not None:
            pending.timer.cancel()
        if not pending.future.done():
            pending.future.set_result(result)

    # ------------------------------------------------------------ incoming frames

    def _on_frames(self, frames: list[bytes]) -> None:
        """Hot path: parse each complete frame and route it, in wire order."""
        now = self._clock()
        pending = self._pending
        on_event = self._on_event
        for raw in frames:
            frame = parse_frame(raw)
            if frame.problems:
                log.warning("ami.bad_frame", problems="; ".join(frame.problems),
                            frame=excerpt(raw))
            action_id = frame.get("ActionID")
            if action_id is not None and action_id in pending and self._route(
                    action_id, pending[action_id], frame):
                continue
            if "Event" in frame:
                try:
                    on_event(frame, now)
                except Exception as exc:  # noqa: BLE001 - a consumer bug must not drop the link
                    log.error("ami.on_event_failed", ami_event=frame["Event"],
                              error=_one_line(repr(exc)))
            elif "Response" in frame:
                log.info("ami.unmatched_response", action_id=_one_line(action_id or "", 80),
                         response=_one_line(frame["Response"], 40))
            elif frame:
                log.warning("ami.frame_ignored", reason="no Event or Response",
                            frame=excerpt(raw))

    def _route(self, action_id: str, pending: _Pending, frame: Frame) -> bool:
        """Feed a frame carrying a pending ActionID; False means 'not a reply'."""
        items = pending.items
        if items is None:
            if "Response" not in frame:
                return False  # e.g. an event that merely echoes the ActionID
            if frame["Response"] == "Success" and (
                    frame.get("EventList", "").lower() == "start"
                    or "will follow" in frame.get("Message", "").lower()):
                pending.items = [frame]
            else:
                self._finish(action_id, pending, frame)
            return True
        if "Event" not in frame:
            log.warning("ami.unexpected_in_list", action=pending.name,
                        response=_one_line(frame.get("Response", ""), 40))
            return True
        items.append(frame)
        if frame.get("EventList", "").lower() == "complete" or frame["Event"].endswith("Complete"):
            self._finish(action_id, pending, items)
            if self._on_list is not None:  # in wire order, before any later frame
                try:
                    self._on_list(pending.name, items, self._clock())
                except Exception as exc:  # noqa: BLE001 - a consumer bug must not drop the link
                    log.error("ami.on_list_failed", action=pending.name,
                              error=_one_line(repr(exc)))
        return True

    # ------------------------------------------------------------ connection life

    async def _run(self) -> None:
        """Connect, log in, resync, wait for the drop, back off; until ``stop()``.

        The backoff grows with each failed attempt and starts again from
        ``backoff_initial`` once a session has stayed up for ``backoff_max``
        seconds, so a link that flaps right after login does not hammer Asterisk.
        """
        attempt = 0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            session = self._session  # already up after connect_once()?
            if session is None:
                try:
                    session = await self._open_session()
                except AmiError as exc:
                    delay = self._backoff(attempt)
                    attempt += 1
                    log.warning("ami.connect_failed", error=str(exc), retry_in_s=round(delay, 2))
                    await asyncio.sleep(delay)
                    continue
                if self._stopping:  # stop() came while it connected (and its cancel was lost)
                    self._drop(session, "stopped", abort=False)
                    break
                await self._connected(session)
                if self._stopping:
                    break
            reason = await session.lost
            if loop.time() - session.up_since >= self.backoff_max:
                attempt = 0
            if self._stopping:
                break
            delay = self._backoff(attempt)
            attempt += 1
            log.info("ami.reconnecting", reason=reason, retry_in_s=round(delay, 2))
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: 50-100 % of initial * 2**attempt, capped."""
        base = min(self.backoff_max, self.backoff_initial * 2 ** min(attempt, 32))
        return base * (0.5 + self._random.random() / 2)

    async def _open_session(self) -> _Session:
        """Connect and log in; raise a one-line ``ConnectFailed`` otherwise."""
        loop = asyncio.get_running_loop()
        protocol = _AmiProtocol(self)
        try:
            await wait_within(
                loop.create_connection(lambda: protocol, self.host, self.port),
                self.action_timeout)
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"AMI connect to {self.where} failed: {_describe(exc)}") from None
        session = _Session(protocol, loop.create_future())
        protocol.session = session
        self._session = session
        action_id, payload = self._encode("Login", self._login)
        future = self._submit(session, action_id, "Login", payload,
                              idempotent=True, timeout=self.action_timeout)
        try:
            reply = await future
        except LinkDown:
            raise ConnectFailed(
                f"AMI login to {self.where} failed: connection closed by peer") from None
        except ActionTimeout:
            self._drop(session, "no reply to Login")
            raise ConnectFailed(f"AMI login to {self.where} failed: no reply within "
                                f"{self.action_timeout:g} s") from None
        finally:
            self._forget(action_id, future)
        if reply.get("Response") != "Success":
            message = _one_line(reply.get("Message", "") or reply.get("Response", "refused"))
            self._drop(session, "login refused")
            raise AuthenticationFailed(f"AMI login to {self.where} failed: {message}")
        session.up_since = loop.time()
        self._up = True
        log.info("ami.link_up", where=self.where, version=protocol.version)
        self._notify_link(True, "logged in")
        session.keepalive = asyncio.create_task(self._keepalive(session))
        return session

    async def _connected(self, session: _Session) -> None:
        if self._on_connected is None or session.dead:
            return
        try:
            await self._on_connected(self)
        except AmiError as exc:
            log.warning("ami.on_connected_failed", error=str(exc))
        except Exception:
            log.exception("ami.on_connected_failed")

    async def _keepalive(self, session: _Session) -> None:
        """Ping every interval; the watchdog fires after 3 intervals without reply."""
        loop = asyncio.get_running_loop()
        window = 3 * self.ping_interval
        payload_head = b"Action: Ping\r\nActionID: "

        def expire() -> None:
            # A Pong stuck behind a long burst of events is no sign of death: anything
            # received within the window keeps the link, silence for the window drops it.
            quiet = loop.time() - session.last_rx
            if session.dead:
                return
            if quiet < window:
                session.watchdog = loop.call_later(window - quiet, expire)
                return
            self._drop(session, f"no Ping reply within {window:g} s")

        def alive(_: asyncio.Future[Any] | None = None) -> None:
            if _ is not None and (_.cancelled() or _.exception() is not None):
                return
            if session.dead:
                return
            if session.watchdog is not None:
                session.watchdog.cancel()
            session.watchdog = loop.call_later(window, expire)

        alive()
        while not session.dead:
            await asyncio.sleep(self.ping_interval)
            if session.dead:
                break
            action_id = f"{self._id_prefix}{next(self._ids)}"
            ping = self._submit(session, action_id, "Ping", payload_head + action_id.encode()
                                + b"\r\n\r\n", idempotent=True, timeout=window)
            ping.add_done_callback(alive)

    def _drop(self, session: _Session, reason: str, *, abort: bool = True) -> None:
        """Declare a session dead: close it, fail every pending action, notify."""
        if session.dead:
            return
        session.dead = True
        if session.watchdog is not None:
            session.watchdog.cancel()
        if session.keepalive is not None and session.keepalive is not asyncio.current_task():
            session.keepalive.cancel()
        session.protocol.close(abort=abort)
        if self._session is session:
            self._session = None
        pending, self._pending = self._pending, {}
        for action_id, item in pending.items():
            if item.timer is not None:
                item.timer.cancel()
            if not item.future.done():
                item.future.set_exception(LinkDown(
                    f"AMI link to {self.where} went down ({reason}) before {item.name} was "
                    "answered" + ("" if item.idempotent else "; outcome unknown, not re-sent"),
                    action=item.name, sent=item.sent, idempotent=item.idempotent))
            log.debug("ami.pending_failed", action=item.name, action_id=action_id)
        was_up, self._up = self._up, False
        if was_up:
            level = log.info if reason == "stopped" else log.warning
            level("ami.link_down", where=self.where, reason=reason)
            self._notify_link(False, reason)
        if not session.lost.done():
            session.lost.set_result(reason)

    def _notify_link(self, up: bool, reason: str) -> None:
        if self._on_link is None:
            return
        try:
            self._on_link(up, reason)
        except Exception as exc:  # noqa: BLE001 - a consumer bug must not drop the link
            log.error("ami.on_link_failed", error=_one_line(repr(exc)))
