"""Recording every answered call through AMI ``MixMonitor``, and indexing the file.

When an operator answers (the call's ``answered`` change) the recorder asks
Asterisk to record the caller's channel::

    Action: MixMonitor
    Channel: <the caller's channel>
    File: YYYY-MM-DD/<uniqueid>.wav      (relative: Asterisk's monitor directory)
    Options: b                           (only while bridged)

``recordings.root`` must be that directory as this host sees it (the same disk,
or a mount of it).  When Asterisk reports ``MixMonitorStop`` for the channel
(or the call completes; Asterisk sends both), the file is indexed under the call's
uniqueid once it is on disk, by one wait per call; a file that never appears is
counted and logged, not invented: at most one ``recording_missing`` line a minute
(:data:`MISSING_LOG_EVERY_S`), with the number of calls missing since the last one.

The channel and the uniqueid come from the PBX, so they are input
(``ivr/values.py``): a channel name with a comma, CR, LF, quote or a non-ASCII digit
(full-width digits become ASCII), or a uniqueid that is not ``<epoch>.<seq>`` (a
comma or CR in it would end up in ``File=``), is logged and not recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from acd.state import CallChanged, Change, Outcome
from ivr.values import ami_action
from ivr.values import uniqueid as checked_uniqueid
from recordings.store import RecordingStore, path_for

log = structlog.get_logger("recordings.monitor")

Send = Callable[[dict[str, Any]], Awaitable[Any]]
MISSING_LOG_EVERY_S = 60.0  # one recording_missing line at most, carrying the count


class CallRecorder:
    """Starts MixMonitor on the PBX that carries each answered call and indexes the file.

    With several PBXs (``send_to(pbx)`` gives each PBX's send) a call off the home PBX
    is recorded under ``<pbx>/YYYY-MM-DD/<uniqueid>.wav`` and indexed under its key
    ``<pbx>:<uniqueid>`` (:attr:`acd.state.Call.key`), since Uniqueids repeat across
    PBXs; the home PBX's keep their bare Uniqueids and paths."""

    def __init__(self, store: RecordingStore, send: Send, *, wait_s: float = 10.0,
                 poll_s: float = 0.25, send_to: Callable[[str], Send] | None = None,
                 home: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.send = send
        self.send_to = send_to
        self.home = home
        self.wait_s = wait_s
        self.poll_s = poll_s
        # (pbx, caller channel) -> key of the call being recorded (its Uniqueid at home),
        # and back: each looked up once per answer and completion (a scan of the
        # values took 9 % of the core at 10,000 events/s, ~2,000 recordings waited for)
        self.started: dict[tuple[str, str], str] = {}
        self._started_where: dict[str, set[tuple[str, str]]] = {}
        self._paths: dict[str, str] = {}  # key -> file path under the store's root
        self._indexing: set[str] = set()  # keys whose file is being waited for
        self.clock = clock
        self._missing_unlogged = 0  # calls whose file never came, since the last line
        self._missing_logged_at = float("-inf")
        self.tasks: set[asyncio.Task[None]] = set()
        self.recorded = 0
        self.failed = 0

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ---- inputs

    def changed(self, changes: list[Change]) -> None:
        """A service subscriber: start recording on answer, index on completion."""
        for c in changes:
            if not isinstance(c, CallChanged):
                continue
            call = c.call
            pbx = self._off_home(call.pbx)
            key = call.key if pbx else call.uniqueid
            if c.what == "answered" and call.channel and key not in self._started_where:
                self._started_where[key] = set()  # taken now: a second answer starts none
                self._spawn(self._start(key, call.uniqueid, call.channel, pbx))
            elif c.what == "completed" and call.outcome is Outcome.COMPLETED \
                    and key in self._started_where:
                self._index_once(key)

    def on_ami_event(self, headers: Mapping[str, str], at: float, pbx: str = "") -> None:
        """``MixMonitorStop`` from PBX ``pbx`` ("" or the home PBX's name: the home)."""
        if headers.get("Event") == "MixMonitorStop":
            key = self.started.get((self._off_home(pbx), headers.get("Channel", "")))
            if key is not None:
                self._index_once(key)

    def _off_home(self, pbx: str) -> str:
        """"" for the home PBX (and for every call with a single PBX), else the name."""
        return "" if self.send_to is None or pbx == self.home else pbx

    # ---- work

    async def _start(self, key: str, uniqueid: str, channel: str, pbx: str = "") -> None:
        from callcenter.pbx.ami import AmiError

        try:
            rel = path_for(checked_uniqueid(uniqueid))
            if pbx:
                rel = f"{pbx}/{rel}"
            action = ami_action({"Action": "MixMonitor", "Channel": channel, "File": rel,
                                 "Options": "b"})
        except ValueError as exc:  # BadValue, or a uniqueid path_for cannot date
            log.warning("recording_skipped", call=key[:64], why=str(exc))
            self._forget(key)
            return
        self._note_started((pbx, channel), key)
        self._paths[key] = rel
        send = self.send_to(pbx) if pbx and self.send_to is not None else self.send
        try:
            reply = await send(action)
        except AmiError as exc:
            self.failed += 1
            self._forget(key)
            log.warning("recording_not_started", call=key, error=str(exc))
            return
        if isinstance(reply, Mapping) and str(reply.get("Response", "")).lower() == "error":
            self.failed += 1
            self._forget(key)
            log.warning("recording_refused", call=key, message=reply.get("Message", ""))

    def _index_once(self, key: str) -> None:
        """Wait for ``key``'s file unless a wait for it is running already (the call's
        completion and its ``MixMonitorStop`` both ask)."""
        if key not in self._indexing:
            self._indexing.add(key)
            self._spawn(self._index(key))

    async def _index(self, uniqueid: str) -> None:
        try:
            if self.store.get(uniqueid) is not None:
                return
            rel = self._paths.get(uniqueid) or path_for(uniqueid)
            path = self.store.root / rel
            waited, pause = 0.0, self.poll_s
            while not path.is_file():
                if waited >= self.wait_s:
                    self._missing(uniqueid, rel)
                    self._forget(uniqueid)
                    return
                # poll_s, then twice as long each time up to 2 s: a file that comes at
                # once is found at once, one that never comes costs ~8 looks, not 40
                pause = min(pause, self.wait_s - waited)
                await asyncio.sleep(pause)
                waited += pause
                pause = min(2 * pause, max(2.0, self.poll_s))
            if self.store.get(uniqueid) is None:
                self.store.add(uniqueid, rel)
                self.recorded += 1
            self._forget(uniqueid)
        finally:
            self._indexing.discard(uniqueid)

    def _missing(self, key: str, rel: str) -> None:
        """Count a call whose file never came; log it, or with the others since the last
        line once :data:`MISSING_LOG_EVERY_S` has passed (a PBX that writes no files
        misses every call: a line each flooded the log)."""
        self.failed += 1
        self._missing_unlogged += 1
        now = self.clock()
        if now - self._missing_logged_at < MISSING_LOG_EVERY_S:
            return
        log.warning("recording_missing", call=key, path=rel, calls=self._missing_unlogged)
        self._missing_logged_at, self._missing_unlogged = now, 0

    def _note_started(self, where: tuple[str, str], key: str) -> None:
        old = self.started.get(where)
        if old is not None and old != key:  # the channel records another call now
            self._started_where[old].discard(where)
            if not self._started_where[old]:
                del self._started_where[old]
        self.started[where] = key
        self._started_where.setdefault(key, set()).add(where)

    def _forget(self, uniqueid: str) -> None:
        for where in self._started_where.pop(uniqueid, ()):
            if self.started.get(where) == uniqueid:
                del self.started[where]
        self._paths.pop(uniqueid, None)

    async def stop(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*list(self.tasks), return_exceptions=True)
