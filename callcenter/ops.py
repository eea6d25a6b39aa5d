"""Operations: ``/healthz``, ``/readyz`` and a Prometheus ``/metrics`` for one process.

* ``/healthz`` -- the process is alive: its event loop answers and none of the tasks it
  was told to watch (the consumer, the flusher ...) has died.  200 or 503.
* ``/readyz`` -- the process should get traffic: every readiness check passes (the
  database answers ``SELECT 1`` within 2 s, the PBX link is up, this core holds the
  active lease ...).  200, or 503 with the failing checks' reasons as JSON.
* ``/metrics`` -- Prometheus text format (``prometheus_client``), one registry per
  :class:`Ops` so that several services in one test process do not collide.  Live values
  (backlog, link state, websockets, AGI sessions, event counters) are read at scrape time,
  so the hot path pays nothing; flush latency and bus lag are histograms fed as they
  happen.  Every per-PBX series carries the label ``pbx`` (``[ami] name``).

The routes carry no secrets and no caller data; they are meant for the load balancer and
the scraper on the operations network (``config/nginx.conf`` keeps them off the public
side).
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from callcenter.service import Service

#: A readiness check: None when fine, else why not (a short sentence).
Check = Callable[[], Awaitable[str | None]]

class Ops:
    """Health, readiness and metrics of one process (core or web worker)."""

    def __init__(self, role: str = "core") -> None:
        self.role = role
        self.registry = CollectorRegistry(auto_describe=True)
        self.started = time.time()
        self.checks: dict[str, Check] = {}
        self.tasks: dict[str, Callable[[], Iterable[asyncio.Task[Any]]]] = {}
        self._gauges: list[tuple[str, str, list[str], Callable[[], Iterable[
            tuple[list[str], float]]]]] = []
        self._counters: list[tuple[str, str, list[str], Callable[[], Iterable[
            tuple[list[str], float]]]]] = []
        self.flush_seconds = Histogram(
            "hotline_db_flush_seconds", "Time to write one batch of call and agent-state rows",
            ["pbx"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
        self.bus_lag = Histogram(
            "hotline_bus_lag_seconds", "Core publish to web worker receipt of one bus entry",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
        # The collector's pauses are noted by a gc callback, which may run inside any
        # allocation - also inside prometheus_client holding its (non-reentrant) lock
        # for a scrape: so the callback only adds to plain lists, read at scrape time.
        self.gc_counts = [[0] * (len(GC_BUCKETS) + 1) for _ in range(3)]  # per le, +Inf
        self.gc_sums = [0.0, 0.0, 0.0]
        self.gc_longest = [0.0, 0.0, 0.0]  # the longest run of each generation
        self.gauge("hotline_up_seconds", "Seconds since this process started", [],
                   lambda: [([], time.time() - self.started)])
        self.gauge("hotline_gc_longest_pause_seconds", "The longest run of the cyclic "
                   "garbage collector since this process started, by generation",
                   ["generation"], lambda: [([str(g)], v) for g, v in enumerate(self.gc_longest)])
        self.registry.register(_Live(self))
        _GC_WATCHERS.add(self)
        if _gc_timer not in gc.callbacks:
            gc.callbacks.append(_gc_timer)

    def _gc_ran(self, generation: int, seconds: float) -> None:
        """(From the gc callback: plain list updates only, no lock.)"""
        self.gc_counts[generation][bisect.bisect_left(GC_BUCKETS, seconds)] += 1  # (le, +Inf)
        self.gc_sums[generation] += seconds
        self.gc_longest[generation] = max(self.gc_longest[generation], seconds)

    def gc_histogram(self) -> HistogramMetricFamily:
        h = HistogramMetricFamily(
            "hotline_gc_pause_seconds", "One run of the cyclic garbage collector (the event "
            "loop stands still meanwhile), by generation", labels=["generation"])
        for g in range(3):
            running, buckets = 0, []
            for le, n in zip([*map(str, GC_BUCKETS), "+Inf"], self.gc_counts[g],
                             strict=True):
                running += n
                buckets.append((le, running))
            h.add_metric([str(g)], buckets, self.gc_sums[g])
        return h

    # ---- what to watch

    def gauge(self, name: str, doc: str, labels: list[str],
              read: Callable[[], Iterable[tuple[list[str], float]]]) -> None:
        """A gauge read at scrape time: ``read()`` gives (label values, value) pairs."""
        self._gauges.append((name, doc, labels, read))

    def counter(self, name: str, doc: str, labels: list[str],
                read: Callable[[], Iterable[tuple[list[str], float]]]) -> None:
        """A monotonic counter read at scrape time (``name`` without ``_total``)."""
        self._counters.append((name, doc, labels, read))

    def watch_service(self, service: Service) -> None:
        """The core's figures: events, backlog, link state, flush latency; the database
        and the link become readiness checks, the service's tasks health checks."""
        pbx = service.settings.ami.name
        edges = service.edges
        # Several PBXs (README "Several PBXs"): events, skipped and link per PBX; the one
        # inbox and the one writer are the centre's (pbx="all").
        shared = pbx if len(edges) == 1 else "all"
        self.counter("hotline_ami_events", "AMI events applied by the consumer", ["pbx"],
                     lambda: [([n], float(e.events_applied)) for n, e in edges.items()])
        self.counter("hotline_ami_events_skipped", "AMI events skipped (malformed, failed)",
                     ["pbx"], lambda: [([n], float(e.events_skipped))
                                       for n, e in edges.items()])
        self.gauge("hotline_consumer_backlog", "Events enqueued and not yet applied", ["pbx"],
                   lambda: [([shared], float(service.inbox.qsize()))])
        self.gauge("hotline_pbx_link_up", "1 while the AMI link is up", ["pbx"],
                   lambda: [([n], 1.0 if e.centre.link_up else 0.0) for n, e in edges.items()])
        # What the core's memory settles at: the visits each state holds (live ones and
        # its last keep_finished finished ones), the ones it has let go of, and the
        # figures' books' records (one per visit held, once the buffers are full).
        self.gauge("hotline_visits_held", "Visits the state holds (live and recently "
                   "finished)", ["pbx"],
                   lambda: [([n], float(len(e.centre.visits))) for n, e in edges.items()])
        self.counter("hotline_visits_let_go", "Finished visits the state let go of (its "
                     "buffer is full once this moves)", ["pbx"],
                     lambda: [([n], float(e.visits_let_go)) for n, e in edges.items()])
        self.gauge("hotline_book_records", "Call records the figures' books hold", ["pbx"],
                   lambda: [([shared], float(len(service.book)))] + (
                       [([n], float(len(e.book))) for n, e in edges.items()]
                       if len(edges) > 1 else []))
        flush = self.flush_seconds.labels(shared)
        service.flush_observers.append(lambda seconds, _rows: flush.observe(seconds))
        self.checks["database"] = lambda: database_answers(service)
        self.checks[f"pbx {pbx}" if len(edges) == 1 else "pbx"] = lambda: _link(service)
        self.tasks["service"] = lambda: service._tasks

    def watch_sockets(self, count: Callable[[], int]) -> None:
        self.gauge("hotline_websockets", "Open browser websockets in this process", [],
                   lambda: [([], float(count()))])

    def watch_agi(self, count: Callable[[], int]) -> None:
        self.gauge("hotline_agi_sessions", "FastAGI sessions running now", [],
                   lambda: [([], float(count()))])

    # ---- answers

    def healthy(self) -> tuple[bool, dict[str, str]]:
        dead = {f"{group} {t.get_name()}": _why(t)
                for group, tasks in self.tasks.items() for t in tasks() if t.done()}
        return not dead, dead

    async def ready(self) -> tuple[bool, dict[str, str]]:
        results = await asyncio.gather(*(c() for c in self.checks.values()),
                                       return_exceptions=True)
        failing: dict[str, str] = {}
        for name, result in zip(self.checks, results, strict=True):
            if isinstance(result, BaseException):
                failing[name] = f"check failed: {type(result).__name__}"
            elif result is not None:
                failing[name] = result
        return not failing, failing

    def metrics_text(self) -> bytes:
        return generate_latest(self.registry)

    def add_routes(self, app: web.Application) -> None:
        app[OPS] = self
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)


OPS = web.AppKey("ops", Ops)

GC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_GC_WATCHERS: weakref.WeakSet[Ops] = weakref.WeakSet()
_gc_started = [0.0]


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    """A ``gc.callbacks`` entry: each collection's duration to every live :class:`Ops`."""
    if phase == "start":
        _gc_started[0] = time.perf_counter()
        return
    seconds = time.perf_counter() - _gc_started[0]
    generation = min(2, max(0, int(info.get("generation", 0))))
    for ops in list(_GC_WATCHERS):
        ops._gc_ran(generation, seconds)


class _Live(Collector):
    """Reads the scrape-time gauges and counters of one :class:`Ops`."""

    def __init__(self, ops: Ops) -> None:
        self.ops = ops

    def collect(self) -> Iterable[Metric]:
        yield self.ops.gc_histogram()
        for name, doc, labels, read in self.ops._gauges:
            g = GaugeMetricFamily(name, doc, labels=labels)
            for values, value in read():
                g.add_metric(values, value)
            yield g
        for name, doc, labels, read in self.ops._counters:
            c = CounterMetricFamily(name, doc, labels=labels)
            for values, value in read():
                c.add_metric(values, value)
            yield c


def _why(task: asyncio.Task[Any]) -> str:
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return f"died: {type(exc).__name__}" if exc else "ended"


async def database_answers(service: Service, timeout: float = 2.0) -> str | None:
    try:
        async with asyncio.timeout(timeout):
            async with service.store.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except (OSError, SQLAlchemyError) as exc:
        return f"unreachable: {type(exc).__name__}"
    return None


async def _link(service: Service) -> str | None:
    """None while the AMI link is up (with several PBXs: while any is up; the others
    show in ``hotline_pbx_link_up`` and on the wallboard)."""
    if service.centre.link_up:
        return None
    return f"AMI link down: {service.centre.link_reason or 'not connected yet'}"


async def healthz(request: web.Request) -> web.Response:
    ok, dead = request.app[OPS].healthy()
    return web.json_response({"ok": ok, "role": request.app[OPS].role, "dead": dead},
                             status=200 if ok else 503)


async def readyz(request: web.Request) -> web.Response:
    ops = request.app[OPS]
    ok, failing = await ops.ready()
    return web.json_response({"ready": ok, "role": ops.role, "failing": failing},
                             status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[OPS].metrics_text()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
