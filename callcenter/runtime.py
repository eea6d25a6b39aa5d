"""What every entry point shares: the one-line user error and running until SIGINT/SIGTERM.

Imported by ``callcenter.cli``, ``callcenter.demo`` and the sub-commands of other wings
(``recordings.cli``) so that none of them imports the CLI module itself.
"""

from __future__ import annotations

import asyncio
import math
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

T = TypeVar("T")


class CliError(Exception):
    """A one-line message for the user; the CLI prints it and exits with code 2."""


async def run_until_signalled() -> None:
    """Wait until the process gets SIGINT or SIGTERM (returns; never raises for them).

    With ``HOTLINE_TRACEMALLOC=<path>`` in the environment (a diagnosis, not for
    production: it slows the process several times) the process also traces its
    memory and appends, every ``HOTLINE_TRACEMALLOC_EVERY`` s (60), what grew since the
    first look, by source line, to ``<path>.<pid>``; with ``HOTLINE_GC_CENSUS=<path>``,
    as often, what the cyclic collector tracks, by generation and type; with
    ``HOTLINE_STALL_PROBE=<path>``, each time the event loop stands still longer than
    ``HOTLINE_STALL_MS`` (100), where it stands (:func:`stall_probe`)."""
    import os
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as diagnoses:
        trace, census = os.environ.get("HOTLINE_TRACEMALLOC"), os.environ.get("HOTLINE_GC_CENSUS")
        every = _env_number("HOTLINE_TRACEMALLOC_EVERY", 60.0, 1.0, 86_400.0) \
            if trace or census else 60.0
        if trace:
            await diagnoses.enter_async_context(periodic(
                "memory-trace", every, _memory_tracer(f"{trace}.{os.getpid()}"),
                failed="memory tracing failed", first=False))
        if census:
            await diagnoses.enter_async_context(periodic(
                "gc-census", every, _gc_census(f"{census}.{os.getpid()}"),
                failed="gc census failed", first=False))
        if stalls := os.environ.get("HOTLINE_STALL_PROBE"):
            ms = _env_number("HOTLINE_STALL_MS", 100.0, 1.0, 60_000.0)
            diagnoses.enter_context(stall_probe(f"{stalls}.{os.getpid()}", ms / 1e3))
        await _until_signal()


def _env_number(name: str, default: float, low: float, high: float) -> float:
    """A diagnosis's number from the environment, ``default`` when unset; out of
    ``[low, high]`` or not a number: ``default``, and an error line says so (the process
    runs on: a diagnosis's typo must not stop a core)."""
    import os

    import structlog

    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        structlog.get_logger(__name__).error(
            "diagnosis setting ignored", setting=name, value=text[:20], used=default,
            allowed=f"{low:g}..{high:g}")
        return default
    return value


@contextmanager
def stall_probe(path: str, threshold_s: float = 0.1, *, every_s: float = 0.01
                ) -> Iterator[None]:
    """While open (in a running event loop), note in ``path`` each time the loop has not
    turned for ``threshold_s``: the main thread's stack where it stands (sampled again
    each ``threshold_s`` while it stands still), and each collection of the cyclic
    collector that took half of ``threshold_s`` or more (the main thread holds the GIL
    through one, so no stack is taken during it).  Lines: ``stall <clock> <ms> ms``
    and the stack, ``gc <clock> gen <n> <ms> ms``.  A thread samples; the loop's only
    cost is a callback every ``every_s``."""
    import gc
    import sys
    import threading
    import time
    import traceback

    loop = asyncio.get_running_loop()
    main = threading.get_ident()
    beat = [time.monotonic()]
    stop = threading.Event()
    started: list[float] = [0.0]

    def tick() -> None:
        beat[0] = time.monotonic()
        handle[0] = loop.call_later(every_s, tick)

    handle = [loop.call_later(every_s, tick)]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.monotonic()
        elif (took := time.monotonic() - started[0]) >= threshold_s / 2:
            _append(path, f"gc {time.strftime('%H:%M:%S')} gen {info.get('generation')} "
                          f"{took * 1e3:.0f} ms\n")

    def watch() -> None:
        sampled = 0.0
        while not stop.wait(threshold_s / 4):
            now = time.monotonic()
            late = now - beat[0]  # (read once: the loop may turn while this looks)
            if late < threshold_s or now - sampled < threshold_s:
                continue
            frame = sys._current_frames().get(main)
            stack = traceback.format_stack(frame)[-14:] if frame is not None else []
            sampled = now
            _append(path, f"stall {time.strftime('%H:%M:%S')} {late * 1e3:.0f} ms\n"
                    + "".join("    " + line.strip().replace("\n", "\n    ") + "\n"
                              for line in stack))

    gc.callbacks.append(on_gc)
    watcher = threading.Thread(target=watch, name="stall-probe", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        gc.callbacks.remove(on_gc)
        handle[0].cancel()


def _gc_census(path: str) -> Callable[[], Awaitable[None]]:
    """A turn of the collector's census: how many objects each generation tracks (what a
    full collection scans, the frozen ones aside) and the 25 commonest types among the
    oldest, appended to ``path``.  Walking the objects holds the loop for a moment."""
    import gc
    import time
    from collections import Counter

    async def turn() -> None:
        sizes = [len(gc.get_objects(g)) for g in range(3)]
        kinds = Counter(type(o).__qualname__ for o in gc.get_objects(2)).most_common(25)
        head = (f"== {time.strftime('%H:%M:%S')} tracked {sizes} frozen "
                f"{gc.get_freeze_count()} counts {gc.get_count()}\n")
        lines = [head]
        lines += [f"{n:10d} {name}\n" for name, n in kinds]
        await asyncio.to_thread(_append, path, "".join(lines))
    return turn


def _memory_tracer(path: str) -> Callable[[], Awaitable[None]]:
    """A turn of the memory trace: the first notes where memory stands, each later one
    appends to ``path`` what grew since, by call stack."""
    import time
    import tracemalloc

    tracemalloc.start(4)
    first: list[tracemalloc.Snapshot] = []

    async def turn() -> None:
        snap = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__),))
        if not first:
            first.append(snap)
            return
        grown = snap.compare_to(first[0], "traceback")[:15]
        lines = [(f"== {time.strftime('%H:%M:%S')} traced "
                 f"{tracemalloc.get_traced_memory()[0] / 1e6:.1f} MB\n")]
        for stat in grown:
            lines.append(f"{stat.size_diff / 1e6:8.2f} MB {stat.count_diff:+9d}\n")
            lines += [f"      {line.strip()[:160]}\n" for line in stat.traceback.format()[-8:]]
        await asyncio.to_thread(_append, path, "".join(lines))
    return turn


def _append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await stop.wait()


async def wait_within(aw: Awaitable[T], timeout_s: float | None) -> T:
    """``await aw`` for at most ``timeout_s`` seconds (None: no limit), then
    ``TimeoutError``: ``asyncio.wait_for`` without its lost cancellation.  Python
    3.11's ``wait_for`` runs ``aw`` as a task of its own and, when the caller's task is
    cancelled in the very turn that task ends, returns its result instead of raising
    (gh-86296, fixed in 3.12), so a ``while True`` loop around it goes on after
    ``cancel()`` and the ``stop()`` awaiting it never returns: the rare shutdown hangs
    of the demo's tests.  Here ``aw`` runs in the caller's task under
    ``asyncio.timeout``, where a cancellation is always delivered."""
    async with asyncio.timeout(timeout_s):
        return await aw


def settle_collector(young: int = 10_000) -> None:
    """Once a long-running process has started (core, web worker): what exists now
    (modules, classes, the service, the app) lives for good, so take it out of the
    cyclic collector's full runs (``gc.freeze``), which otherwise stand the event loop
    still for 100 ms and more; and collect the young generation after ``young`` net
    allocations instead of 700, so full runs come about 14 times less often.  What a
    process keeps long-lived after this is what its full runs scan (the web worker holds
    its screens' documents as text for that reason: ``callcenter.bus.TextDoc``)."""
    import gc

    gc.collect()  # (garbage alive now would be frozen for good)
    gc.freeze()
    threshold0, threshold1, threshold2 = gc.get_threshold()
    gc.set_threshold(max(threshold0, young), threshold1, threshold2)


@asynccontextmanager
async def periodic(name: str, every: float, turn: Callable[[], Awaitable[object]], *,
                   failed: str, first: bool = True) -> AsyncIterator[None]:
    """While the context is open, ``await turn()`` every ``every`` seconds in a task named
    ``name`` (at once, then every ``every`` s; ``first=False``: only after the first
    wait).  A turn that raises is logged with ``failed`` and the next turn runs: a
    periodic task that died once would stay dead (prunes, deadline timers, alerts)."""
    import structlog

    log = structlog.get_logger(__name__)

    async def loop() -> None:
        if not first:
            await asyncio.sleep(every)
        while True:
            try:
                await turn()
            except Exception:
                log.exception(failed, task=name)
            await asyncio.sleep(every)

    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
