"""The composition root: builds the service and wires event -> handler in one place.

Theory of operation
-------------------
::

    AMI bytes -> AmiLink (guarded panoramisk) -> on_event() enqueues (headers, at)
      -> one consumer: to_event() -> CallCenter.apply() -> [Change]
      -> CHANGE_HANDLERS: metrics book, database batch, push hub, alerts

The AMI callback only enqueues; a single consumer applies events in wire order,
so there are no locks.  Database writes are batched and flushed every half
second (a visit's record is upserted, agent state changes are appended).  A
ticker feeds :class:`~acd.events.Tick` so wrap-up timers fire without sleeping
in the core.  On every (re)connect the link asks the PBX for its full picture
(QueueStatus + CoreShowChannels) and feeds it as one :class:`~acd.events.Resync`;
it asks again when the PBX says it is fully booted (a QueueStatus right after an
Asterisk restart can answer 0 members while app_queue is still reloading them).
Whenever an event names a member or caller the state does not know, it asks for a
QueueStatus alone and feeds its answer as a :class:`~acd.events.Refresh` at the point
of the event stream where the answer ended (the ``on_list`` hook, in wire order): it
only adds unknown members and waiting callers, so it never counts anything twice.  When the
service can read Asterisk's queue_log (a file, or the realtime ``queue_log``
table), the resync carries its lines and every gap is rebuilt from them exactly.

At start the service loads today's records, restores each operator's figures from
them, and hands every visit the database still holds open (waiting or answered) back
to the centre: the first resync settles them with the PBX's word (exactly from
queue_log when readable, else estimated and marked so).

Several PBXs (``[[pbx]]``): one guarded link and one pure
:class:`~acd.state.CallCenter` per PBX (a :class:`PbxEdge`), every link feeding the
same inbox and the same consumer, each item naming its PBX.  ``centre`` is then a
:class:`~acd.centres.Centres` over them; figures are kept per PBX and for the whole
centre; actions go out on :meth:`Service.link_for` the PBX that owns the channel or
member.  One PBX down only marks its own part down.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from acd import events as ev
from acd import queue_log
from acd.centres import Centres, pbx_of
from acd.metrics import MetricsBook, queue_json
from acd.state import (
    Agent,
    AgentChanged,
    Anomaly,
    Call,
    CallCenter,
    CallChanged,
    Change,
    LinkStateChanged,
    Outcome,
    PbxRestarted,
    QueueChanged,
    ResyncWanted,
    call_key_prefix,
)
from callcenter import report_days
from callcenter.config import AmiSettings, Settings
from callcenter.db import RowsUnwritten, Store
from callcenter.pbx.ami import AmiError, AmiLink

log = structlog.get_logger(__name__)

#: ActionID prefix of a refresh's QueueStatus (its answer is a Refresh, not a Checkpoint).
REFRESH_ID = "refresh-"
#: Seconds between two refreshes of one PBX at most (a burst of unknown names makes one
#: or two QueueStatus, not one per event).
REFRESH_EVERY_S = 1.0


def mask_number(num: str) -> str:
    """Never log a full caller number: keep the last four digits."""
    return ("*" * max(0, len(num) - 4) + num[-4:]) if num else ""


@dataclass(eq=False)
class PbxEdge:
    """One PBX as the service holds it: its settings, its pure centre, its guarded link
    and what the service remembers of it (the last event's time, restarts, resyncs)."""

    settings: AmiSettings
    centre: CallCenter
    book: MetricsBook
    link: Any = None  # AmiLink (tests put a fake in its place)
    last_at: float = 0.0
    last_resync: float = 0.0
    resync_task: asyncio.Task[None] | None = None
    #: The mid-traffic QueueStatus (a Refresh): one in flight, ``refresh_again`` when an
    #: unknown name came meanwhile; ``last_refresh`` on the monotonic clock.
    refresh_task: asyncio.Task[None] | None = None
    refresh_again: bool = False
    last_refresh: float = -1e9
    refreshes: int = 0
    #: Asterisk restarts and counter resets seen (at, booted_at, what), newest last.
    restarts: list[tuple[float, float | None, str]] = field(default_factory=list)
    events_applied: int = 0
    events_skipped: int = 0
    #: Finished visits its centre let go of (its buffer of finished visits is full once
    #: this has moved: :meth:`Service.seal_let_go`).
    visits_let_go: int = 0

    @property
    def name(self) -> str:
        return self.settings.name


class Service:
    """AMI links + state + metrics + persistence + push, for one PBX or several."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.book = MetricsBook(settings.servicelevel_for, settings.short_abandon_s)
        #: Every PBX by name, the home PBX first (its record keys are bare Uniqueids).
        self.edges: dict[str, PbxEdge] = {}
        for a in settings.pbxs:
            centre = CallCenter(settings.queues, settings.default_queue_config(), pbx=a.name,
                                key_prefix=call_key_prefix(a.name, settings.ami.name))
            # With one PBX its figures are the centre's: one book serves both.
            book = self.book if len(settings.pbxs) == 1 else MetricsBook(
                settings.servicelevel_for, settings.short_abandon_s)
            self.edges[a.name] = PbxEdge(a, centre, book)
        self.home = next(iter(self.edges.values()))
        self.centres: dict[str, CallCenter] = {n: e.centre for n, e in self.edges.items()}
        #: The centre consoles read: the one PBX's own, or a view over all of them.
        self.centre: CallCenter | Centres = (
            self.home.centre if len(self.edges) == 1 else Centres(self.centres))
        self.store = Store(settings.database_url)
        self.inbox: asyncio.Queue[tuple[dict[str, str] | None, Any]] = asyncio.Queue()
        self.subscribers: list[Callable[[list[Change]], None]] = []
        #: Raw AMI events the state does not model, by name (OriginateResponse,
        #: MixMonitorStop ...): for the dialer and the recorder.  Called on receipt.
        self.raw_listeners: dict[str, list[Callable[[dict[str, str], float], None]]] = {}
        self.events_applied = 0
        self.events_skipped = 0
        #: Called with (seconds, rows) after every database flush that wrote (ops metrics).
        self.flush_observers: list[Callable[[float, int], None]] = []
        self._dirty_calls: dict[str, dict[str, Any]] = {}
        self._agent_rows: list[dict[str, Any]] = []
        self._flush_lock = asyncio.Lock()
        # rows the database refused for their own sake: (table, row, error, at), newest last
        # (the last day's; all are kept in the set_aside table, those not yet stored here)
        self.set_aside: deque[tuple[str, dict[str, Any], str, float]] = deque(maxlen=1000)
        self._aside_unstored: list[tuple[str, dict[str, Any], str, float]] = []
        self._tasks: list[asyncio.Task[None]] = []
        for edge in self.edges.values():
            edge.link = self._make_link(edge)
        #: The PBX whose event is being applied or handed to raw listeners right now.
        self.event_pbx = self.home.name
        self._applying = self.home
        self.CHANGE_HANDLERS: dict[type, Callable[[Any], None]] = {
            CallChanged: self._call_changed,
            AgentChanged: self._agent_changed,
            Anomaly: self._anomaly,
            LinkStateChanged: self._link_state,
            QueueChanged: lambda c: None,
            PbxRestarted: self._pbx_restarted,
            ResyncWanted: self._resync_wanted,
        }
        self._queue_log_engines: dict[str, AsyncEngine] = {}
        self._summaries_due = 0.0
        self._books_day = 0.0  # the day the books last let go of older ones
        self._samples_interval = 0  # the interval the books last let go of old samples in
        self._startup_sealed = False  # start-up's records sealed (after the first resyncs)

    def _make_link(self, edge: PbxEdge) -> AmiLink:
        a = edge.settings

        async def connected(link: AmiLink) -> None:
            await self._resync(link, edge)
        return AmiLink(
            a.host, a.port, a.username, a.secret, events=a.events,
            on_event=lambda headers, at: self._on_ami_event(headers, at, edge),
            on_link=lambda up, reason: self._on_link(up, reason, edge),
            on_connected=connected,
            on_list=lambda action, items, at: self._on_list_answer(action, items, at, edge),
            ping_interval=a.ping_interval, action_timeout=a.action_timeout,
            backoff_max=a.backoff_max, clock=self.clock,
        )

    # ---- the PBXs

    @property
    def link(self) -> Any:
        """The home PBX's link (the only one with a single PBX)."""
        return self.home.link

    @link.setter
    def link(self, value: Any) -> None:
        self.home.link = value

    def link_for(self, pbx: str) -> Any:
        """The link of PBX ``pbx`` ("" = the home PBX); KeyError for an unknown name."""
        return self.edges[pbx].link if pbx else self.home.link

    def edge_of(self, pbx: str) -> PbxEdge:
        return self.edges.get(pbx) or self.home

    def centre_of(self, pbx: str) -> CallCenter:
        """The centre of PBX ``pbx`` ("" or unknown = the home PBX)."""
        return self.edge_of(pbx).centre

    def agents(self) -> list[Agent]:
        """Every PBX's members (an operator in queues on two PBXs is on the list twice)."""
        return [a for e in self.edges.values() for a in e.centre.agents.values()]

    def members_of(self, interface: str, name: str = "") -> list[Agent]:
        """One operator's queue members, one per PBX they are known on (by interface,
        else by member name), the home PBX first."""
        out = []
        for e in self.edges.values():
            a = e.centre.agents.get(interface) if interface else None
            if a is None and name:
                a = e.centre.agent_by_name(name)
            if a is not None:
                out.append(a)
        return out

    def pbxs_hosting(self, queue: str) -> list[str]:
        """The PBXs that host ``queue`` (``[[pbx]] queues``; all when it lists none)."""
        return [n for n, e in self.edges.items() if e.settings.hosts(queue)]

    @property
    def pbx_restarts(self) -> list[tuple[float, float | None, str]]:
        """Restarts and counter resets of every PBX, oldest first."""
        if len(self.edges) == 1:
            return self.home.restarts
        return sorted((r for e in self.edges.values() for r in e.restarts),
                      key=lambda r: r[0])

    # ---- lifecycle

    async def start(self, *, load_days: int = 1) -> None:
        await self.store.open()
        # Rows refused in the last day stay an alert after a restart (the table keeps all).
        self.set_aside.extend(await self.store.set_aside_rows(
            since=self.clock() - 86400, limit=self.set_aside.maxlen or 1000))
        await self._load_recent(load_days)
        # (what start-up put in the books stays: the first day a core lets go of is the
        # next, however old the times a PBX's queue_log gives its rebuilt calls)
        self._books_day = self.day_start(self.clock())
        await self._restore_open_calls()
        self._summaries_due = self.clock() + 60.0  # summaries wait until start-up is over
        # The service's tasks (and each link's, started from here) log with the PBX's name
        # (the consumer: the name of the PBX whose event it applies).
        ctx = contextvars.copy_context()
        ctx.run(structlog.contextvars.bind_contextvars, pbx=self.home.name)
        self._tasks = [
            asyncio.create_task(self._consume(), name="consumer", context=ctx),
            asyncio.create_task(self._flush_loop(), name="db-flush", context=ctx),
            asyncio.create_task(self._tick_loop(), name="ticker", context=ctx),
        ]
        for edge in self.edges.values():
            link_ctx = contextvars.copy_context()
            link_ctx.run(structlog.contextvars.bind_contextvars, pbx=edge.name)
            await asyncio.create_task(edge.link.start(), context=link_ctx)

    async def stop(self) -> None:
        for edge in self.edges.values():
            await edge.link.stop()
            for task in (edge.resync_task, edge.refresh_task):
                if task is not None:
                    task.cancel()
        await self.drain()
        # The background tasks are cancelled while no write is in flight: a flush cut off
        # part way would lose the rows it had taken (the last half second's records).
        async with self._flush_lock:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._write_dirty()
        await self.store.close()
        for engine in self._queue_log_engines.values():
            await engine.dispose()

    async def drain(self) -> None:
        """Wait until every enqueued event has been applied."""
        await self.inbox.join()

    async def _load_recent(self, days: int) -> None:
        """Today's (and recent) records from the database: figures survive restarts."""
        start = self.day_start(self.clock()) - (days - 1) * 86400
        rows = await self.store.calls_between(start, float("inf"))
        today = self.day_start(self.clock())
        for row in rows:
            edge = self.edges.get(pbx_of(row, self.home.name))
            self.book.put(row)
            if edge is None:  # a PBX no longer configured: its calls still count
                continue
            if edge.book is not self.book:
                edge.book.put(row)
            if row.agent and row.interface and row.joined_at >= today and row.outcome in (
                    "answered", "completed", "interrupted"):
                # Per-operator figures of the day survive a restart of the service.
                agent = edge.centre._agent(row.interface, row.agent)
                agent.answered += 1
                if row.outcome == "completed":
                    agent.calls_taken += 1
                    agent.talk_s += row.talk_time or 0
        log.info("loaded call records", count=len(rows))

    async def _restore_open_calls(self) -> None:
        """Visits the database still holds open go back to the centre, to be settled by
        the first resync (the service was not there to see how they ended)."""
        rows = await self.store.open_calls()
        last = await self.store.last_seen()
        if last is not None:  # the latest finished ones too: a rebuild must know them
            recent = await self.store.calls_between(last - 600, float("inf"))
            rows += [r for r in recent if r.outcome not in ("waiting", "answered")]
        calls = [call_from_row(r, self.home.name) for r in rows]
        # No record at all: today's queue_log (when readable) is rebuilt from the day's start.
        since = last if last is not None else self.day_start(self.clock())
        for name, edge in self.edges.items():
            edge.centre.restore([c for c in calls if c.pbx == name], since)
        if calls:
            log.info("calls from before the restart", count=len(calls))

    # ---- the AMI edge (synchronous: only enqueue)

    def _on_ami_event(self, headers: dict[str, str], at: float,
                      edge: PbxEdge | None = None) -> None:
        # Strictly increasing times: frames of one socket read share a clock reading,
        # and the order of answers and hang-ups is what Asterisk's smoothing follows.
        edge = edge or self.home
        at = edge.last_at = max(at, edge.last_at + 1e-6)
        self.inbox.put_nowait((headers, at, edge.name))
        if self.raw_listeners:
            self.event_pbx = edge.name
            for listener in self.raw_listeners.get(headers.get("Event", ""), ()):
                try:
                    listener(headers, at)
                except Exception:  # a listener's bug must not stop the link
                    log.exception("raw event listener failed", event=headers.get("Event"))

    def listen(self, event: str, listener: Callable[[dict[str, str], float], None]) -> None:
        """Call ``listener(headers, at)`` for every AMI event named ``event``, from every
        PBX; ``event_pbx`` names the PBX during the call."""
        self.raw_listeners.setdefault(event, []).append(listener)

    def _on_link(self, up: bool, reason: str, edge: PbxEdge | None = None) -> None:
        if not up:
            self.inbox.put_nowait((None, ev.LinkChanged(self.clock(), False, reason),
                                   (edge or self.home).name))

    def _on_list_answer(self, action: str, items: list[Any], at: float,
                        edge: PbxEdge | None = None) -> None:
        edge = edge or self.home
        if action != "QueueStatus":
            return
        first = items[0] if items else {}
        if str(first.get("ActionID", "")).startswith(REFRESH_ID):
            # A refresh's answer, applied here: in wire order with the events around it.
            try:
                refresh = ev.refresh_from(at, [dict(i) for i in items])
            except ev.MalformedEvent as exc:
                log.warning("refresh answer unreadable", error=str(exc))
                refresh = ev.Refresh(at, (), ())  # still ends the refresh in the state
            self.inbox.put_nowait((None, refresh, edge.name))
            return
        # Where, in the stream, the PBX's counters were read.
        self.inbox.put_nowait((None, ev.Checkpoint(at), edge.name))

    async def _resync(self, link: AmiLink, edge: PbxEdge | None = None) -> None:
        edge = edge or self.home
        at = self.clock()
        edge.last_resync = at
        status = await link.action({"Action": "QueueStatus"}, idempotent=True)
        channels = await link.action({"Action": "CoreShowChannels"}, idempotent=True)
        snapshot = ev.resync_from(at, _as_list(status), _as_list(channels))
        lines = await self._read_queue_log(at, self._queue_log_of(edge))
        if lines is not None:
            snapshot = replace(snapshot, queue_log=tuple(lines))
        self.inbox.put_nowait((None, snapshot, edge.name))
        log.info("resynchronised with the PBX", members=len(snapshot.members),
                 waiting=len(snapshot.waiting), channels=len(snapshot.channels))

    def _queue_log_of(self, edge: PbxEdge) -> str:
        """The PBX's own ``queue_log``; the home PBX falls back on ``[metrics] queue_log``."""
        if edge.settings.queue_log or edge is not self.home:
            return edge.settings.queue_log
        return self.settings.queue_log

    async def _read_queue_log(self, at: float, where: str | None = None
                              ) -> list[queue_log.QueueLogEntry] | None:
        """Asterisk's queue_log of the last day, when configured and readable: a file, or
        (a database URL) the table Asterisk's realtime ``queue_log`` backend writes."""
        where = self.settings.queue_log if where is None else where
        if not where:
            return None
        since = at - 86400
        try:
            if "://" in where:
                return await self._read_queue_log_table(where, since)

            def read() -> list[queue_log.QueueLogEntry]:
                with open(where, encoding="utf-8", errors="replace") as fh:
                    return [e for e in queue_log.parse(fh.read()) if e.at >= since]
            return await asyncio.to_thread(read)
        except (OSError, SQLAlchemyError) as exc:
            log.warning("queue_log unreadable: gaps are estimated from counters",
                        error=str(exc)[:200])
            return None

    async def _read_queue_log_table(self, url: str, since: float
                                    ) -> list[queue_log.QueueLogEntry]:
        """Rows of the realtime ``queue_log`` table since ``since``.  Its ``time`` is a
        timestamp in the PBX's local time (``queue_log_realtime_use_gmt = no``) or a
        number of seconds."""
        engine = self._queue_log_engines.get(url)
        if engine is None:
            engine = self._queue_log_engines[url] = create_async_engine(url)
        tz = self.settings.tz
        async with engine.connect() as conn:
            result = await conn.execute(text("SELECT * FROM queue_log ORDER BY time"))
            rows = [dict(r._mapping) for r in result]
        for r in rows:
            t = r.get("time")
            if isinstance(t, datetime):
                r["time"] = (t if t.tzinfo else t.replace(tzinfo=tz)).timestamp()
        return [e for e in queue_log.from_rows(rows) if e.at >= since]

    def _resync_wanted(self, c: ResyncWanted) -> None:
        """The PBX booted (``c.full``): ask for its full picture again, at most once every
        2 s (one in flight), when the last picture had no member at all (Asterisk still
        reloading them after a restart).  An event named a member or caller the state
        does not know: a refresh (:meth:`_refresh_wanted`)."""
        edge = self._applying
        if not c.full:
            self._refresh_wanted(edge, c.why)
            return
        if not edge.link.up or (edge.resync_task is not None and not edge.resync_task.done()):
            return
        if any(a.memberships for a in edge.centre.agents.values()):
            return
        delay = max(0.0, edge.last_resync + 2.0 - self.clock())
        log.info("resynchronising", why=c.why, delay_s=round(delay, 1))

        async def later() -> None:
            await asyncio.sleep(delay)
            await self.drain()
            if any(a.memberships for a in edge.centre.agents.values()):
                return  # the picture the connect asked for has come meanwhile
            try:
                await self._resync(edge.link, edge)
            except AmiError as exc:  # the link went down meanwhile: the reconnect resyncs
                log.warning("resync failed", error=str(exc))
        edge.resync_task = asyncio.create_task(later(), name=f"resync-{edge.name}")

    def _refresh_wanted(self, edge: PbxEdge, why: str) -> None:
        """Ask the PBX for a QueueStatus whose answer is applied as an
        :class:`~acd.events.Refresh` where it arrives in the event stream (only adds
        unknown members and waiting callers; never a counter).  Debounced: one in
        flight, names seen meanwhile make one more after it, and at most one every
        ``REFRESH_EVERY_S`` seconds (monotonic) per PBX."""
        if not edge.link.up:
            return  # the reconnect's resync will see everything
        if edge.refresh_task is not None and not edge.refresh_task.done():
            edge.refresh_again = True
            return
        log.info("refreshing unknown names", why=why)
        edge.refresh_task = asyncio.create_task(self._refresh(edge),
                                                name=f"refresh-{edge.name}")

    async def _refresh(self, edge: PbxEdge) -> None:
        while True:
            delay = edge.last_refresh + REFRESH_EVERY_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            edge.refresh_again = False
            edge.last_refresh = time.monotonic()
            edge.refreshes += 1
            # The marker first: every event enqueued after it was read after the action
            # was written, so it may be newer than the answer (the state notes its names).
            self.inbox.put_nowait((None, ev.RefreshAsked(self.clock()), edge.name))
            try:
                answer = await edge.link.action(
                    {"Action": "QueueStatus", "ActionID": f"{REFRESH_ID}{edge.refreshes}"},
                    idempotent=True)
            except AmiError as exc:  # the link went down: the reconnect resyncs fully
                log.warning("refresh failed", error=str(exc))
                answer = None
            if not isinstance(answer, list):  # no list came (refused, timed out, down):
                # an empty Refresh stops the state noting names
                log.warning("refresh not answered", answer=str(answer)[:120])
                self.inbox.put_nowait((None, ev.Refresh(self.clock(), (), ()), edge.name))
                return
            if not edge.refresh_again:
                return

    def _pbx_restarted(self, c: PbxRestarted) -> None:
        restarts = self._applying.restarts
        restarts.append((c.at, c.booted_at, c.what))
        del restarts[:-20]
        log.warning("PBX restarted", what=c.what, booted_at=c.booted_at)

    # ---- the one consumer

    async def _consume(self) -> None:
        multi = len(self.edges) > 1
        while True:
            # (headers or None, at or event[, pbx]): without a name, the home PBX's
            headers, payload, *where = await self.inbox.get()
            try:
                edge = self.edges[where[0]] if where else self.home
                if multi and edge is not self._applying:
                    structlog.contextvars.bind_contextvars(pbx=edge.name)
                self._applying = edge
                if headers is None:
                    event: ev.Event | None = payload
                else:
                    event = ev.to_event(headers, payload)
                if event is not None:
                    self.dispatch(edge.centre.apply(event))
                    self.events_applied += 1
                    edge.events_applied += 1
            except ev.MalformedEvent as exc:
                self.events_skipped += 1
                self._applying.events_skipped += 1
                log.warning("malformed AMI event skipped", error=str(exc))
            except Exception:  # one bad event must never stop the consumer
                self.events_skipped += 1
                self._applying.events_skipped += 1
                log.exception("event failed", event=(headers or {}).get("Event"))
            finally:
                self.inbox.task_done()

    def dispatch(self, changes: list[Change]) -> None:
        for change in changes:
            self.CHANGE_HANDLERS[type(change)](change)
        if changes:
            for notify in self.subscribers:
                notify(changes)

    def _call_changed(self, c: CallChanged) -> None:
        self.book.put(c.call)
        book = self.edge_of(c.call.pbx).book
        if book is not self.book:
            book.put(c.call)
        self._dirty_calls[c.call.visit_id] = c.call.to_row()

    def _agent_changed(self, c: AgentChanged) -> None:
        self._agent_rows.append({
            "at": c.at, "agent": c.agent.name, "interface": c.agent.interface,
            "old": c.old.value, "new": c.new.value, "step": c.step, "reason": c.reason,
            "cause": c.cause, "pbx": c.agent.pbx,
        })

    def _anomaly(self, c: Anomaly) -> None:
        log.warning("PBX event did not fit", what=c.what)

    def _link_state(self, c: LinkStateChanged) -> None:
        log.info("PBX link " + ("up" if c.up else "down"), reason=c.reason, pbx=c.pbx)

    # ---- background

    async def flush(self) -> None:
        """Write the changed call records and the agent-state rows (one flush at a
        time: a later one never overtakes the rows an earlier one is writing).

        A row the database refuses for its own sake (a value too large for its
        column, an over-long string on PostgreSQL) is set aside with its error
        (``set_aside``, shown as an alert on the wallboard; stored in the
        ``set_aside`` table, listed by ``GET /api/set-aside``) and the rest are
        written; when the database itself is away, every row is kept for the next
        flush, so nothing is lost meanwhile.
        """
        async with self._flush_lock:
            await self._write_dirty()

    async def _write_dirty(self) -> None:
        """:meth:`flush` itself; the caller holds ``_flush_lock``."""
        calls, self._dirty_calls = list(self._dirty_calls.values()), {}
        agents, self._agent_rows = self._agent_rows, []
        refused: list[tuple[str, dict[str, Any], str]] = []
        started, rows = time.perf_counter(), len(calls) + len(agents)
        try:
            refused += [("calls", r, e) for r, e in await self.store.save_calls_isolating(calls)]
            calls = []
            refused += [("agent_states", r, e)
                        for r, e in await self.store.append_agent_states_isolating(agents)]
            agents = []
            if rows:
                for observe in self.flush_observers:
                    observe(time.perf_counter() - started, rows)
        except RowsUnwritten as exc:  # the database went away part way
            refused += [("calls" if calls else "agent_states", r, e) for r, e in exc.set_aside]
            if calls:
                calls = exc.rows
            else:
                agents = exc.rows
            log.warning("database write interrupted; will retry", rows=len(exc.rows))
        except Exception:
            # Keep them for the next flush: nothing is lost while the database is away.
            log.exception("database write failed; will retry", calls=len(calls))
        for row in calls:
            self._dirty_calls.setdefault(row["uniqueid"], row)
        self._agent_rows[:0] = agents
        now = self.clock()
        for table, row, error in refused:
            self.set_aside.append((table, row, error, now))
            self._aside_unstored.append((table, row, error, now))
            log.error("row set aside: the database refused it", table=table, error=error,
                      uniqueid=row.get("uniqueid", ""), agent=row.get("agent", ""))
        if self._aside_unstored:
            try:
                await self.store.keep_set_aside(self._aside_unstored)
                self._aside_unstored = []
            except (SQLAlchemyError, OSError):  # the database is away: a later flush
                log.warning("set-aside rows not stored yet; will retry",
                            rows=len(self._aside_unstored))

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            await self.flush()
            for edge in self.edges.values():
                edge.centre.collect_finished()
            self.seal_let_go()
            self.forget_old_days(self.clock())
            self.drop_old_samples(self.clock())
            await self.summarise()

    def _books(self) -> list[MetricsBook]:
        """The centre's book and each PBX's, each once (one PBX: one book)."""
        return list({id(b): b for b in (self.book, *(e.book for e in self.edges.values()))
                     }.values())

    def seal_let_go(self) -> None:
        """The books drop their records of the visits the states have let go of (their
        sums stay; no event can change those visits any more), so a core's books hold
        a record per visit its states hold, not one per call of two days: flat memory
        at any call rate (:meth:`acd.metrics.MetricsBook.seal`)."""
        let_go: list[str] = []
        for edge in self.edges.values():
            let_go += edge.centre.let_go
            edge.visits_let_go += len(edge.centre.let_go)
            edge.centre.let_go = []
        if let_go:
            for book in self._books():
                book.seal(let_go)
        if not self._startup_sealed and all(e.last_resync for e in self.edges.values()) \
                and self.clock() >= max(e.last_resync for e in self.edges.values()) + 30.0:
            # What start-up read back (today's calls) once every PBX's first resync and
            # its queue_log rebuild are applied: no later event can put those again.
            self._startup_sealed = True
            self._seal_unheld()

    def _seal_unheld(self) -> None:
        """Seal every record no state holds a visit of."""
        held = {vid for e in self.edges.values() for vid in e.centre.visits}
        for book in self._books():
            book.seal([k for k in book.records() if k not in held])

    def drop_old_samples(self, now: float) -> None:
        """Once per 15-minute interval: the books let go of the smoothing samples no
        figure shown can read any more (:meth:`acd.metrics.MetricsBook.drop_old_samples`)."""
        interval = self.book.bucket(now)
        if interval == self._samples_interval:
            return
        self._samples_interval = interval
        for book in self._books():
            book.drop_old_samples()

    def forget_old_days(self, now: float) -> None:
        """Once a day: the figures' books let go of the calls before yesterday (the
        wallboard's trend looks back 8 hours; reports read the database), so a core that
        runs for weeks holds two days of sums, not all it ever saw; and the records no
        state holds a visit of are sealed (start-up's are sealed sooner, once every PBX's
        first resync is applied: :meth:`seal_let_go`)."""
        day = self.day_start(now)
        if day == self._books_day:
            return
        self._books_day = day
        for book in self._books():
            book.forget_before(day - 86400)
        self._seal_unheld()

    async def summarise(self) -> None:
        """The writer stores the report summary of a closed day that has none
        (:mod:`callcenter.report_days`): one day per flush while some are missing, then
        a look every five minutes (a late record deletes its day's summary)."""
        now = self.clock()
        if now < self._summaries_due:
            return
        try:
            built = await report_days.build_due(self.store.engine, self.settings, now)
        except Exception:  # a report reads the raw rows meanwhile: nothing is lost
            log.exception("report summary not stored; will retry")
            built = 0
        self._summaries_due = now + (0.0 if built else 300.0)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.inbox.put_nowait((None, ev.Tick(self.clock())))

    # ---- views

    def day_start(self, ts: float) -> float:
        local = datetime.fromtimestamp(ts, self.settings.tz)
        return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()

    def metrics_json(self, start: float | None = None, end: float | None = None) -> dict[str, Any]:
        """The ``callcenter replay --json`` shape for live state (today by default)."""
        now = self.clock()
        start = self.day_start(now) if start is None else start
        end = now + 1 if end is None else end
        per, overall = self.book.figures(start, end)
        agents: dict[str, dict[str, float]] = {}
        for a in sorted(self.agents(), key=lambda a: a.name):
            row = agents.setdefault(a.name, {"answered": 0, "ring_no_answer": 0,
                                             "paused_s": 0.0, "talk_s": 0.0})
            # an operator in queues on several PBXs: their members' figures add up
            row["answered"] += a.answered
            row["ring_no_answer"] += a.ring_no_answer
            row["paused_s"] = round(row["paused_s"] + a.paused_total(now), 2)
            row["talk_s"] = round(row["talk_s"] + a.talk_s, 2)
        out: dict[str, Any] = {"queues": {q: queue_json(f) for q, f in per.items()},
                               "overall": queue_json(overall), "agents": agents,
                               "link_up": self.centre.link_up}
        if len(self.edges) > 1:
            out["pbxs"] = {}
            for name, edge in self.edges.items():
                p_per, p_all = edge.book.figures(start, end)
                out["pbxs"][name] = {"queues": {q: queue_json(f) for q, f in p_per.items()},
                                     "overall": queue_json(p_all),
                                     "link_up": edge.centre.link_up}
        return out

    def pbx_parts(self, now: float | None = None, *, figures: tuple[Any, Any] | None = None
                  ) -> list[dict[str, Any]]:
        """Each PBX's part of the live picture, the home PBX first: its link (up, reason,
        last restart), callers waiting, members signed in, and its own figures for today
        and the last 15 minutes (:mod:`acd.metrics` over its calls only).  The centre's
        figures are those of every PBX's calls together: counts add up and rates are
        computed again from the sums (never an average of rates).  ``figures``: the
        centre's (today, last 15 minutes) when already computed (one PBX: the same)."""
        now = self.clock() if now is None else now
        today, last15 = self.day_start(now), self.book.bucket(now)
        parts = []
        for name, edge in self.edges.items():
            c = edge.centre
            restart = edge.restarts[-1] if edge.restarts else None
            parts.append({
                "name": name,
                "up": c.link_up, "reason": c.link_reason,
                "pbx_restarted_at": restart[0] if restart else None,
                "waiting": sum(len(w) for w in c.waiting.values()),
                "agents_logged_in": sum(1 for a in c.agents.values() if a.memberships),
                "today": figures[0] if figures and edge.book is self.book
                else queue_json(edge.book.figures(today, now + 1)[1]),
                "last_15min": figures[1] if figures and edge.book is self.book
                else queue_json(edge.book.figures(last15, now + 1)[1]),
                "events_applied": edge.events_applied,
            })
        return parts

    def snapshot(self, *, agents: bool = True) -> dict[str, Any]:
        """Everything a live page needs, as plain JSON.

        ``agents=False`` leaves out the per-agent list (``"agents": []``): the
        console's views read the agents from the live centre, and building 1,000
        agent snapshots each refresh is most of this method's cost.
        """
        now = self.clock()
        today = self.day_start(now)
        last15 = self.book.bucket(now)
        per_today, all_today = self.book.figures(today, now + 1)
        per_15, all_15 = self.book.figures(last15, now + 1)
        queues = []
        for q in sorted(set(self.centre.queues()) | set(per_today)):
            waiting = self.centre.waiting_in(q)
            queues.append({
                "queue": q,
                "title": self.settings.queue_titles.get(q, q),
                "title_en": self.settings.queue_titles_en.get(q, ""),
                "servicelevel": self.settings.servicelevel_for(q),
                "waiting": len(waiting),
                "longest_wait_s": round(self.centre.longest_wait(q, now), 1),
                "callers": [{"uniqueid": c.uniqueid, "caller": mask_number(c.caller_num),
                             "name": c.caller_name, "hotline": c.hotline,
                             "waited_s": round(now - c.joined_at, 1)} for c in waiting[:50]],
                "today": queue_json(per_today[q]) if q in per_today else None,
                "last_15min": queue_json(per_15[q]) if q in per_15 else None,
                "agents_logged_in": len({a.name for a in self.agents() if q in a.memberships}),
            })
        trend = [{"start": b, "connection_rate": f.connection_rate,
                  "answer_rate_sl": f.answer_rate_sl, "offered": f.offered}
                 for b, f in self.book.series(now - 8 * 3600, now + 1)]
        restart = self.pbx_restarts[-1] if self.pbx_restarts else None
        centre_today, centre_15 = queue_json(all_today), queue_json(all_15)
        return {
            "at": now,
            "link": {"up": self.centre.link_up, "reason": self.centre.link_reason,
                     "pbx_restarted_at": restart[0] if restart else None,
                     "pbx_restart": restart[2] if restart else ""},
            "queues": queues,
            "today": centre_today,
            "last_15min": centre_15,
            "agents": [a.snapshot(now) for a in sorted(self.agents(),
                                                       key=lambda a: a.name)] if agents else [],
            "pbxs": self.pbx_parts(now, figures=(centre_today, centre_15)),
            "trend": trend,
            "interval_start": datetime.fromtimestamp(last15, self.settings.tz).isoformat(),
            "day": datetime.fromtimestamp(today, self.settings.tz).date().isoformat(),
            "events_applied": self.events_applied,
        }


def call_from_row(row: Any, home: str = "") -> Call:
    """A stored visit record as a :class:`~acd.state.Call` again (a row without a PBX,
    stored before migration 0013, is the home PBX's)."""
    call = Call(uniqueid=row.channel_uniqueid or row.uniqueid, queue=row.queue,
                joined_at=row.joined_at, visit_id=row.uniqueid, visit=row.visit or 1,
                previous=row.previous_visit or "", pbx=pbx_of(row, home))
    for name in ("caller_num", "caller_name", "hotline", "category", "ivr_path", "left_at",
                 "answered_at", "hold_time", "agent", "interface", "ended_at", "talk_time",
                 "wrap_s", "rings", "ring_no_answer", "estimated", "end_reason", "settled",
                 "on_hold_s"):
        setattr(call, name, getattr(row, name))
    call.outcome = Outcome(row.outcome)
    return call


def _as_list(answer: Any) -> list[dict[str, str]]:
    if isinstance(answer, list):
        return answer
    return [answer] if isinstance(answer, dict) else []

