"""Numbered live updates for websocket clients, resumable after a reconnect.

Theory of operation
-------------------
Every kind of screen has a *stream*: the wallboard's, and one per operator.  A
stream keeps its current document (a view from :mod:`agent_console.views`), a
number ``seq`` and the last few hundred updates.  An update is a list of small
patch operations turning document ``seq-1`` into document ``seq``::

    ["set", ["agents", "agent1001"], {...}]      ["del", ["alerts", "longest_wait:hotline"]]

The service calls :meth:`Hub.changed` from its one consumer; that only sets a
flag, so the consumer is never delayed.  The hub's own task rebuilds the views
(at most every ``min_interval``, at once for an *urgent* change such as a phone
starting to ring, and once a second for alerts that depend on the clock), diffs them and hands the serialised update to each client's
bounded queue.  Each client has its own sender task: a slow socket stalls only
itself.  When a client's queue is full it is emptied and the client is sent a
fresh snapshot instead (a *resync*), so a laggard costs memory of at most
``max_queue`` messages.

A client that reconnects names its stream id and the last ``seq`` it applied;
it gets the updates it missed from the stream's buffer, or a fresh snapshot
when they are gone (or the server restarted: the stream id changed).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from acd.state import Change

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
                if before.get(sub, _MISSING) != v:
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


_MISSING = object()
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

    def snapshot_message(self) -> str:
        return dumps({"type": "snapshot", "stream": self.id, "seq": self.seq, "at": self.at,
                      "data": self.doc})

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
                 urgent: Callable[[list[Change]], bool] | None = None) -> None:
        self.clock = clock
        self.min_interval = min_interval
        self.max_queue = max_queue
        self.refresh_every = refresh_every
        self.keep_idle_s = keep_idle_s
        self.id = secrets.token_hex(4)
        self.streams: dict[str, Stream] = {}
        self.dirty = asyncio.Event()
        self.hurry = asyncio.Event()
        self.urgent = urgent
        self.listeners: list[Callable[[list[Change]], None]] = []
        self._count = 0
        self.refreshes = 0

    # ---- called by the service's consumer: cheap and synchronous

    def changed(self, changes: list[Change]) -> None:
        for listen in self.listeners:
            listen(changes)
        self.dirty.set()
        if self.urgent is not None and self.urgent(changes):
            self.hurry.set()

    # ---- clients

    def attach(self, key: str, build: Callable[[float], Doc], stream_id: str | None = None,
               seq: int | None = None) -> Client:
        """A new client of stream ``key``; queued: what it missed, or a snapshot."""
        stream = self.streams.get(key)
        if stream is None:
            self._count += 1
            now = self.clock()
            stream = Stream(key, f"{self.id}.{self._count}", build, build(now), at=now)
            self.streams[key] = stream
        client = Client(stream, asyncio.Queue(self.max_queue))
        missed = stream.missed(stream_id, seq) if stream_id is not None and seq is not None \
            else None
        if missed is None or len(missed) >= self.max_queue:
            client.queue.put_nowait(RESYNC)
        else:
            client.sent_seq = seq if seq is not None else -1
            for n, text in missed:
                client.queue.put_nowait((n, text))
        stream.clients.add(client)
        stream.idle_since = None
        return client

    def detach(self, client: Client) -> None:
        stream = client.stream
        stream.clients.discard(client)
        if not stream.clients:
            stream.idle_since = self.clock()

    def next_message(self, client: Client, item: Any) -> str | None:
        """The text to send for a queued item (None: already covered by a snapshot)."""
        if item is RESYNC:
            client.sent_seq = client.stream.seq
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

    def _offer(self, client: Client, item: tuple[int, str]) -> None:
        if client.queue.full():  # a laggard: forget its backlog, send it a snapshot
            while not client.queue.empty():
                client.queue.get_nowait()
            client.queue.put_nowait(RESYNC)
            client.resyncs += 1
            log.info("slow websocket client resynced", stream=client.stream.key)
            return
        client.queue.put_nowait(item)

    # ---- the hub's own task

    def refresh(self) -> int:
        """Rebuild every watched stream; queue the updates.  Returns updates made."""
        now = self.clock()
        self.refreshes += 1
        made = 0
        for key, stream in list(self.streams.items()):
            if not stream.clients:
                if stream.idle_since is not None and now - stream.idle_since > self.keep_idle_s:
                    del self.streams[key]
                continue
            new = stream.build(now)
            ops = diff(stream.doc, new)
            if not ops:
                continue
            stream.doc = new
            stream.seq += 1
            stream.at = now
            text = dumps({"type": "update", "stream": stream.id, "seq": stream.seq, "at": now,
                          "ops": ops})
            stream.updates.append((stream.seq, text))
            for client in list(stream.clients):
                self._offer(client, (stream.seq, text))
            made += 1
        return made

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.dirty.wait(), timeout=self.refresh_every)
            except TimeoutError:
                pass
            self.dirty.clear()
            self.hurry.clear()
            try:
                self.refresh()
            except Exception:  # a view that fails must not stop the pushes for good
                log.exception("view refresh failed")
            try:  # at most one refresh per min_interval, unless something is urgent
                await asyncio.wait_for(self.hurry.wait(), timeout=self.min_interval)
            except TimeoutError:
                pass
