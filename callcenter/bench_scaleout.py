"""``callcenter bench --web-workers N --database postgresql://…``: the scale-out figures.

Theory of operation
-------------------
Every piece is a real process on loopback, as a large centre runs them::

    load processes (bench._Load) -- --pbxs PBX ends of AMI, each paced by count (the
                                   failover phase runs --pbxs simulators); the browsers'
                                   websockets from processes of their own (--load-procs)
    core  (callcenter serve)    -- [ha] lease, PostgreSQL (a scratch database created on
                                   the --database server, dropped after), Redis bus
    web workers (callcenter web) x N -- operators' and wallboards' websockets from Redis

1. *load*: ``--pbxs`` PBX processes, PBX k's members the operators of slice k
   (``opN`` is ``Local/<1000+N>@agents/n`` on exactly one PBX); the core holds one AMI
   link per PBX (``[[pbx]]``).  ``--operators`` and ``--wallboards`` hold their
   websockets from ``--load-procs`` browser processes (default one per 1,000 sockets),
   through the workers (round robin), sessions opened in the database beforehand.  On a
   real site the load is other machines (the PBXs, the operators' PCs); here it shares
   the cores, so each role's cores busy are printed, the load's included, and
   ``--load-nice N`` lowers the load's priority (0: the same as the rest).  Each
   PBX writes ``--rate / --pbxs`` AMI events/s for ``--duration`` s.  Ring -> screen pop
   is paired across the load processes on the machine's clock (the frame with
   ``AgentCalled`` written by its PBX process -> the operator's document showing the
   call in a browser process: AMI, the core, Redis, the worker, the browser's socket).
   The core's ``/metrics`` gives the events applied and the consumer backlog; each
   worker's gives the bus lag (core publish -> worker receipt, a histogram: its p99 is
   a bucket's upper bound).  RSS of the core and each worker from
   ``/proc/<pid>/status`` every few seconds.
2. *max*: ``--max-rate`` events/s (split over the PBXs) for ``--max-seconds`` (10): the
   rate the core sustains end to end, with the largest backlog seen, the largest in the
   last third (bounded: not growing), and whether it drained.
3. *failover*: the rig of the failover test (:mod:`callcenter.scaleout`: ``--pbxs``
   real-time PBX simulators, each writing its queue_log, two cores, one worker, operators ``op1``..``op6`` on
   the simulator's phones watching through the worker); ``--failovers`` times the active
   core is killed with SIGKILL, the standby takes over, the killed one comes back as the
   new standby.  Timed: kill -> lease taken (the standby's log), kill -> the first
   screen pop of a new call served by the new core.  At the end the database is
   reconciled with the queue_log: calls lost and doubled.
4. *single process*: ``callcenter bench`` itself (SQLite, one process, the same
   operators, wallboards, rate and duration), so the cost of each component shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from callcenter import bench
from callcenter.bench import AMI_SECRET, AMI_USER, PASSWORD, Plan, _ask, percentile, progress
from callcenter.scaleout import CoreProcess, SimProcess, core_config, reconcile


def rss_of(pid: int) -> float:
    """A process's resident set in MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_of(pid: int) -> float:
    """A process's CPU time so far, user + system, s (``/proc/<pid>/stat``; 0 when it is
    gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU time the whole machine has been busy so far, s, all cores together
    (``/proc/stat``: user to steal, less idle and iowait)."""
    with open("/proc/stat", encoding="ascii") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def cores_used(before: dict[str, float], after: dict[str, float], seconds: float
               ) -> dict[str, float]:
    """CPU seconds per second of wall time (cores busy) of each role between two readings
    of :func:`cpu_times`; ``rest`` is the machine less the roles (PostgreSQL, Redis, the
    bench itself, the system)."""
    used = {k: max(0.0, after[k] - before.get(k, 0.0)) / seconds for k in after}
    machine = used.pop("machine")
    used["rest"] = max(0.0, machine - sum(used.values()))
    used["machine"] = machine
    return {k: round(v, 2) for k, v in used.items()}


def cpu_times(roles: dict[str, list[int]]) -> dict[str, float]:
    """Each role's processes' CPU time so far, s, and the machine's (``machine``)."""
    out = {k: sum(cpu_of(p) for p in pids) for k, pids in roles.items()}
    out["machine"] = machine_busy_s()
    return out


METRIC = re.compile(r'^(\w+)(?:\{([^}]*)\})? ([-+0-9.eE]+|NaN|[+-]Inf)$')


def parse_metrics(text: str) -> dict[str, float]:
    """A Prometheus text page as {name{labels}: value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = METRIC.match(line)
        if m:
            out[f"{m.group(1)}{{{m.group(2) or ''}}}"] = float(m.group(3))
    return out


async def scrape(http: Any, url: str) -> dict[str, float]:
    """A process's ``/metrics`` (``url`` ends with a slash), parsed."""
    async with http.get(url + "metrics") as r:
        return parse_metrics(await r.text())


#: The least warm-up (s): sign-ins, first screens, the allocators' first heaps.
WARMUP_MIN_S = 60.0


def warmup(full_at: float | None, duration: float) -> tuple[float, bool]:
    """(seconds, over): when the sustained phase's warm-up ends.  It is over when the
    core's bounded buffers are full: every PBX's state has let go of finished visits
    (``hotline_visits_let_go_total``; it holds the last ``keep_finished``, 5,000, and
    the figures' books a record per visit held), at ``full_at`` s into the phase, but
    never before :data:`WARMUP_MIN_S`.  A phase too short for that (the buffers not
    full, or full with less than a third of it left) measures from
    :data:`WARMUP_MIN_S` (or a fifth of a shorter phase), and ``over`` is False."""
    if full_at is not None and full_at <= duration * 2 / 3:
        return max(WARMUP_MIN_S, full_at), True
    return min(WARMUP_MIN_S, duration * 0.2), False


def rss_growth(samples: list[tuple[float, float]], warm_s: float) -> dict[str, float]:
    """RSS (MB) at the first sample at or after ``warm_s`` s and at the end, the growth
    between (%), and the growth from :data:`WARMUP_MIN_S` on as well (what the buffers'
    filling adds), from (s into the phase, MB) samples."""
    def grown(first: float, last: float) -> float:
        return round((last - first) / first * 100, 1) if first else 0.0

    after = [r for t, r in samples if t >= warm_s] or [r for _, r in samples] or [0.0]
    early = [r for t, r in samples if t >= WARMUP_MIN_S] or after
    return {"after_warmup": round(after[0], 1), "end": round(after[-1], 1),
            "growth_pct": grown(after[0], after[-1]),
            "from_60s": round(early[0], 1), "growth_from_60s_pct": grown(early[0], after[-1])}


def _one(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(name + "{"))


def histogram_p(metrics: dict[str, float], name: str, q: float) -> tuple[float, int]:
    """(upper bound of the bucket holding the q-quantile, count) of a histogram."""
    buckets = sorted((float(k.split('le="')[1].split('"')[0]), v) for k, v in metrics.items()
                     if k.startswith(name + "_bucket{"))
    total = buckets[-1][1] if buckets else 0
    for le, n in buckets:
        if total and n >= total * q / 100:
            return le, int(total)
    return float("nan"), int(total)


class Scratch:
    """A database of the bench's own on the --database server, dropped after."""

    def __init__(self, server_url: str) -> None:
        from sqlalchemy.engine import make_url

        self.server = make_url(server_url)
        self.name = f"hotline_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    def _admin(self, sql: str) -> None:
        import psycopg

        u = self.server
        with psycopg.connect(host=u.host or "127.0.0.1", port=u.port or 5432,
                             user=u.username or "postgres", password=u.password,
                             dbname=u.database or "postgres", autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def __enter__(self) -> str:
        self._admin(f'CREATE DATABASE "{self.name}"')
        return (self.server.set(drivername="postgresql+asyncpg", database=self.name)
                .render_as_string(hide_password=False))

    def __exit__(self, *_: object) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


async def _redis_cleanup(url: str, prefix: str) -> None:
    from redis import asyncio as aioredis

    r = aioredis.from_url(url)
    keys = [k async for k in r.scan_iter(match=f"{prefix}:*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


async def _accounts(db: str, operators: list[str], supervisors: list[str]
                    ) -> dict[str, str]:
    """The accounts, written at once, each with a session opened in the database:
    {username: session cookie}.  (A sign-in over HTTP would rehash the password at the
    core's full argon2 cost, seconds per account on a loaded 2-core machine; sessions
    live in the database, so a cookie made here is one any worker accepts.)"""
    import secrets

    from argon2 import PasswordHasher
    from sqlalchemy import insert, select

    from agent_console.auth import SESSION_MAX_S, Role, default_member, token_hash
    from agent_console.models import SessionRow, UserRow
    from callcenter.db import make_engine, migrate

    engine = make_engine(db)
    try:  # (the schema first: the core that migrates it starts after)
        await migrate(engine)
    finally:
        await engine.dispose()
    hashed = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    now = time.time()
    rows = []
    for names, role in ((operators, Role.OPERATOR), (supervisors, Role.SUPERVISOR)):
        for name in names:
            member, iface = default_member(name) if role is Role.OPERATOR else ("", "")
            rows.append({"username": name, "display_name": name, "role": role.value,
                         "password_hash": hashed, "disabled": False, "member_name": member,
                         "interface": iface, "queues": "", "created_at": now,
                         "updated_at": now})
    engine = make_engine(db)
    tokens: dict[str, str] = {}
    try:
        async with engine.begin() as conn:
            have = set((await conn.scalars(select(UserRow.username))).all())
            fresh = [r for r in rows if r["username"] not in have]
            if fresh:
                await conn.execute(insert(UserRow), fresh)
            ids = dict((await conn.execute(select(UserRow.username, UserRow.id))).all())
            sessions = []
            for r in rows:
                token = secrets.token_urlsafe(32)
                tokens[r["username"]] = token
                sessions.append({"token_hash": token_hash(token), "user_id": ids[r["username"]],
                                 "csrf_token": secrets.token_urlsafe(32), "created_at": now,
                                 "last_seen": now, "expires_at": now + SESSION_MAX_S,
                                 "ip": "127.0.0.1"})
            await conn.execute(insert(SessionRow), sessions)
    finally:
        await engine.dispose()
    return tokens


# --------------------------------------------------------------------------- 1-2: load


class _LoadProcs:
    """The spawned load processes: ``pbxs`` PBX ends of AMI (each paced by count, its own
    members, every ring timed) and ``browsers`` processes holding the websockets, so no
    one process carries thousands of sockets and a PBX's pacing at once."""

    def __init__(self) -> None:
        self.conns: list[Any] = []
        self.children: list[Any] = []

    def spawn(self, name: str, cfg: dict[str, Any]) -> Any:
        ctx = mp.get_context("spawn")
        conn, child_end = ctx.Pipe()
        child = ctx.Process(target=bench._load_main, name=name, args=(child_end, cfg),
                            daemon=True)
        child.start()
        self.conns.append(conn)
        self.children.append(child)
        return conn

    async def ask_all(self, conns: list[Any], msg: dict[str, Any]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(_ask(c, msg) for c in conns)))

    def stop(self) -> None:
        """Each gets 10 s in all to end of itself, then SIGTERM (which also ends a pipe
        read of this process still waiting on it)."""
        deadline = time.monotonic() + 10
        for child in self.children:
            child.join(timeout=max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                child.terminate()


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``n`` items in ``parts`` contiguous slices as (first index, size), sizes differing
    by at most one."""
    out, first = [], 0
    for i in range(parts):
        size = n // parts + (1 if i < n % parts else 0)
        out.append((first, size))
        first += size
    return out


class Pops:
    """Ring -> screen pop, paired across load processes: a ring's time from the PBX
    process that wrote it, the first showing from the browser process that saw it."""

    def __init__(self) -> None:
        self.rung: dict[tuple[str, str], float] = {}
        self.shown: dict[tuple[str, str], float] = {}

    def add(self, marks: list[dict[str, Any]]) -> None:
        for m in marks:
            for iface, uid, at in m["rung"]:
                self.rung.setdefault((iface, uid), at)
            for iface, uid, at in m["shown"]:
                self.shown.setdefault((iface, uid), at)

    def latencies(self) -> tuple[list[float], int]:
        """(ms from each ring written to its call first shown, rings never shown)."""
        return bench.pop_latencies(self.rung, self.shown.get)


async def load_phase(args: argparse.Namespace, db: str, redis: str, prefix: str,
                     work: Path) -> dict[str, Any]:
    import concurrent.futures

    import aiohttp

    # one blocked pipe read per load process may be in flight at once
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=64))
    out: dict[str, Any] = {}
    loads = _LoadProcs()
    operators = [f"op{i}" for i in range(1, args.operators + 1)]
    walls = [f"sup{i}" for i in range(1, args.wallboards + 1)]
    # PBX k's members are the operators of slice k: Local/<1000+N>@agents/n for opN
    slices = split(max(args.operators, 10 * args.pbxs), args.pbxs)
    nice = args.load_nice
    pbx_conns = [loads.spawn(f"bench-pbx{k + 1}", {
        "seed": args.seed + k, "agents": size, "first_extension": 1001 + first,
        "watch_all": True, "nice": nice}) for k, (first, size) in enumerate(slices)]
    n_browsers = args.load_procs or max(1, -(-(len(operators) + len(walls)) // 1000))
    browser_conns = [loads.spawn(f"bench-browsers{j + 1}", {
        "seed": args.seed, "agents": 1, "nice": nice}) for j in range(n_browsers)]
    procs: list[CoreProcess] = []
    http = aiohttp.ClientSession()
    try:
        ports = [r["port"] for r in await asyncio.gather(*(
            asyncio.get_running_loop().run_in_executor(None, c.recv)
            for c in pbx_conns + browser_conns))][:args.pbxs]
        names = [f"pbx{k}" for k in range(1, args.pbxs + 1)]
        no_log = work / "no-queue-log"
        cfg = core_config(work / "load.toml", name=names[0], ami_port=ports[0],
                          secret=AMI_SECRET, database_url=db, queue_log_path=no_log,
                          redis_url=redis, prefix=prefix,
                          more_pbxs=tuple((n, p, no_log) for n, p in zip(names[1:], ports[1:],
                                                                         strict=True)))
        text = cfg.read_text(encoding="utf-8")
        text = text.replace('username = "hotline"', f'username = "{AMI_USER}"')
        text = text.replace('user = "hotline"', f'user = "{AMI_USER}"')
        cfg.write_text(text.replace(f'queue_log = "{no_log}"', 'queue_log = ""'),
                       encoding="utf-8")
        # The accounts exist before the core starts, as at a centre: the core reads the
        # operators' display names at start (read later, every wallboard tile changed
        # at once: one 1.9 MB update to every wallboard in the middle of the run).
        progress(f"creating {len(operators)} operator and {len(walls)} wallboard accounts")
        tokens = await _accounts(db, operators, walls)
        core = CoreProcess(cfg, work, "load-core")
        procs.append(core)
        await core.start()
        core_url = f"http://127.0.0.1:{await core.wait_serving(180)}/"
        workers = [CoreProcess(cfg, work, f"load-web{i}", web=True)
                   for i in range(args.web_workers)]
        procs += workers
        for w in workers:
            await w.start()
        urls = [f"http://127.0.0.1:{await w.wait_serving(180)}/" for w in workers]
        progress(f"{args.pbxs} PBX processes; signing in through {len(urls)} web workers "
                 f"from {n_browsers} browser processes, opening the websockets")
        connected = failed = 0
        # slice j of the browsers: from browser process j % n, through worker j % workers
        n_slices = len(urls) * n_browsers
        asks = []
        for j in range(n_slices):
            asks.append(_ask(browser_conns[j % n_browsers], {
                "op": "sign_in", "url": urls[j % len(urls)],
                "operators": operators[j::n_slices], "wallboards": walls[j::n_slices],
                "tokens": {n: tokens[n] for n in operators[j::n_slices] + walls[j::n_slices]}}))
        for j in range(0, n_slices, n_browsers):  # each process one slice at a time
            for signed in await asyncio.gather(*asks[j:j + n_browsers]):
                connected += signed["connected"]
                failed += signed["failed"]
                for error in signed.get("errors", ()):
                    progress(f"  a websocket failed: {error}")
        out["websockets_connected"], out["websockets_failed"] = connected, failed
        out["load_processes"] = {"pbx": args.pbxs, "browsers": n_browsers, "nice": nice}
        progress(f"{connected} websockets open, {failed} failed")
        pids = {"core": core.proc.pid, **{f"web{i}": w.proc.pid  # type: ignore[union-attr]
                                          for i, w in enumerate(workers)}}
        every = loads.conns

        # ---- sustained
        rss: dict[str, list[tuple[float, float]]] = {k: [] for k in pids}
        backlog_max = 0.0
        full_at: float | None = None  # when every PBX's state first let go of visits
        pops = Pops()
        await loads.ask_all(every, {"op": "marks"})  # rings before the phase: not timed
        roles = {"core": [pids["core"]],
                 **{f"web{i}": [w.proc.pid] for i, w in enumerate(workers)},  # type: ignore[union-attr]
                 "pbx_load": [c.pid for c in loads.children[:args.pbxs]],
                 "browser_load": [c.pid for c in loads.children[args.pbxs:]]}
        cpu_before = cpu_times(roles)
        t0 = time.perf_counter()
        chunk = min(30.0, args.duration)
        done_s, sent = 0.0, 0
        per_pbx = args.rate / args.pbxs
        progress(f"sustained: {args.rate:g} events/s ({per_pbx:g} per PBX) for "
                 f"{args.duration:g} s")
        while done_s < args.duration:
            step = min(chunk, args.duration - done_s)
            pacing = asyncio.ensure_future(loads.ask_all(pbx_conns, {
                "op": "pace", "rate": per_pbx, "seconds": step}))
            while not pacing.done():
                await asyncio.wait({pacing}, timeout=min(5.0, step))
                now = time.perf_counter() - t0
                for k, pid in pids.items():
                    rss[k].append((now, rss_of(pid)))
                m = await scrape(http, core_url)
                backlog_max = max(backlog_max, _one(m, "hotline_consumer_backlog"))
                let_go = [v for k, v in m.items()
                          if k.startswith("hotline_visits_let_go_total{")]
                if full_at is None and len(let_go) == args.pbxs and all(let_go):
                    full_at = now
            sent = sum(r["sent"] for r in await pacing)
            done_s += step
            pops.add(await loads.ask_all(every, {"op": "marks"}))
            shown = sum(1 for k in pops.rung if k in pops.shown)
            progress(f"  {done_s:5.0f} s  sent {sent}  backlog max {backlog_max:.0f}  rings "
                     f"{len(pops.rung)} shown {shown}  rss "
                     + " ".join(f"{k} {v[-1][1]:.0f}" for k, v in rss.items() if v))
        elapsed = await _until_drained(http, core_url) - t0
        out["cpu_cores"] = cores_used(cpu_before, cpu_times(roles), elapsed)
        # The workers and the browsers may still be behind the core: a ring counts as
        # missed only if its call has not shown once nothing new showed for 5 s (60 s at
        # most), so the late pops are in the latencies, not left out of them.
        quiet_since = give_up = time.monotonic()
        while time.monotonic() - quiet_since < 5.0 and time.monotonic() - give_up < 60.0:
            before = len(pops.shown)
            pops.add(await loads.ask_all(every, {"op": "marks"}))
            if len(pops.shown) != before:
                quiet_since = time.monotonic()
            if all(k in pops.shown for k in pops.rung):
                break
            await asyncio.sleep(0.5)
        lat, missed = pops.latencies()
        if args.logs:  # each pop: (s since the first ring, ms, interface), for a look after
            Path(args.logs).mkdir(parents=True, exist_ok=True)
            start = min(pops.rung.values(), default=0.0)
            (Path(args.logs) / "pops.json").write_text(json.dumps(sorted(
                (round(at - start, 3), round((pops.shown[k] - at) * 1000.0, 1), k[0])
                for k, at in pops.rung.items() if k in pops.shown)))
        out["events_per_s"] = round(sent / elapsed, 1)
        out["backlog_max"] = int(backlog_max)
        out["pop_latency_ms"] = {"p50": round(percentile(lat, 50), 1),
                                 "p99": round(percentile(lat, 99), 1),
                                 "max": round(max(lat, default=0.0), 1)}
        out["pops"], out["pops_missed"] = len(lat), missed
        out["warmup_s"], out["warmup_over"] = warmup(full_at, args.duration)
        out["rss_mb"] = {k: rss_growth(samples, out["warmup_s"]) for k, samples in rss.items()}
        lags = []
        out["gc_longest_ms"] = {}
        for k, url in [("core", core_url), *((f"web{i}", u) for i, u in enumerate(urls))]:
            m = await scrape(http, url)
            if k != "core":
                lags.append(histogram_p(m, "hotline_bus_lag_seconds", 99))
            out["gc_longest_ms"][k] = round(1000 * max(
                (v for n, v in m.items() if n.startswith("hotline_gc_longest_pause_seconds{")),
                default=0.0), 1)
        bound = max((le * 1000 for le, _ in lags), default=0.0)  # None: past the top bucket
        out["bus_lag_p99_ms_at_most"] = None if bound == float("inf") else bound
        out["bus_entries"] = sum(n for _, n in lags)

        # ---- max
        seconds = getattr(args, "max_seconds", 10.0)
        progress(f"max: {args.max_rate:g} events/s for {seconds:g} s across {args.pbxs} PBXs")
        t0 = time.perf_counter()
        pacing = asyncio.ensure_future(loads.ask_all(pbx_conns, {
            "op": "pace", "rate": args.max_rate / args.pbxs, "seconds": seconds}))
        backlog_max, backlogs = 0.0, []
        while not pacing.done():
            await asyncio.wait({pacing}, timeout=1.0)
            backlogs.append(_one(await scrape(http, core_url), "hotline_consumer_backlog"))
            backlog_max = max(backlog_max, backlogs[-1])
        total = sum(r["sent"] for r in await pacing)
        out["max_asked"] = args.max_rate
        out["max_seconds"] = seconds
        # bounded: the backlog of the last third no higher than of the first two thirds
        cut = max(1, len(backlogs) * 2 // 3)
        out["max_backlog_late"] = int(max(backlogs[cut:], default=0.0))
        out["max_backlog_early"] = int(max(backlogs[:cut], default=0.0))
        out["max_events_per_s"] = round((total - sent) / (await _until_drained(
            http, core_url) - t0), 1)
        out["max_backlog"] = int(backlog_max)
        await loads.ask_all(every, {"op": "stop"})
    finally:
        await http.close()
        for p in procs:
            await p.stop()
        loads.stop()
    return out


async def _until_drained(http: Any, core_url: str, stall_s: float = 15.0) -> float:
    """Wait until the core's consumer backlog is empty and its applied count stands still
    for 0.5 s (every frame written has been taken); the time it got there (perf_counter).
    The count is of the events the state models, fewer than the frames, so the frames
    written are what the rates divide."""
    last, since, drained_at = -1.0, time.perf_counter(), time.perf_counter()
    while True:
        m = await scrape(http, core_url)
        done = _one(m, "hotline_ami_events_total")
        backlog = _one(m, "hotline_consumer_backlog")
        now = time.perf_counter()
        if done != last or backlog:
            last, since, drained_at = done, now, now
        elif now - since >= 0.5:
            return drained_at
        if now - since > stall_s:
            progress(f"  the core stopped with a backlog of {backlog:.0f}")
            return drained_at
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- 3: failover


async def failover_phase(args: argparse.Namespace, db: str, redis: str, prefix: str,
                         work: Path) -> dict[str, Any]:
    import aiohttp

    names = [f"pbx{i}" for i in range(1, args.pbxs + 1)]
    qlogs = {name: work / f"queue_log.{name}" for name in names}
    sims = {name: SimProcess(qlogs[name], agents=6, rate=1.3 / args.pbxs, seed=args.seed + i)
            for i, name in enumerate(names)}
    ports = {name: await sim.start() for name, sim in sims.items()}
    cfg = core_config(work / "ha.toml", name=names[0], ami_port=ports[names[0]],
                      secret=sims[names[0]].secret, database_url=db,
                      queue_log_path=qlogs[names[0]], redis_url=redis, prefix=prefix + "-ha",
                      more_pbxs=tuple((n, ports[n], qlogs[n]) for n in names[1:]))
    n = 0
    active = CoreProcess(cfg, work, f"ha-core{n}")
    standby = CoreProcess(cfg, work, f"ha-core{n + 1}")
    worker = CoreProcess(cfg, work, "ha-web", web=True)
    procs = [active, standby, worker]
    seen: dict[str, float] = {}  # call uniqueid -> first shown on any console
    tasks: list[asyncio.Task[None]] = []
    out: dict[str, Any] = {"failovers": args.failovers, "lease_s": [], "first_pop_s": []}
    http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    try:
        await active.start()
        await active.wait_serving(180)
        await standby.start()
        await worker.start()
        site = f"http://127.0.0.1:{await worker.wait_serving(180)}/"
        ops = [f"op{i}" for i in range(1, 7)]
        await _accounts(db, ops, [])
        for name in ops:
            tasks.append(asyncio.create_task(_console(http, site, name, seen)))
        await standby.wait_for("another core is active", 120)
        for sim in sims.values():
            await sim.command(do="go", seconds=args.failovers * 25.0 + 10.0)
        for i in range(args.failovers):
            await asyncio.sleep(8.0)
            killed_at = time.time()
            active.kill9()
            t = time.monotonic()
            if not await standby.wait_for("lease taken", 30):
                progress(f"  failover {i + 1}: the standby did not take the lease")
                break
            out["lease_s"].append(round(time.monotonic() - t, 2))
            before = set(seen)
            deadline = time.monotonic() + 60
            first = None
            while time.monotonic() < deadline and first is None:
                await asyncio.sleep(0.02)
                new = [at for uid, at in seen.items() if uid not in before and at > killed_at]
                first = min(new) if new else None
            out["first_pop_s"].append(round(first - killed_at, 2) if first else None)
            progress(f"  failover {i + 1}: lease {out['lease_s'][-1]} s, first pop "
                     f"{out['first_pop_s'][-1]} s after kill -9")
            await active.stop()
            n += 2
            active, standby = standby, CoreProcess(cfg, work, f"ha-core{n}")
            procs.append(standby)
            await standby.start()
            await standby.wait_for("another core is active", 120)
        final = {name: await sim.idle(timeout=180) for name, sim in sims.items()}
        deadline = time.monotonic() + 30
        while not (r := await reconcile(db, qlogs)).exact and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await active.stop()
        r = await reconcile(db, qlogs)
        out["calls"] = r.logged
        out["lost"] = len(r.lost)
        out["doubled"] = len(r.doubled)
        out["wrong_outcome"] = len(r.wrong)
        out["left_open"] = len(r.still_open)
        many = len(names) > 1
        counters = {f"{n}/{q}" if many else q: c for n, st in final.items()
                    for q, c in st["queues"].items()}
        out["figures_equal"] = r.per_queue_db == r.per_queue_log and {
            q: {"completed": f["completed"], "abandoned": f["abandoned"]}
            for q, f in r.per_queue_db.items()} == counters
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await http.close()
        for p in procs:
            await p.stop()
        for sim in sims.values():
            await sim.stop()
    return out


async def _console(http: Any, site: str, name: str, seen: dict[str, float]) -> None:
    """One operator's console through the worker: sign in once, keep the socket (open it
    again when it closes: the same cookie), note when each call first shows."""
    from agent_console.hub import apply_ops
    from agent_console.session import COOKIE

    async with http.post(site + "api/login", json={"username": name,
                                                   "password": PASSWORD}) as r:
        r.raise_for_status()
        cookie = r.cookies[COOKIE].value
    while True:
        try:
            async with http.ws_connect(site + "ws", headers={"Cookie": f"{COOKIE}={cookie}"},
                                       heartbeat=None) as ws:
                doc: dict[str, Any] = {}
                async for msg in ws:
                    at = time.time()
                    m = json.loads(msg.data)
                    if m.get("type") == "snapshot":
                        doc = m["data"]
                    elif m.get("type") == "update":
                        apply_ops(doc, m["ops"])
                    for uid in bench._calls_shown(doc):
                        seen.setdefault(uid, at)
        except (OSError, ValueError, TimeoutError):
            pass
        await asyncio.sleep(0.5)


# --------------------------------------------------------------------------- the run


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"pbxs": args.pbxs, "web_workers": args.web_workers,
                              "operators": args.operators, "wallboards": args.wallboards,
                              "rate": args.rate, "duration_s": args.duration,
                              "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    prefix = f"hotline-bench-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="hotline-bench-") as tmp, \
            Scratch(args.database) as db:
        try:
            progress(f"scale-out: PostgreSQL database {db.rsplit('/', 1)[1]}, Redis {args.redis}")
            result["scaleout"] = await load_phase(args, db, args.redis, prefix, Path(tmp))
            if args.failovers:  # on a database of its own: only the queue_log's calls
                progress(f"failover: {args.failovers} x kill -9 of the active core")
                with Scratch(args.database) as ha_db:
                    result["failover"] = await failover_phase(args, ha_db, args.redis,
                                                              prefix, Path(tmp))
        finally:
            if args.logs:  # the processes' own logs, kept for a look afterwards
                Path(args.logs).mkdir(parents=True, exist_ok=True)
                for f in Path(tmp).glob("*.[eo][ru][rt]"):
                    shutil.copy(f, Path(args.logs) / f.name)
            await _redis_cleanup(args.redis, prefix)
            await _redis_cleanup(args.redis, prefix + "-ha")
    result["load_average_mid"] = [round(x, 2) for x in os.getloadavg()]
    if not args.no_single:
        progress("single process on SQLite: the same operators, wallboards, rate, duration")
        plan = Plan(operators=args.operators, wallboards=args.wallboards, rate=args.rate,
                    duration=args.duration, seed=args.seed, blast_events=20_000, orders=200,
                    day_calls=10_000, progress_every=10.0, load_nice=args.load_nice)
        with tempfile.TemporaryDirectory(prefix="hotline-bench-") as tmp:
            result["single"] = await bench.run(plan, Path(tmp))
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _pops(x: dict[str, Any]) -> str:
    p = x["pop_latency_ms"]
    return f"{p['p50']} / {p['p99']} / {p['max']} ({x['pops']} pops, {x['pops_missed']} missed)"


def table(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, scale-out, single process on SQLite) rows."""
    s, one, f = r.get("scaleout", {}), r.get("single", {}), r.get("failover", {})
    opened = f"({s.get('websockets_connected')}, {s.get('websockets_failed')})"
    one_opened = f"({one.get('websockets_connected')}, {one.get('websockets_failed')})"
    sustained = (f"{s.get('events_per_s', 0):,.0f} ({r['rate']:g}), "
                 f"backlog max {s.get('backlog_max')}")
    most = (f"{s.get('max_events_per_s', 0):,.0f} ({s.get('max_asked', 0):g}, "
            f"{s.get('max_seconds', 10):g} s), backlog max {s.get('max_backlog')} "
            f"(last third {s.get('max_backlog_late')})")
    bound = s.get("bus_lag_p99_ms_at_most", 0.0)
    lag = (f"> 1000 ({s.get('bus_entries')} entries)" if bound is None
           else f"<= {bound} ({s.get('bus_entries')} entries)")
    rows = [
        ("operators / wallboards (open, failed)",
         f"{r['operators']} / {r['wallboards']} {opened}", one_opened if one else "-"),
        ("AMI events/s sustained (asked)", sustained,
         f"{one['events_per_s']:,.0f}" if one else "-"),
        ("AMI events/s at --max-rate (asked)", most,
         f"{one['max_events_per_s']:,.0f} (blast)" if one else "-"),
        ("ring -> pop ms p50 / p99 / max", _pops(s) if "pop_latency_ms" in s else "-",
         _pops(one) if one else "-"),
        ("bus lag core -> worker p99 ms", lag, "-"),
    ]
    warm = s.get("warmup_s")
    warm_text = ("" if warm is None else f" {warm:.0f} s" if s.get("warmup_over")
                 else f" {warm:.0f} s, buffers not full")
    for k, v in s.get("rss_mb", {}).items():
        mine = f"{v['after_warmup']} -> {v['end']} ({v['growth_pct']:+} %)"
        if "from_60s" in v and v["from_60s"] != v["after_warmup"]:
            mine += f"; from 60 s {v['from_60s']} ({v['growth_from_60s_pct']:+} %)"
        theirs = (f"{one['rss_mb_after_warmup']} -> {one['rss_mb_end']} "
                  f"({one['rss_growth_pct']:+} %)") if one and k == "core" else ""
        rows.append((f"RSS MB {k}: after warm-up{warm_text} -> end", mine, theirs))
    if f:
        counted = (f"{f.get('calls')} / {f.get('lost')} / {f.get('doubled')} (wrong "
                   f"{f.get('wrong_outcome')}, open {f.get('left_open')}, figures equal "
                   f"{f.get('figures_equal')})")
        rows += [
            ("failovers: kill -9 -> lease s", " ".join(map(str, f["lease_s"])), "-"),
            ("failovers: kill -9 -> first pop s", " ".join(map(str, f["first_pop_s"])), "-"),
            ("failovers: calls / lost / doubled", counted, "-"),
        ]
    if "cpu_cores" in s:
        used = " ".join(f"{k} {v}" for k, v in s["cpu_cores"].items())
        rows.append((f"cores busy, sustained (load nice {s['load_processes'].get('nice', 0)})",
                     used, ""))
    gcs = " ".join(f"{k} {v}" for k, v in s.get("gc_longest_ms", {}).items()) or "-"
    rows.append(("longest GC pause ms (full GCs)", gcs,
                 f"{one['gc_pause_ms_max']} ({one['gc_full_collections']})" if one else "-"))
    loads = (f"{r['load_average_start']} / {r['load_average_mid']} / "
             f"{r['load_average_end']}")
    rows.append(("load average start / mid / end", loads, ""))
    return rows


def main(args: argparse.Namespace) -> int:
    """``callcenter bench --web-workers N ...``; defaults: 5,000 operators, 200 wallboards,
    1,000 events/s for 120 s."""
    from callcenter import logs

    logs.setup("warning", "console")
    bench._raise_fd_limit()
    if not 1 <= args.web_workers <= 16 or args.failovers < 0:
        print("callcenter bench: --web-workers must be 1..16, --failovers >= 0", flush=True)
        return 2
    for name, default in (("operators", 5000), ("wallboards", 200), ("rate", 1000.0),
                          ("duration", 120.0)):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if not 1 <= args.pbxs <= 8:
        print("callcenter bench: --pbxs must be 1..8", flush=True)
        return 2
    if not 0 <= args.load_nice <= 19:
        print("callcenter bench: --load-nice must be 0..19", flush=True)
        return 2
    if not 0 <= args.load_procs <= 32:
        print("callcenter bench: --load-procs must be 0..32 (0: one per 1,000 sockets)",
              flush=True)
        return 2
    if not args.database or not args.database.startswith("postgresql"):
        print("callcenter bench: the scale-out bench needs --database postgresql://...",
              flush=True)
        return 2
    def stop(*_: object) -> None:  # SIGTERM: the scratch database and keys go too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        result = asyncio.run(run(args))
    except KeyboardInterrupt:
        print("callcenter bench: stopped", flush=True)
        return 130
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(f"{'figure':<40} {'scale-out (PostgreSQL, Redis, workers)':<52} "
              f"single process (SQLite)")
        for label, a, b in table(result):
            print(f"{label:<40} {a:<52} {b}")
    return 0
