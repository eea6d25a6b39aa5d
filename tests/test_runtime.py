"""The diagnoses every long-running process carries (``callcenter.runtime``)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import pytest


class _Kept:
    """A type of this test only, to be found in the census by name."""


async def test_the_gc_census_counts_what_the_collector_tracks_by_type(tmp_path: Path) -> None:
    """HOTLINE_GC_CENSUS's turn: the tracked objects by generation, and among the oldest
    the commonest types: 30,000 objects of one type kept alive lead the list."""
    import gc

    from callcenter.runtime import _gc_census, periodic

    kept = [_Kept() for _ in range(30_000)]
    gc.collect()  # all of them into the oldest generation
    path = tmp_path / "census.txt"
    async with periodic("gc-census", 0.05, _gc_census(str(path)), failed="census failed"):
        for _ in range(100):
            await asyncio.sleep(0.05)
            if path.exists() and "_Kept" in path.read_text():
                break
    head, *kinds = path.read_text().split("== ")[1].splitlines()
    assert "tracked [" in head and "frozen" in head
    counts = {line.split()[1]: int(line.split()[0]) for line in kinds}
    assert counts["_Kept"] >= 30_000 and len(kept) == 30_000


def _stand_still(seconds: float) -> None:
    import time

    time.sleep(seconds)  # the event loop's thread, blocked


async def test_the_stall_probe_shows_where_the_loop_stood_still(tmp_path: Path) -> None:
    """HOTLINE_STALL_PROBE: a blocked loop is noted with the stack that blocked it; a
    loop that keeps turning notes nothing."""
    from callcenter.runtime import stall_probe

    quiet, stuck = tmp_path / "quiet.txt", tmp_path / "stuck.txt"
    with stall_probe(str(quiet), 0.05):
        for _ in range(20):
            await asyncio.sleep(0.01)
    assert not quiet.exists()
    with stall_probe(str(stuck), 0.05):
        await asyncio.sleep(0.02)
        _stand_still(0.3)
        await asyncio.sleep(0.02)
    text = stuck.read_text()
    assert text.startswith("stall ") and "_stand_still" in text and "time.sleep" in text
    first_ms = int(text.split()[2])
    assert 50 <= first_ms <= 300


async def test_the_stall_probe_notes_a_long_collection(tmp_path: Path) -> None:
    import gc

    from callcenter.runtime import stall_probe

    kept = [[i] for i in range(300_000)]  # a full collection walks them all
    path = tmp_path / "gc.txt"
    with stall_probe(str(path), 0.002):
        gc.collect()
        await asyncio.sleep(0.01)
    assert any(line.startswith("gc ") and " gen 2 " in line
               for line in path.read_text().splitlines()) and len(kept) == 300_000


def test_a_diagnosis_setting_that_is_not_a_number_in_range_is_ignored_and_said(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """HOTLINE_STALL_MS and HOTLINE_TRACEMALLOC_EVERY: a typo gives the default and an
    error line, never a stopped core (it was raised in a task nobody read: the core
    stopped with exit code 0)."""
    from structlog.testing import capture_logs

    from callcenter.runtime import _env_number

    monkeypatch.delenv("HOTLINE_STALL_MS", raising=False)
    assert _env_number("HOTLINE_STALL_MS", 100.0, 1.0, 60_000.0) == 100
    monkeypatch.setenv("HOTLINE_STALL_MS", "40")
    assert _env_number("HOTLINE_STALL_MS", 100.0, 1.0, 60_000.0) == 40
    for bad in ("", "fast", "0", "-5", "nan", "1e9"):
        monkeypatch.setenv("HOTLINE_STALL_MS", bad)
        with capture_logs() as logs:
            assert _env_number("HOTLINE_STALL_MS", 100.0, 1.0, 60_000.0) == 100
        assert [(e["event"], e["setting"]) for e in logs] == [
            ("diagnosis setting ignored", "HOTLINE_STALL_MS")]


async def _loop_until_cancelled(wait: Any, event: asyncio.Event, turns: list[int]) -> None:
    """A service task's shape: wait for a wake-up or a timeout, do a turn, forever."""
    while True:
        with contextlib.suppress(TimeoutError):
            await wait(event.wait(), 30.0)
        event.clear()
        turns.append(1)


@pytest.mark.parametrize("waiting", ["wait_within", "asyncio.wait_for"])
async def test_a_cancel_in_the_turn_the_wait_ends_stops_the_loop(waiting: str) -> None:
    """The wake-up and ``cancel()`` in one turn of the loop (a ready operator wakes the
    dialer as the demo stops): ``wait_within`` delivers the cancellation and the task
    ends; Python 3.11's ``asyncio.wait_for`` returns the wake-up instead, so the loop
    goes on and a ``stop()`` awaiting it would wait for ever (the demo's rare shutdown
    hang).  Fixed in Python 3.12, where ``wait_for`` is built on ``asyncio.timeout``."""
    from callcenter.runtime import wait_within

    wait = wait_within if waiting == "wait_within" else asyncio.wait_for
    event, turns = asyncio.Event(), []
    task = asyncio.create_task(_loop_until_cancelled(wait, event, turns))
    await asyncio.sleep(0.01)  # it waits
    event.set()
    task.cancel()
    await asyncio.sleep(0.05)
    loses_it = waiting == "asyncio.wait_for" and sys.version_info < (3, 12)
    assert task.done() is not loses_it
    if loses_it:  # the loop went on: a turn, then waiting again
        assert turns == [1]
        task.cancel()
        await asyncio.sleep(0.01)
    assert task.cancelled()


async def test_wait_within_times_out_and_returns_what_it_awaited() -> None:
    from callcenter.runtime import wait_within

    assert await wait_within(asyncio.sleep(0, "done"), 1.0) == "done"
    with pytest.raises(TimeoutError):
        await wait_within(asyncio.Event().wait(), 0.01)
