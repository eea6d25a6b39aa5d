"""The live bus between processes: Redis Streams (redis-py asyncio).

Theory of operation
-------------------
The core computes each live view once (``agent_console.hub``); for a view that many
screens share (the wallboard) it also *publishes* every numbered update once, to one
Redis stream, and web workers relay it to their own websockets::

    core: Hub stream "wall" --(seq, ops)--> BusPublisher --XADD--> redis <prefix>:wall
    web worker: BusFollower --XREAD BLOCK--> doc + recent entries --> its websockets

An entry's id *is* the browser's resume point: the publisher gives every entry the
explicit id ``<epoch>-<seq>``, where ``epoch`` is the core's start in milliseconds and
``seq`` the hub's update number; browsers know it as ``stream = "bus-<epoch>"`` and
``seq``, exactly the pair ``/ws`` already resumes from.  A core that restarts (or the
standby taking over) starts a new epoch, whose first entry is a snapshot.

Entries are ``snapshot`` (the whole document: at the start of an epoch, when the
publisher fell behind, and every ``snapshot_every`` s so a late reader replays little)
or ``update`` (patch ops turning entry ``seq-1`` into ``seq``).  The stream is capped
(``MAXLEN ~``), so Redis holds minutes, not history.  A follower that starts (or
restarts) finds the newest snapshot and replays the updates after it: it catches up
from the stream, never from the core.  Publishing never blocks the core's consumer:
messages queue (bounded) and one task sends them in pipelined batches; when Redis is
away the queue is dropped and the next entry sent is a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from callcenter.runtime import wait_within

log = structlog.get_logger(__name__)

Doc = dict[str, Any]


def entry_id(epoch: int, seq: int) -> str:
    return f"{epoch}-{seq}"


def stream_name(epoch: int) -> str:
    """The ``stream`` a browser is told (and sends back to resume)."""
    return f"bus-{epoch}"


def parse_resume(stream: str | None, seq: str | int | None) -> tuple[int, int] | None:
    """(epoch, seq) from a browser's ``?stream=bus-<epoch>&seq=<n>``, or None."""
    if not stream or not stream.startswith("bus-") or len(stream) > 24 or seq is None:
        return None
    try:
        epoch, n = int(stream[4:]), int(seq)
    except ValueError:
        return None
    return (epoch, n) if epoch > 0 and n >= 0 else None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class TextDoc:
    """A follower's copy of a document, held as JSON text: the text of a base document
    and the texts of the patches since, applied only when the whole document is asked
    for (a screen opens) or when ``most`` patches wait (then the base is renewed).

    A worker keeps every screen's document (5,000 operators, and the wallboard of
    5,000 tiles); held as dicts, each patch made new long-lived containers, and the
    cyclic collector's full runs over them stood the worker's loop still for 0.25-0.6 s
    (every ~30 s in the scale-out bench).  Strings are not scanned by the collector;
    parsing happens at the rare snapshot, and the temporary dicts die at once.

    ``whole``: the patch texts are whole update messages (their ``"ops"`` is the
    patch) rather than bare lists of patch operations."""

    __slots__ = ("base", "patches", "whole")

    def __init__(self, base: str, *, whole: bool = False) -> None:
        self.base = base
        self.patches: list[str] = []
        self.whole = whole

    def patch(self, text: str, most: int) -> None:
        self.patches.append(text)
        if len(self.patches) >= most:
            self.compact()

    def value(self) -> Doc:
        """The document now (a new dict each call)."""
        doc = json.loads(self.base)
        for text in self.patches:
            ops = json.loads(text)
            _apply_ops(doc, (ops.get("ops") or []) if self.whole else ops)
        return doc

    def compact(self) -> str:
        """The document's text, the patches folded into the base; returns the base."""
        if self.patches:
            self.base = _dumps(self.value())
            self.patches = []
        return self.base


class StreamTask:
    """One Redis stream, ``<prefix>:<view>``, and the one task that writes or reads it:
    the base of the four bus ends (:class:`BusPublisher`, :class:`MuxPublisher`,
    :class:`BusFollower`, :class:`KeyedFollower`).

    ``start()`` runs ``_prepare()`` then the task, which calls ``_step()`` until stopped;
    a ``RedisError``/``OSError`` from a step calls ``_failed(exc)`` and retries after 1 s.
    ``stop()`` lets the step in flight end for up to ``stop_grace`` s (0: cancel at once),
    then cancels, then closes the client."""

    task_name = "bus"
    stop_grace = 0.0

    def __init__(self, url: str, prefix: str, view: str, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = aioredis.from_url(url)
        self.key = f"{prefix}:{view}"
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        await self._prepare()
        self._task = asyncio.create_task(self._run(), name=f"{self.task_name}-{self.key}")

    async def stop(self) -> None:
        self._stopping = True  # (redis-py may turn a cancellation into a RedisError)
        if self._task:
            if self.stop_grace:
                await asyncio.wait({self._task}, timeout=self.stop_grace)
            if not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=2)
        await close_redis(self.redis)

    async def _prepare(self) -> None:
        """Before the task starts (nothing by default)."""

    async def _step(self) -> None:
        raise NotImplementedError

    def _failed(self, exc: Exception) -> None:
        """Redis failed during a step (the task retries 1 s later)."""

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._step()
            except (RedisError, OSError) as exc:
                if self._stopping:
                    return
                self._failed(exc)
                await asyncio.sleep(1.0)


class StreamPublisher(StreamTask):
    """A stream's writer: entry ids ``<epoch>-<n>``, the epoch after any already in the
    stream (ids only grow, so a restarted or standby core never reuses one)."""

    task_name = "bus-publisher"

    def __init__(self, url: str, prefix: str, view: str, *, epoch: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(url, prefix, view, clock=clock)
        self.epoch = epoch if epoch is not None else int(clock() * 1000)
        self.wake = asyncio.Event()
        self.published = 0
        self.dropped = 0

    async def _prepare(self) -> None:
        with contextlib.suppress(RedisError, OSError):  # Redis away: the task retries
            newest = await self.redis.xrevrange(self.key, count=1)
            if newest:
                self.epoch = max(self.epoch, int(newest[0][0].decode().split("-")[0]) + 1)


class StreamFollower(StreamTask):
    """A stream's reader: ``_catch_up()`` from what the capped stream holds, then
    ``XREAD BLOCK`` from ``last_id`` on, each entry to ``_take(id, fields, live=True)``;
    after a Redis error it catches up again.  ``stop()`` waits for the blocking read in
    flight (at most ``block_ms``): redis-py may never finish a cancelled blocking read."""

    task_name = "bus-follower"
    read_count = 500

    def __init__(self, url: str, prefix: str, view: str, *,
                 clock: Callable[[], float] = time.time, block_ms: int = 1000) -> None:
        super().__init__(url, prefix, view, clock=clock)
        self.block_ms = block_ms
        self.stop_grace = block_ms / 1000 + 2
        self.last_id = "0-0"
        self.connected = False

    async def _catch_up(self) -> None:
        raise NotImplementedError

    def _take(self, raw_id: bytes, fields: dict[bytes, bytes], *, live: bool) -> None:
        raise NotImplementedError

    def _read(self) -> None:
        """After the catch-up and after every read (nothing by default)."""

    async def _step(self) -> None:
        await self._catch_up()
        self.connected = True
        self._read()
        while not self._stopping:
            got = await self.redis.xread({self.key: self.last_id}, block=self.block_ms,
                                         count=self.read_count)
            for _key, entries in got or ():
                for raw_id, fields in entries:
                    self._take(raw_id, fields, live=True)
            self._read()

    def _failed(self, exc: Exception) -> None:
        self.connected = False
        log.warning("bus read failed; catching up again", key=self.key, error=str(exc))


class BusPublisher(StreamPublisher):
    """Publishes one view's numbered updates to ``<prefix>:<view>`` (never blocks)."""

    def __init__(self, url: str, prefix: str, view: str,
                 snapshot: Callable[[], tuple[int, Doc]], *,
                 epoch: int | None = None, maxlen: int = 5000, snapshot_every: float = 30.0,
                 max_backlog: int = 1000, clock: Callable[[], float] = time.time) -> None:
        super().__init__(url, prefix, view, epoch=epoch, clock=clock)
        self.snapshot = snapshot
        self.maxlen = maxlen
        self.snapshot_every = snapshot_every
        self.backlog: deque[tuple[int, dict[str, str]]] = deque()
        self.max_backlog = max_backlog
        self.last_seq = -1
        self._need_snapshot = True
        self._last_snapshot = 0.0

    def update(self, seq: int, ops: list[Any]) -> None:
        """The view's update ``seq`` (patch ``ops`` turning ``seq-1`` into ``seq``);
        queued, sent by the publisher task."""
        if len(self.backlog) >= self.max_backlog:  # Redis slow or away: start over
            self.backlog.clear()
            self.dropped += 1
            self._need_snapshot = True
        self.backlog.append((seq, {"kind": "update", "at": repr(self.clock()),
                                   "ops": json.dumps(ops, ensure_ascii=False,
                                                     separators=(",", ":"))}))
        self.wake.set()

    def resync(self) -> None:
        """The next entry is a snapshot (the view's own subscriber fell behind)."""
        self._need_snapshot = True
        self.wake.set()

    async def _step(self) -> None:
        with contextlib.suppress(TimeoutError):  # time for a periodic snapshot
            await wait_within(self.wake.wait(), self.snapshot_every)
        self.wake.clear()
        await self._send()

    def _failed(self, exc: Exception) -> None:
        log.warning("bus publish failed; a snapshot follows", key=self.key, error=str(exc))
        self.backlog.clear()
        self._need_snapshot = True

    async def _send(self) -> None:
        now = self.clock()
        pipe = self.redis.pipeline(transaction=False)
        n = 0
        if self._need_snapshot or now - self._last_snapshot >= self.snapshot_every:
            seq, doc = self.snapshot()
            pending = [(s, f) for s, f in self.backlog if s <= seq]
            covered = [s for s, _ in pending] == list(range(self.last_seq + 1, seq + 1))
            if (not self._need_snapshot and not covered
                    and now - self._last_snapshot < 2 * self.snapshot_every):
                # A periodic snapshot, but the updates up to the document are not all
                # queued yet (the view's subscriber is a turn behind): at the next send.
                # Sent without them it would be a bare snapshot, which readers that are
                # current cannot take as an update: 1.8 MB to every wallboard socket.
                seq = self.last_seq
            if seq > self.last_seq:  # (else nothing is new since the last entry, no gap)
                fields = {"kind": "snapshot", "at": repr(now),
                          "doc": json.dumps(doc, ensure_ascii=False, separators=(",", ":"))}
                if not self._need_snapshot and covered:
                    # A periodic snapshot (for late readers) with every update up to it
                    # at hand: those go out as themselves and the last rides in the
                    # snapshot, so readers that are current stay on updates (a snapshot
                    # of the wallboard is megabytes to every socket of every worker).
                    for s, f in pending[:-1]:
                        pipe.xadd(self.key, f, id=entry_id(self.epoch, s),
                                  maxlen=self.maxlen, approximate=True)
                    fields["ops"] = pending[-1][1]["ops"]
                self.backlog = deque((s, f) for s, f in self.backlog if s > seq)
                pipe.xadd(self.key, fields, id=entry_id(self.epoch, seq),
                          maxlen=self.maxlen, approximate=True)
                self.last_seq, n = seq, len(pending) if "ops" in fields else 1
                self._need_snapshot, self._last_snapshot = False, now
            elif self._need_snapshot or covered:  # nothing new since the last entry
                self._need_snapshot, self._last_snapshot = False, now
        while self.backlog:
            seq, fields = self.backlog.popleft()
            if seq <= self.last_seq:
                continue  # covered by the snapshot just sent
            if seq != self.last_seq + 1:  # a gap (dropped): the readers need a snapshot
                self._need_snapshot = True
                self.wake.set()
                break
            pipe.xadd(self.key, fields, id=entry_id(self.epoch, seq), maxlen=self.maxlen,
                      approximate=True)
            self.last_seq, n = seq, n + 1
        if n:
            await pipe.execute()
            self.published += n


@dataclass(slots=True)
class Entry:
    epoch: int
    seq: int
    kind: str  # "snapshot" | "update"
    at: float
    text: str  # the websocket message, as browsers get it


class BusFollower(StreamFollower):
    """Follows ``<prefix>:<view>``: the current document, the recent messages, and a
    callback for every new one (a web worker's fan-out)."""

    def __init__(self, url: str, prefix: str, view: str, *, keep: int = 256,
                 on_entry: Callable[[Entry], None] | None = None,
                 on_lag: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.time, block_ms: int = 1000) -> None:
        super().__init__(url, prefix, view, clock=clock, block_ms=block_ms)
        self.keep = keep
        self.on_entry = on_entry
        self.on_lag = on_lag
        self.text: TextDoc | None = None  # the document (see TextDoc)
        self.epoch = 0
        self.seq = -1
        self.at = 0.0
        self.recent: deque[Entry] = deque(maxlen=keep)
        self.ready = asyncio.Event()
        self._snapshot_text: tuple[int, int, str] = (0, -1, "")

    @property
    def doc(self) -> Doc | None:
        """The document now (a new dict each call; None before the first snapshot)."""
        return None if self.text is None else self.text.value()

    def snapshot_message(self) -> str:
        """The document as a snapshot message, serialised once per (epoch, seq): every
        wallboard that (re)connects gets it, and it is megabytes with 5,000 operators."""
        assert self.text is not None
        if self._snapshot_text[:2] != (self.epoch, self.seq):
            self._snapshot_text = (self.epoch, self.seq, _message_text(
                "snapshot", stream_name(self.epoch), self.seq, self.at, "data",
                self.text.compact()))
        return self._snapshot_text[2]

    def missed(self, epoch: int, seq: int) -> list[Entry] | None:
        """The messages after (epoch, seq), or None when a snapshot is needed."""
        if epoch != self.epoch or seq > self.seq or self.text is None:
            return None
        after = [e for e in self.recent if e.seq > seq]
        if len(after) != self.seq - seq:
            return None
        return after

    async def _catch_up(self) -> None:
        """From the newest snapshot in the stream, replay what follows it."""
        start = None
        async for batch in self._reverse(500):
            for raw_id, fields in batch:
                if fields.get(b"kind") == b"snapshot":
                    start = raw_id
                    break
            if start is not None:
                break
        if start is None:
            self.last_id = "0-0" if self.text is None else self.last_id
            return
        self.text = None
        for raw_id, fields in await self.redis.xrange(self.key, min=start):
            self._take(raw_id, fields, live=False)

    async def _reverse(self, count: int) -> Any:
        top = "+"
        while True:
            batch = await self.redis.xrevrange(self.key, max=top, count=count)
            if not batch:
                return
            yield batch
            if len(batch) < count:
                return
            epoch, seq = (int(p) for p in batch[-1][0].decode().split("-"))
            if seq == 0:
                return
            top = entry_id(epoch, seq - 1)

    def _take(self, raw_id: bytes, fields: dict[bytes, bytes], *, live: bool) -> None:
        rid = raw_id.decode()
        self.last_id = rid
        epoch, seq = (int(p) for p in rid.split("-"))
        kind = fields.get(b"kind", b"").decode()
        at = float(fields.get(b"at", b"0"))
        current = self.text is not None and epoch == self.epoch and seq == self.seq + 1
        if kind == "snapshot" and not (current and b"ops" in fields):
            self.text = TextDoc(fields[b"doc"].decode())
            self.epoch, self.seq, self.at = epoch, seq, at
            self.recent.clear()
            entry = Entry(epoch, seq, kind, at, self.snapshot_message())
        elif kind in ("update", "snapshot") and current:  # (a snapshot carrying its update)
            assert self.text is not None
            ops = fields[b"ops"].decode()
            if kind == "snapshot":  # the document after this update, whole: a new base
                self.text = TextDoc(fields[b"doc"].decode())
            else:
                self.text.patch(ops, self.keep)
            kind = "update"
            self.seq, self.at = seq, at
            entry = Entry(epoch, seq, kind, at, _message_text(
                "update", stream_name(epoch), seq, at, "ops", ops))
            self.recent.append(entry)
        else:
            return  # an update without its base: the next snapshot brings this reader back
        if live:
            if self.on_lag:
                self.on_lag(max(0.0, self.clock() - at))
            if self.on_entry:
                self.on_entry(entry)

    def _read(self) -> None:
        if self.text is not None:
            self.ready.set()


def _message_text(kind: str, stream: str, seq: int, at: float, field: str, body: str) -> str:
    """``{"type": kind, "stream", "seq", "at", field: body}`` as the hub writes it, with
    ``body`` already JSON text (not parsed and written again)."""
    return (f'{{"type":{_dumps(kind)},"stream":{_dumps(stream)},"seq":{int(seq)},'
            f'"at":{_dumps(at)},{_dumps(field)}:{body}}}')


async def close_redis(redis: aioredis.Redis) -> None:
    """Close the client; redis-py's close can wait forever on a connection whose blocking
    read was cancelled, so it gets 2 s, then the sockets are dropped."""
    try:
        async with asyncio.timeout(2.0):
            await redis.aclose()
    except TimeoutError:
        await redis.connection_pool.disconnect(inuse_connections=True)


def _apply_ops(doc: Doc, ops: list[Any]) -> None:
    """The hub's patch operations (``agent_console.hub.apply_ops``; this wing may not
    import the console)."""
    for op in ops:
        kind, path = op[0], op[1]
        target = doc
        for part in path[:-1]:
            target = target.setdefault(part, {})
        if kind == "set":
            target[path[-1]] = op[2]
        elif kind == "del":
            target.pop(path[-1], None)


# --------------------------------------------------------------------------- keyed views


class MuxPublisher(StreamPublisher):
    """Publishes many narrow views (one per operator screen) on one stream,
    ``<prefix>:<view>``: each entry carries the messages queued since the last one
    (:func:`pack`), each naming its view ``key`` and holding the message the browser gets
    (whose ``stream``/``seq`` are the view's own numbering, the resume point a browser
    asks with); entry ids are ``<epoch>-<n>``, ``n`` counting the entries.
    Never blocks the caller; when Redis is slow or away the backlog is dropped and
    ``on_gap()`` is called, so the core sends every watched view a snapshot again."""

    def __init__(self, url: str, prefix: str, view: str, *, maxlen: int = 1000,
                 max_backlog: int = 20000, batch_max: int = 2000,
                 on_gap: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(url, prefix, view, clock=clock)
        self.maxlen = maxlen
        self.batch_max = batch_max
        self.max_backlog = max_backlog
        self.on_gap = on_gap
        self.n = 0
        self.backlog: deque[dict[str, str]] = deque()

    def add(self, key: str, kind: str, text: str) -> None:
        """Queue one message of view ``key`` (kind "snapshot" or "update")."""
        if len(self.backlog) >= self.max_backlog:
            self._gap()
            return
        self.backlog.append({"key": key, "kind": kind, "at": repr(self.clock()), "text": text})
        self.wake.set()

    def _gap(self) -> None:
        self.backlog.clear()
        self.dropped += 1
        if self.on_gap is not None:
            self.on_gap()

    async def _step(self) -> None:
        await self.wake.wait()
        self.wake.clear()
        while self.backlog:
            # One entry carries every message queued now (up to batch_max): the per-entry
            # cost of Redis and of redis-py, not the bytes, is what limits a stream of
            # many small messages.
            batch = [self.backlog.popleft()
                     for _ in range(min(self.batch_max, len(self.backlog)))]
            self.n += 1
            await self.redis.xadd(self.key, {"at": repr(self.clock()), "batch": pack(batch)},
                                  id=entry_id(self.epoch, self.n), maxlen=self.maxlen,
                                  approximate=True)
            self.published += len(batch)

    def _failed(self, exc: Exception) -> None:
        log.warning("bus publish failed; every view gets a snapshot", key=self.key,
                    error=str(exc))
        self._gap()


SHARED = "*shared"
"""The key of the messages every keyed view shares (no view key starts with ``*``)."""

RS, US = "\x1e", "\x1f"  # record and unit separators: JSON text never holds them raw


def pack(batch: list[dict[str, str]]) -> str:
    """Messages (key, kind, at, text) as one string: ASCII RS between records, US between
    fields (JSON escapes every control character, so neither occurs in the text)."""
    return RS.join(f"{m['key']}{US}{m['kind']}{US}{m['at']}{US}{m['text']}" for m in batch)


def unpack(data: str) -> list[tuple[str, str, float, str]]:
    out = []
    for record in data.split(RS):
        parts = record.split(US, 3)
        if len(parts) == 4:
            try:
                out.append((parts[0], parts[1], float(parts[2]), parts[3]))
            except ValueError:
                continue
    return out


@dataclass(slots=True)
class KeyedView:
    """A follower's copy of one narrow view: the browser's stream id, the number of the
    last update applied, the document (as text, :class:`TextDoc`; its patches are the
    update messages, the newest of ``recent``), and the recent update messages."""

    stream: str
    seq: int
    text: TextDoc
    at: float
    recent: deque[tuple[int, str, float]]  # (seq, message, when it came)

    @property
    def doc(self) -> Doc:
        """The document now (a new dict each call)."""
        return self.text.value()

    def snapshot_message(self, shared: Doc | None = None) -> str:
        """The snapshot a browser gets; ``shared``: the screens' shared document (the
        queue figures), merged in so the screen is whole at once."""
        if not shared:
            return _message_text("snapshot", self.stream, self.seq, self.at, "data",
                                 self.text.compact())
        return _dumps({"type": "snapshot", "stream": self.stream, "seq": self.seq,
                       "at": self.at, "data": {**self.text.value(), **shared}})

    def missed(self, stream: str, seq: int) -> list[str] | None:
        """The update messages after ``seq`` of ``stream``, or None (a snapshot is due)."""
        if stream != self.stream or seq > self.seq or seq < 0:
            return None
        after = [text for n, text, _ in self.recent if n > seq]
        return after if len(after) == self.seq - seq else None

    def forget_before(self, when: float) -> bool:
        """Drop the updates that came before ``when`` (a browser back after that gets a
        snapshot); with none left, fold the document's patches into its text.  True when
        anything was let go."""
        recent = self.recent
        dropped = False
        while recent and recent[0][2] < when:
            recent.popleft()
            dropped = True
        if not recent and self.text.patches:
            self.text.compact()
            dropped = True
        return dropped


class KeyedFollower(StreamFollower):
    """Follows a :class:`MuxPublisher`'s stream: one :class:`KeyedView` per key, rebuilt
    from its snapshots and updates; ``on_entry(key, text)`` for every message applied, and
    ``on_missing(key)`` when a key's update came without its base (the worker then asks
    the core for a snapshot).  A follower that (re)starts replays the capped stream.

    Messages of key :data:`SHARED` (kind ``shared``) are what every view shows alike
    (the operators' queue figures, one message for all screens): the newest is kept
    (``shared_doc``/``shared_text``) and handed to ``on_shared(text)`` unless it repeats
    the one kept (the core sends it again for readers that start late)."""

    read_count = 100

    def __init__(self, url: str, prefix: str, view: str, *, keep: int = 8,
                 keep_s: float = 60.0,
                 on_entry: Callable[[str, str], None] | None = None,
                 on_missing: Callable[[str], None] | None = None,
                 on_lag: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.time, block_ms: int = 1000) -> None:
        super().__init__(url, prefix, view, clock=clock, block_ms=block_ms)
        self.keep = keep
        self.keep_s = keep_s
        self.on_entry = on_entry
        self.on_missing = on_missing
        self.on_lag = on_lag
        self.views: dict[str, KeyedView] = {}
        self.on_shared: Callable[[str], None] | None = None
        self.shared_doc: Doc | None = None
        self.shared_text: str | None = None
        self.changed: dict[str, asyncio.Event] = {}
        self.caught_up = asyncio.Event()

    async def wait_view(self, key: str, timeout: float) -> KeyedView | None:
        """The key's view, waiting up to ``timeout`` s for its first snapshot."""
        if key in self.views:
            return self.views[key]
        event = self.changed.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await wait_within(event.wait(), timeout)
        return self.views.get(key)

    async def prune(self, slice_size: int = 250) -> int:
        """Let go of what every view holds for resuming beyond ``keep_s`` s (and fold its
        patches), ``slice_size`` views a turn of the loop; the views pruned.  Run every
        ``keep_s / 2`` s by the worker, so what a worker holds stays about the screens and
        the last minute's updates, however long it runs: with a count alone (``keep``),
        5,000 quiet screens filled their buffers for ten minutes and more (the
        scale-out bench's worker RSS grew ~5 MB a minute)."""
        when = self.clock() - self.keep_s
        keys = list(self.views)
        pruned = 0
        for i in range(0, len(keys), slice_size):
            for key in keys[i:i + slice_size]:
                view = self.views.get(key)
                if view is not None and view.forget_before(when):
                    pruned += 1
            await asyncio.sleep(0)
        return pruned

    def _take(self, raw_id: bytes, fields: dict[bytes, bytes], *, live: bool) -> None:
        self.last_id = raw_id.decode()
        oldest = None
        for key, kind, at, text in unpack(fields.get(b"batch", b"").decode()):
            if self._message(key, kind, at, text, live) and (oldest is None or at < oldest):
                oldest = at
        if oldest is not None and self.on_lag:  # once per entry: its oldest message's lag
            self.on_lag(max(0.0, self.clock() - oldest))

    def _message(self, key: str, kind: str, at: float, text: str, live: bool) -> bool:
        """Apply one message; True when it was news handed on live."""
        if kind == "shared":
            return self._shared(text, live)
        try:
            msg = json.loads(text)
            stream, seq = str(msg["stream"]), int(msg["seq"])
        except (ValueError, KeyError, TypeError):
            return False
        view = self.views.get(key)
        if kind == "snapshot":
            data = msg.get("data")
            view = self.views[key] = KeyedView(
                stream, seq, TextDoc(_dumps(data if isinstance(data, dict) else {}),
                                     whole=True), at, deque(maxlen=self.keep))
        elif view is not None and view.stream == stream and seq == view.seq + 1:
            view.text.patch(text, self.keep)  # (kept in recent too: the same string)
            view.seq, view.at = seq, at
            now = self.clock()
            view.recent.append((seq, text, now))
            view.forget_before(now - self.keep_s)
        else:
            if view is not None and view.stream == stream and seq <= view.seq:
                return False  # already applied (a snapshot taken after it came first)
            self.views.pop(key, None)
            if live and self.on_missing is not None:
                self.on_missing(key)
            return False
        event = self.changed.pop(key, None)
        if event is not None:
            event.set()
        if live and self.on_entry:
            self.on_entry(key, text)
        return live

    def _shared(self, text: str, live: bool) -> bool:
        if text == self.shared_text:  # sent again for late readers: not news
            return False
        try:
            data = json.loads(text)["data"]
        except (ValueError, KeyError, TypeError):
            return False
        if not isinstance(data, dict):
            return False
        self.shared_doc, self.shared_text = data, text
        if live and self.on_shared:
            self.on_shared(text)
        return live

    async def _catch_up(self) -> None:
        """Once: replay what the capped stream holds (after an error, read on from
        ``last_id``)."""
        if not self.caught_up.is_set():
            for raw_id, fields in await self.redis.xrange(self.key):
                self._take(raw_id, fields, live=False)
            self.caught_up.set()
