"""Numbered live updates for websocket clients, resumable after a reconnect.

Theory of operation
-------------------
Every kind of screen has a *stream*: the wallboard's, and one per operator.  A
stream keeps its current document (a view from :mod:`agent_console.views`), a
number ``seq`` and the last few hundred updates.  An update is a list of small
patch operations turning document ``seq-1`` into document ``seq``::

    ["set", ["agents", "agent1001"], {...}]      ["del", ["alerts", "longest_wait:hotline"]]

The service calls :meth:`Hub.changed` from its one consumer; that only notes
what changed, so the consumer is never delayed.  The hub's own task rebuilds the
views, diffs them and hands the serialised update to each client's bounded queue.

Streams are *wide* (the wallboard: any change may show on it) or *narrow* (an
operator's console: only changes routed to its key by ``route`` show on it).
Three cadences:

* *urgent* (a phone starts to ring or connects): at once, only the narrow
  streams the change was routed to: a ring costs one or two screens, not 1,100;
* *normal*: at most every ``min_interval`` while something changed: the narrow
  streams routed to since the last refresh, and the wide streams (at most every
  ``wide_interval``: 100 wallboards share one stream, but each update is
  sent 100 times);
* *full*: every ``refresh_every``: every wide stream (alerts that depend on the
  clock) and the shared document; of the narrow streams, whose content never
  depends on the clock, only a *sweep* slice, so that each is rebuilt once per
  ``sweep_every`` (anything a route missed); every stream when a change no
  route could place came (a PBX link went up or down) or :meth:`Hub.rebuild_all`
  was called (a new shift).  A full refresh is done in slices, so an urgent one
  can go in between.  (Rebuilding all 5,000 operator screens every second took
  40 % of the core's CPU in the scale-out bench and delayed the pops behind it.)

What every operator screen shows alike (the queue figures) is not part of any
operator's stream: it is the hub's *shared* document (``shared_build``), rebuilt
at most every ``shared_every`` (a full refresh) and, when it changed, sent as one ``{"type": "shared",
"seq", "at", "data"}`` message: queued to each narrow client that asked for it
(``attach(..., shared=True)``: the service's own sockets) and handed once to each
``shared_listeners`` callback (the bus publisher: one entry for 5,000 screens).
The browser merges ``data`` into its screen's document (``static/common.js``).  So a
caller joining a queue changes no operator stream, and a full refresh of 5,000
screens whose own state did not change sends nothing.  A shared client's
snapshot carries the shared document merged in, and a client that resumes is sent
the current shared message after what it missed, so a reconnecting screen is
consistent; the operator stream's ``stream``/``seq`` stay the resume point.

Each client has its own sender task: a slow socket stalls only itself.  When a
client's queue is full it is emptied and the client is sent a fresh snapshot
instead (a *resync*), so a laggard costs memory of at most ``max_queue``
messages.  A stream's document is brought up to date in place, value by
value (:func:`adopt`).

A client that reconnects names its stream id and the last ``seq`` it applied;
it gets the updates it missed from the stream's buffer, or a fresh snapshot
when they are gone (or the server restarted: the stream id changed).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from acd.state import Change
from callcenter.runtime import wait_within

log = structlog.get_logger(__name__)

Doc = dict[str, Any]
Op = list[Any]

#: Top-level keys whose values are maps patched entry by entry.
DEEP_KEYS = frozenset({"agents", "queues", "alerts"})


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def diff(old: Doc, new: Doc) -> list[Op]:
    """Patch operations turning ``old`` into ``new`` (two levels deep for DEEP_KEYS)."""
    ops: list[Op] = []
    for key in old.keys() - new.keys():
        ops.append(["del", [key]])
    for key, value in new.items():
        before = old.get(key, _MISSING)
        if before == value and key in old:
            continue
        if key in DEEP_KEYS and isinstance(before, dict) and isinstance(value, dict):
            for sub in before.keys() - value.keys():
                ops.append(["del", [key, sub]])
            for sub, v in value.items():
                was = before.get(sub, _MISSING)
                if was is not v and was != v:  # (most are the very object: a tile kept)
                    ops.append(["set", [key, sub], v])
        else:
            ops.append(["set", [key], value])
    return ops


def apply_ops(doc: Doc, ops: list[Op]) -> Doc:
    """Apply patch operations in place (what the browser's live.js does); return ``doc``."""
    for op in ops:
        kind, path = op[0], op[1]
        target = doc
        for part in path[:-1]:
            target = target.setdefault(part, {})
        if kind == "set":
            target[path[-1]] = op[2]
        elif kind == "del":
            target.pop(path[-1], None)
    return doc


def adopt(doc: Doc, new: Doc, ops: list[Op]) -> Doc:
    """Bring a stream's kept document ``doc`` up to ``new`` in place; return it.

    Only the top-level values the ``ops`` touch are taken from ``new`` (objects
    a view may share between streams, such as the operators' queue figures:
    never changed afterwards); everything else stays the object it was.  So a
    refresh allocates no new long-lived document per screen, and the cyclic
    garbage collector has little new to scan (its full scans are what stands
    the loop still).
    """
    for key in {op[1][0] for op in ops}:
        if key in new:
            doc[key] = new[key]
        else:
            doc.pop(key, None)
    return doc


_MISSING = object()


def _due(last: float, now: float, every: float) -> bool:
    """Whether ``every`` seconds have passed since ``last`` on the hub's clock (a timer
    firing a millisecond early counts; a clock stepped back makes it due at once, so
    nothing freezes until the clock catches up)."""
    return not last <= now < last + every - 1e-3
RESYNC = object()  # in a client's queue: "send a fresh snapshot now"


@dataclass(frozen=True, slots=True)
class Direct:
    """A reply to one client (pong, error), queued behind what it was already sent."""

    text: str


@dataclass(eq=False)
class Client:
    stream: Stream
    queue: asyncio.Queue[Any]
    sent_seq: int = -1
    resyncs: int = 0
    shared: bool = False  # also gets the hub's shared messages (merged into its snapshots)


@dataclass(eq=False)
class Stream:
    """One screen kind's document, its number and its recent updates."""

    key: str
    id: str
    build: Callable[[float], Doc]
    doc: Doc
    seq: int = 0
    at: float = 0.0
    updates: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=256))
    clients: set[Client] = field(default_factory=set)
    idle_since: float | None = None
    narrow: bool = False  # rebuilt only when a change is routed to it (or on its sweep)

    def snapshot_message(self, shared: Doc | None = None) -> str:
        """The snapshot a browser gets; ``shared``: the hub's shared document, merged in."""
        data = self.doc if not shared else {**self.doc, **shared}
        return dumps({"type": "snapshot", "stream": self.id, "seq": self.seq, "at": self.at,
                      "data": data})

    def missed(self, stream_id: str, seq: int) -> list[tuple[int, str]] | None:
        """The updates after ``seq``, or None when they cannot all be given."""
        if stream_id != self.id or seq > self.seq or seq < 0:
            return None
        if seq == self.seq:
            return []
        if not self.updates or self.updates[0][0] > seq + 1:
            return None
        return [(n, text) for n, text in self.updates if n > seq]


class Hub:
    """Streams of numbered view updates, fanned out through bounded per-client queues."""

    def __init__(self, *, clock: Callable[[], float] = time.time, min_interval: float = 0.1,
                 max_queue: int = 32, refresh_every: float = 1.0, keep_idle_s: float = 900.0,
                 urgent: Callable[[list[Change]], bool] | None = None,
                 route: Callable[[list[Change]], Iterable[str] | None] | None = None,
                 keep_updates: int = 256, keep_updates_narrow: int = 16,
                 slice_size: int = 100, wide_interval: float | None = None,
                 sweep_every: float = 30.0, shared_every: float | None = None) -> None:
        self.clock = clock
        self.min_interval = min_interval
        self.wide_interval = min_interval if wide_interval is None else wide_interval
        self.max_queue = max_queue
        self.refresh_every = refresh_every
        self.sweep_every = max(sweep_every, refresh_every)
        #: at most how often the shared document is rebuilt and sent (default: each full
        #: refresh)
        self.shared_every = refresh_every if shared_every is None else shared_every
        self._shared_at = -math.inf
        self.keep_idle_s = keep_idle_s
        self.keep_updates = keep_updates
        self.keep_updates_narrow = keep_updates_narrow
        self.slice_size = slice_size
        self.id = secrets.token_hex(4)
        self.streams: dict[str, Stream] = {}
        self.dirty = asyncio.Event()
        self.hurry = asyncio.Event()
        self.urgent = urgent
        self.route = route
        self.listeners: list[Callable[[list[Change]], None]] = []
        self._count = 0
        self.refreshes = 0
        self.full = False  # True while a full refresh builds (views may refresh shared parts)
        self.full_refreshes = 0
        self._pending: set[str] = set()  # narrow streams routed to since their last rebuild
        self._urgent: set[str] = set()  # of those, the ones an urgent change was routed to
        self._everything = False  # a change no route could place: rebuild every stream
        self._sweep: list[str] = []  # narrow streams the sweep has still to rebuild
        self._sweep_n = 1  # how many of them each full refresh takes
        self._sweep_started = -math.inf  # when the current pass began (hub clock)
        #: passes over every stream begun: a sweep's, or a refresh of everything (what a
        #: view's own cache of every agent renews itself by)
        self.sweeps = 0
        self.rebuilds = 0  # full refreshes of every stream (a link change, rebuild_all)
        # the shared document of operator screens (see the module's docstring)
        self.shared_build: Callable[[float], Doc] | None = None
        self.shared_doc: Doc | None = None
        self.shared_seq = 0
        self.shared_text: str | None = None
        self.shared_clients: set[Client] = set()
        self.shared_listeners: list[Callable[[str], None]] = []

    # ---- called by the service's consumer: cheap and synchronous

    def changed(self, changes: list[Change]) -> None:
        for listen in self.listeners:
            listen(changes)
        urgent = bool(changes) and self.urgent is not None and self.urgent(changes)
        keys = self.route(changes) if self.route is not None and changes else None
        if keys is None:  # no routing (or a bare wake-up): rebuild every stream
            self._everything = True
        else:
            keys = set(keys)
            self._pending |= keys
            if urgent:
                self._urgent |= keys
        self.dirty.set()
        if urgent:
            self.hurry.set()

    def rebuild_all(self) -> None:
        """Rebuild every stream at the next refresh (what every view shows changed
        without a change to route: a new shift's totals)."""
        self._everything = True
        self.dirty.set()

    # ---- clients

    def attach(self, key: str, build: Callable[[float], Doc], stream_id: str | None = None,
               seq: int | None = None, *, narrow: bool = False,
               queue: Any = None, shared: bool = False) -> Client:
        """A new client of stream ``key``; queued: what it missed, or a snapshot.

        A *narrow* stream is rebuilt only for changes routed to ``key`` (and on
        its sweep, once per ``sweep_every``); it keeps ``keep_updates_narrow`` updates for resuming.
        ``queue``: what the client's items go to instead of a bounded asyncio.Queue
        (anything with its ``put_nowait``/``get_nowait``/``full``/``empty``: the bus
        publisher of :mod:`callcenter.web` stands in for the web workers' sockets).
        ``shared``: the client also gets the hub's shared messages (after what it
        missed, the current one; its snapshots carry the shared document).
        """
        stream = self.streams.get(key)
        if stream is None:
            self._count += 1
            now = self.clock()
            keep = self.keep_updates_narrow if narrow else self.keep_updates
            stream = Stream(key, f"{self.id}.{self._count}", build, build(now), at=now,
                            updates=deque(maxlen=keep), narrow=narrow)
            self.streams[key] = stream
        elif not stream.clients and stream.narrow:
            # Nobody watched it, so refreshes skipped it: bring it up to date soon.
            self._pending.add(key)
            self.dirty.set()
        client = Client(stream, asyncio.Queue(self.max_queue) if queue is None else queue,
                        shared=shared)
        missed = stream.missed(stream_id, seq) if stream_id is not None and seq is not None \
            else None
        if missed is None or len(missed) >= self.max_queue - 1:
            client.queue.put_nowait(RESYNC)  # (its snapshot carries the shared document)
        else:
            client.sent_seq = seq if seq is not None else -1
            for n, text in missed:
                client.queue.put_nowait((n, text))
            if shared and (text := self.current_shared()[1]) is not None:
                client.queue.put_nowait(Direct(text))
        if shared:
            self.shared_clients.add(client)
        stream.clients.add(client)
        stream.idle_since = None
        return client

    def detach(self, client: Client) -> None:
        stream = client.stream
        stream.clients.discard(client)
        self.shared_clients.discard(client)
        if not stream.clients:
            stream.idle_since = self.clock()

    def next_message(self, client: Client, item: Any) -> str | None:
        """The text to send for a queued item (None: already covered by a snapshot)."""
        if item is RESYNC:
            client.sent_seq = client.stream.seq
            if client.shared:
                return client.stream.snapshot_message(self.current_shared()[0])
            return client.stream.snapshot_message()
        if isinstance(item, Direct):
            return item.text
        n, text = item
        if n <= client.sent_seq:
            return None
        client.sent_seq = n
        return text

    def reply(self, client: Client, message: dict[str, Any]) -> None:
        """Queue a reply for one client (dropped if it is lagging: a snapshot is due)."""
        if not client.queue.full():
            client.queue.put_nowait(Direct(dumps(message)))

    def resync(self, client: Client) -> None:
        """Send this client a fresh snapshot (it asked for one)."""
        if client.queue.full():
            while not client.queue.empty():
                client.queue.get_nowait()
        client.queue.put_nowait(RESYNC)

    def _offer(self, client: Client, item: tuple[int, str] | Direct) -> None:
        if client.queue.full():  # a laggard: forget its backlog, send it a snapshot
            while not client.queue.empty():
                client.queue.get_nowait()
            client.queue.put_nowait(RESYNC)
            client.resyncs += 1
            log.info("slow websocket client resynced", stream=client.stream.key)
            return
        client.queue.put_nowait(item)

    def current_shared(self) -> tuple[Doc | None, str | None]:
        """The shared document and its ``shared`` message, built first if there is none
        yet; (None, None) without a builder."""
        if self.shared_text is None:
            self.refresh_shared(self.clock())
        return self.shared_doc, self.shared_text

    def refresh_shared(self, now: float) -> bool:
        """Rebuild the shared document; when it changed, one ``shared`` message to the
        shared clients and to each listener.  True when it changed."""
        if self.shared_build is None:
            return False
        new = self.shared_build(now)
        if new == self.shared_doc:
            return False
        self.shared_doc = new
        self.shared_seq += 1
        text = self.shared_text = dumps({"type": "shared", "seq": self.shared_seq, "at": now,
                                         "data": new})
        for client in list(self.shared_clients):
            self._offer(client, Direct(text))
        for listen in self.shared_listeners:
            listen(text)
        return True

    # ---- the hub's own task

    def refresh(self, only: Iterable[str] | None = None, *, wide: bool = True) -> int:
        """Rebuild watched streams; queue the updates.  Returns updates made.

        ``only=None``: every stream.  Otherwise the streams named in ``only``,
        and (``wide=True``) every wide stream.
        """
        now = self.clock()
        self.refreshes += 1
        if only is None:
            streams = list(self.streams.values())
        else:  # by key, not by a walk over 1,100 streams: urgent refreshes come often
            found = {k: st for k in only if (st := self.streams.get(k)) is not None}
            if wide:
                found.update((st.key, st) for st in self.streams.values() if not st.narrow)
            streams = list(found.values())
        return self._rebuild(streams, now)

    def _rebuild(self, streams: list[Stream], now: float) -> int:
        made = 0
        for stream in streams:
            if not stream.clients:
                if (stream.idle_since is not None and now - stream.idle_since > self.keep_idle_s
                        and self.streams.get(stream.key) is stream):
                    del self.streams[stream.key]
                continue
            try:
                new = stream.build(now)
            except Exception:  # one view that fails must not stop the others' refresh
                log.exception("view refresh failed", stream=stream.key)
                continue
            ops = diff(stream.doc, new)
            if not ops:
                continue
            adopt(stream.doc, new, ops)
            stream.seq += 1
            stream.at = now
            text = dumps({"type": "update", "stream": stream.id, "seq": stream.seq, "at": now,
                          "ops": ops})
            stream.updates.append((stream.seq, text))
            for client in list(stream.clients):
                self._offer(client, (stream.seq, text))
            made += 1
        return made

    def _take_urgent(self) -> set[str]:
        keys, self._urgent = self._urgent, set()
        self._pending -= keys
        return keys

    def _sweep_slice(self, now: float) -> list[Stream]:
        """The narrow streams this full refresh rebuilds: the next of them in turn.  A
        pass over every narrow stream begins every ``sweep_every`` (by the hub's clock;
        a clock stepped back begins one at once) and takes that long; ``sweeps`` counts
        the passes begun."""
        if not self._sweep:
            if not _due(self._sweep_started, now, self.sweep_every):
                return []  # this pass is done; the next begins on time
            self._sweep_started = now
            self.sweeps += 1
            self._sweep = [k for k, st in self.streams.items() if st.narrow]
            self._sweep_n = max(1, math.ceil(len(self._sweep) * self.refresh_every
                                             / self.sweep_every))
        keys, self._sweep = self._sweep[:self._sweep_n], self._sweep[self._sweep_n:]
        return [st for k in keys if (st := self.streams.get(k)) is not None]

    async def _full_refresh(self) -> int:
        """The wide streams and a sweep slice of the narrow ones (every stream when
        ``_everything``), a slice at a time; urgent changes go in between slices."""
        everything, self._everything = self._everything, False
        now = self.clock()
        if everything:  # a pass over every stream: the next sweep begins after it
            self._pending.clear()
            self._sweep = []
            self._sweep_started = now
            self.sweeps += 1
            self.rebuilds += 1
        self._urgent.clear()
        self.refreshes += 1
        self.full_refreshes += 1
        if everything:
            streams = list(self.streams.values())
        else:  # the screens routed to since the last refresh first, then the wide ones
            keys, self._pending = self._pending, set()
            swept = self._sweep_slice(now)
            routed = [st for k in keys if (st := self.streams.get(k)) is not None]
            seen = {id(st) for st in routed}
            streams = [*routed, *(st for st in self.streams.values() if not st.narrow),
                       *(st for st in swept if id(st) not in seen)]
        made = 0
        if everything or _due(self._shared_at, now, self.shared_every):
            self._shared_at = now
            self.full = True
            try:  # the figures every operator screen shares: one message, not one each
                self.refresh_shared(now)
            except Exception:  # the screens' own refresh still runs
                log.exception("shared figures refresh failed")
            finally:
                self.full = False
        for i in range(0, len(streams), self.slice_size):
            now = self.clock()
            self.full = True
            try:
                made += self._rebuild(streams[i:i + self.slice_size], now)
            finally:
                self.full = False
            if i + self.slice_size < len(streams):
                await asyncio.sleep(0)  # let the sockets and the consumer run
                if self._urgent:
                    self.refresh(self._take_urgent(), wide=False)
        return made

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last_full = last_normal = last_wide = loop.time()
        wide_due = False  # something changed since the wide streams were last rebuilt
        while True:
            try:
                await wait_within(self.dirty.wait(),
                                  max(0.0, last_full + self.refresh_every - loop.time()))
            except TimeoutError:
                pass
            changed = self.dirty.is_set()
            self.dirty.clear()
            self.hurry.clear()
            t = loop.time()
            try:
                if self._everything or t - last_full >= self.refresh_every:
                    last_full = last_normal = last_wide = t
                    wide_due = False
                    await self._full_refresh()
                elif t - last_normal >= self.min_interval:
                    last_normal = t
                    wide_due = wide_due or changed
                    wide = wide_due and t - last_wide >= self.wide_interval
                    if wide:
                        last_wide, wide_due = t, False
                    self._urgent.clear()
                    keys, self._pending = self._pending, set()
                    self.refresh(keys, wide=wide)
                else:  # an urgent change inside min_interval: only its screens now
                    wide_due = wide_due or changed
                    self.refresh(self._take_urgent(), wide=False)
                if wide_due or self._pending:
                    self.dirty.set()  # the rest at the next normal refresh
            except Exception:  # a view that fails must not stop the pushes for good
                log.exception("view refresh failed")
            # at most one normal refresh per min_interval, unless something is urgent
            wait = last_normal + self.min_interval - loop.time()
            if wait > 0 and not self._urgent:
                try:
                    await wait_within(self.hurry.wait(), wait)
                except TimeoutError:
                    pass
