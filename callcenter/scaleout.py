"""The scale-out rig: real processes on loopback, and the truth they are checked against.

Used by the failover test (``tests/scaleout/test_failover.py``) and by ``callcenter bench
--pbxs/--web-workers`` (:mod:`callcenter.bench`)::

    SimProcess  -- ``python -m callcenter.scaleout sim``: a simulated Asterisk (AMI on
                   loopback, real time, writes Asterisk's queue_log), traffic on command
    CoreProcess -- ``callcenter serve`` with ``[ha] enabled`` against one PostgreSQL
                   (and the Redis bus): two of them are an active and a standby core
    reconcile() -- the database's call records against the simulator's queue_log:
                   lost, doubled, wrong outcome, left open, per-queue figures

The simulator runs at real speed (1 PBX second per second) because the cores stamp
events with their own wall clock and settle gaps from the queue_log by time.  The child
speaks JSON lines: it prints ``{"port": N}`` once listening, then answers each command
read from stdin (``{"do": "go", "seconds": S}`` starts callers for S seconds,
``{"do": "status"}``, ``{"do": "stop"}``) with one line: the PBX's clock, calls still up,
and app_queue's own counters per queue (Completed, Abandoned: what ``QueueSummary``
reports).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from acd import queue_log
from acd.centres import pbx_of
from acd.metrics import by_queue
from callcenter.runtime import wait_within

PYTHON = sys.executable


# --------------------------------------------------------------------------- the truth


@dataclass
class Reconciled:
    """The database against the simulator's queue_log (one row per queue visit)."""

    logged: int  # visits in the queue_log (ENTERQUEUE lines)
    stored: int  # call records in the database
    lost: list[str] = field(default_factory=list)  # logged, never stored
    doubled: list[str] = field(default_factory=list)  # stored more than once
    wrong: list[str] = field(default_factory=list)  # stored with another outcome
    still_open: list[str] = field(default_factory=list)  # stored waiting/answered
    per_queue_db: dict[str, dict[str, int]] = field(default_factory=dict)
    per_queue_log: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return (not self.lost and not self.doubled and not self.wrong and not self.still_open
                and self.per_queue_db == self.per_queue_log)


def _figures(outcomes: list[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for q, outcome in outcomes:
        f = out.setdefault(q, {"offered": 0, "answered": 0, "completed": 0, "abandoned": 0})
        f["offered"] += 1
        f["answered"] += outcome in ("answered", "completed", "interrupted")
        f["completed"] += outcome == "completed"
        f["abandoned"] += outcome == "abandoned"
    return out


async def reconcile(database_url: str, queue_logs: Path | str | dict[str, Path],
                    home: str = "pbx1") -> Reconciled:
    """Every visit of each PBX's queue_log stored exactly once, with its outcome, none
    open; and the per-queue figures (``acd.metrics.by_queue``) equal the queue_log's.

    ``queue_logs``: one PBX's file, or {PBX name: its file}; a record belongs to the PBX
    its ``pbx`` names (``""`` is the home PBX, the first ``[[pbx]]``).  With several
    PBXs the figures are keyed ``<pbx>/<queue>``."""
    from callcenter.db import Store

    logs = queue_logs if isinstance(queue_logs, dict) else {home: Path(queue_logs)}
    store = Store(database_url)
    await store.open()
    try:
        rows = await store.calls_between(0, 2**40)
        open_rows = await store.open_calls()
    finally:
        await store.close()
    r = Reconciled(logged=0, stored=len(rows))
    many = len(logs) > 1
    for name, path in logs.items():
        tag = f"{name}/" if many else ""
        text = Path(path).read_text(encoding="utf-8")
        logged = {(v.callid, v.queue): v for v in queue_log.visits(queue_log.parse(text))}
        r.logged += len(logged)
        mine = [row for row in rows if pbx_of(row, home) == name]
        seen: dict[tuple[str, str], int] = {}
        for row in mine:
            key = (row.channel_uniqueid, row.queue)
            seen[key] = seen.get(key, 0) + 1
            v = logged.get(key)
            if v is not None and v.outcome != row.outcome:
                r.wrong.append(f"{tag}{row.uniqueid} {row.queue}: stored {row.outcome}, "
                               f"queue_log {v.outcome}")
        r.doubled += sorted(f"{tag}{k[0]} {k[1]} x{n}" for k, n in seen.items() if n > 1)
        r.doubled += sorted(f"{tag}{k[0]} {k[1]} (not in queue_log)" for k in seen
                            if k not in logged)
        r.lost += sorted(f"{tag}{k[0]} {k[1]} {v.outcome}" for k, v in logged.items()
                         if k not in seen)
        per, _ = by_queue(mine, lambda q: 15)
        r.per_queue_db.update({f"{tag}{q}": {"offered": f.offered, "answered": f.answered,
                                             "completed": f.completed,
                                             "abandoned": f.abandoned}
                               for q, f in per.items()})
        r.per_queue_log.update({f"{tag}{q}": f for q, f in _figures(
            [(v.queue, v.outcome) for v in logged.values()]).items()})
    known = set(logs)
    r.doubled += sorted(f"{row.uniqueid} (PBX {row.pbx!r} has no queue_log here)"
                        for row in rows if pbx_of(row, home) not in known)
    r.still_open = sorted(f"{row.uniqueid} {row.outcome}" for row in open_rows)
    return r


# --------------------------------------------------------------------------- the PBX child


async def _sim_child(args: argparse.Namespace) -> None:
    from callcenter.pbx.sim import Pbx, PbxConfig, PbxSimServer
    from callcenter.pbx.sim import QueueConfig as SimQueue
    from callcenter.pbx.traffic import RandomTraffic, TrafficConfig, Until

    queues = tuple(SimQueue(name=q, wrapuptime=1, maxwait=30) for q in args.queue)
    pbx = Pbx(PbxConfig(queues=queues, agents=args.agents), None, start_time=time.time(),
              seed=args.seed)
    server = PbxSimServer(pbx, port=0, users={args.username: args.secret}, speed=1.0,
                          queue_log=args.queue_log)
    await server.start()
    out = sys.stdout
    _say(out, {"port": server.port})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    ends = 0.0
    try:
        while line := await reader.readline():
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            if cmd.get("do") == "go":
                cfg = TrafficConfig(rate=float(cmd.get("rate", args.rate)), talk_median=3.0,
                                    talk_sigma=0.5, talk_min=1.0, talk_max=8.0,
                                    ring_min=0.3, ring_max=1.5, patience_median=12.0,
                                    breaks_per_hour=0.0, first_call_after=0.2)
                ends = pbx.now + float(cmd["seconds"])
                pbx.traffic = Until(RandomTraffic(cfg, seed=args.seed, origin=pbx.now), ends)
                pbx._plan_arrival()  # the core asks its traffic for the first caller
                server.reschedule()
            elif cmd.get("do") == "stop":
                break
            _say(out, {"now": pbx.now, "ends": ends, "channels": len(pbx.channels),
                       "offered": pbx._originated,
                       "queues": {n: {"completed": q.completed, "abandoned": q.abandoned}
                                  for n, q in pbx.queues.items()}})
    finally:
        await server.stop()


def _say(out: IO[str], obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj) + "\n")
    out.flush()


# --------------------------------------------------------------------------- parent side


class SimProcess:
    """The simulated Asterisk in a child process (see the module docstring)."""

    def __init__(self, queue_log_path: Path, *, agents: int = 6, rate: float = 1.0,
                 seed: int = 15, queues: tuple[str, ...] = ("hotline",),
                 secret: str = "ha-secret") -> None:
        self.queue_log = queue_log_path
        self.agents, self.rate, self.seed, self.queues = agents, rate, seed, queues
        self.secret = secret
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> int:
        argv = [PYTHON, "-m", "callcenter.scaleout", "sim", "--queue-log", str(self.queue_log),
                "--agents", str(self.agents), "--rate", str(self.rate),
                "--seed", str(self.seed), "--secret", self.secret]
        for q in self.queues:
            argv += ["--queue", q]
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        self.port = int((await self._read())["port"])
        return self.port

    async def _read(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the PBX simulator exited")
        return dict(json.loads(line))

    async def command(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._read()

    async def idle(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the callers' time is over and no call is up; the last status."""
        deadline = time.monotonic() + timeout
        while True:
            st = await self.command(do="status")
            if st["now"] >= st["ends"] and st["channels"] == 0:
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"the simulator is still busy: {st}")
            await asyncio.sleep(0.25)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            await self.command(do="stop")
        await _end(self.proc)


async def _end(proc: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await wait_within(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def core_config(path: Path, *, name: str, ami_port: int, secret: str, database_url: str,
                queue_log_path: Path, queues: tuple[str, ...] = ("hotline",),
                redis_url: str = "", prefix: str = "hotline",
                more_pbxs: tuple[tuple[str, int, Path], ...] = ()) -> Path:
    """A ``callcenter --config`` file for one core of the rig (TOML).  With
    ``more_pbxs`` ((name, AMI port, queue_log), ...) the first PBX and those become
    ``[[pbx]]`` tables, each reading its own queue_log."""
    lines = ["[ami]", f'name = "{name}"', 'host = "127.0.0.1"', f"port = {ami_port}",
             'username = "hotline"', f'secret = "{secret}"', "ping_interval = 1.0",
             "backoff_max = 0.5", ""]
    if more_pbxs:
        for pbx, port, log_path in ((name, ami_port, queue_log_path), *more_pbxs):
            lines += ["[[pbx]]", f'name = "{pbx}"', 'host = "127.0.0.1"', f"port = {port}",
                      'user = "hotline"', f'secret = "{secret}"',
                      f'queue_log = "{log_path}"', ""]
    lines += ["[database]", f'url = "{database_url}"', "",
              "[metrics]", f'queue_log = "{"" if more_pbxs else queue_log_path}"', "",
              "[outbound]", "enabled = false", "", "[prompts]", "check = false", "", "[ha]",
              "enabled = true", "", "[bus]", f'redis_url = "{redis_url}"',
              f'prefix = "{prefix}"', ""]
    for q in queues:
        lines += [f'[queues."{q}"]', "servicelevel = 15", "wrapuptime = 1", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class CoreProcess:
    """One ``callcenter serve`` of an active/standby pair (or, ``web=True``, one
    ``callcenter web`` worker); its output goes to files."""

    RUNNING = re.compile(r"(?:hotline is running at|hotline web worker \d+ on) "
                         r"http://[^:]+:(\d+)/")

    def __init__(self, config: Path, workdir: Path, label: str, *, web: bool = False) -> None:
        self.config, self.label, self.web = config, label, web
        self.out = workdir / f"{label}.out"
        self.err = workdir / f"{label}.err"
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> None:
        what = ["web", "--port", "0"] if self.web else [
            "serve", "--port", "0", "--agi-port", "0"]
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                PYTHON, "-m", "callcenter.cli", "--config", str(self.config),
                "--log-format", "json", *what,
                stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def log_has(self, text: str, times: int = 1) -> bool:
        """Its log says ``text`` (at least ``times`` times)."""
        return self.err.exists() and self.err.read_text(
            encoding="utf-8", errors="replace").count(text) >= times

    async def wait_for(self, what: str, timeout: float, times: int = 1) -> bool:
        """Wait until its log says ``what`` ("lease taken" ...; ``times`` times) or it
        exits; True if said."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_has(what, times):
                return True
            if self.proc is not None and self.proc.returncode is not None:
                return False
            await asyncio.sleep(0.05)
        return self.log_has(what, times)

    async def wait_serving(self, timeout: float = 60.0) -> int:
        """The web port, once it listens (an active core; a standby never gets here)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.RUNNING.search(self.out.read_text(encoding="utf-8", errors="replace"))
            if m:
                self.port = int(m.group(1))
                return self.port
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(f"{self.label} exited: {self.tail()}")
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.label} is not serving: {self.tail()}")

    def tail(self, n: int = 2000) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")[-n:] \
            if self.err.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is not None:
            await _end(self.proc)


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m callcenter.scaleout")
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sim", help="a simulated Asterisk for the rig (JSON lines on stdio)")
    s.add_argument("--queue-log", required=True)
    s.add_argument("--agents", type=int, default=6)
    s.add_argument("--rate", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=15)
    s.add_argument("--queue", action="append", default=[])
    s.add_argument("--username", default="hotline")
    s.add_argument("--secret", default="ha-secret")
    args = p.parse_args(argv)
    args.queue = args.queue or ["hotline"]
    from callcenter import logs

    logs.setup("warning", "json")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_sim_child(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
