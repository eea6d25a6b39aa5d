"""The scale-out bench's reading of a process's Prometheus page (``/metrics``): the
counters and gauges by name, a histogram's quantile as the bound of its bucket."""

from __future__ import annotations

from pathlib import Path

from callcenter.bench_scaleout import _one, histogram_p, parse_metrics
from callcenter.ops import Ops


def test_bus_lag_quantiles_and_gauges_from_a_workers_metrics_page() -> None:
    ops = Ops("web")
    ops.watch_sockets(lambda: 7)
    for seconds in [0.002] * 90 + [0.02] * 9 + [0.4]:  # 100 entries
        ops.bus_lag.observe(seconds)
    m = parse_metrics(ops.metrics_text().decode())
    assert _one(m, "hotline_websockets") == 7
    assert histogram_p(m, "hotline_bus_lag_seconds", 50) == (0.0025, 100)
    assert histogram_p(m, "hotline_bus_lag_seconds", 99) == (0.025, 100)
    assert histogram_p(m, "hotline_bus_lag_seconds", 100) == (0.5, 100)


def test_operators_split_over_pbxs_in_contiguous_slices() -> None:
    from callcenter.bench_scaleout import split

    assert split(5000, 3) == [(0, 1667), (1667, 1667), (3334, 1666)]
    assert split(2, 3) == [(0, 1), (1, 1), (2, 0)]


def test_pops_pair_a_pbx_process_ring_with_a_browser_process_showing() -> None:
    from callcenter.bench_scaleout import Pops

    pops = Pops()
    pops.add([{"rung": [("Local/1001@agents/n", "1.1", 10.0),
                        ("Local/2001@agents/n", "2.1", 10.5)], "shown": []},
              {"rung": [], "shown": [("Local/1001@agents/n", "1.1", 10.02)]}])
    pops.add([{"rung": [("Local/1001@agents/n", "1.1", 11.0)],  # re-ring: first counts
               "shown": [("Local/1001@agents/n", "1.1", 12.0)]}])  # later showing: first
    lat, missed = pops.latencies()
    assert [round(x, 3) for x in lat] == [20.0] and missed == 1


def test_the_load_parses_only_operator_messages_that_can_show_a_call() -> None:
    from agent_console.hub import diff, dumps
    from callcenter.bench import _may_show_call

    old = {"agent": {"call": None}, "call": None, "queues": {"q": {"waiting": 1}}}

    def update(new: dict[str, object]) -> str:
        return dumps({"type": "update", "stream": "s", "seq": 2, "at": 1.0,
                      "ops": diff(old, new)})

    assert not _may_show_call(update(old | {"queues": {"q": {"waiting": 2}}}))
    assert _may_show_call(update(old | {"call": {"uniqueid": "1.1"}}))
    assert _may_show_call(update(old | {"agent": {"call": "1.1"}}))
    assert _may_show_call(dumps({"type": "snapshot", "stream": "s", "seq": 1, "at": 1.0,
                                 "data": old}))


def test_every_process_shows_its_garbage_collector_pauses() -> None:
    """A full run of the cyclic collector stands the event loop still: each process's
    /metrics shows each run by generation and the longest (what the bench prints)."""
    import gc

    ops = Ops("web")
    gc.collect()
    m = parse_metrics(ops.metrics_text().decode())
    assert m['hotline_gc_pause_seconds_count{generation="2"}'] >= 1
    assert m['hotline_gc_longest_pause_seconds{generation="2"}'] > 0
    assert _one(m, "hotline_gc_longest_pause_seconds") >= \
        m['hotline_gc_longest_pause_seconds{generation="2"}']


async def test_memory_tracing_names_the_lines_that_grew(tmp_path: Path) -> None:
    """HOTLINE_TRACEMALLOC's tracer: what grew after its first look, by the line that
    allocated it (how a process's RSS growth is traced)."""
    import asyncio
    import tracemalloc

    from callcenter.runtime import _memory_tracer, periodic

    path = tmp_path / "mem.txt"
    kept: list[str] = []
    try:
        async with periodic("memory-trace", 0.05, _memory_tracer(str(path)),
                            failed="memory tracing failed", first=False):
            await asyncio.sleep(0.08)  # its first look
            kept += [f"grown {i}" * 10 for i in range(20_000)]
            for _ in range(100):
                await asyncio.sleep(0.05)
                if path.exists() and "test_bench_scaleout.py" in path.read_text():
                    break
    finally:
        tracemalloc.stop()
    text = path.read_text()
    assert text.startswith("== ") and "test_bench_scaleout.py" in text and len(kept) == 20_000



def test_a_load_process_lowers_its_own_cpu_priority() -> None:
    """``--load-nice``: the load stands for other machines (PBXs, operators' PCs), so its
    processes yield the CPU to the processes measured."""
    import multiprocessing as mp
    import os

    from callcenter.bench import _load_main

    conn, child_end = mp.get_context("spawn").Pipe()
    child = mp.get_context("spawn").Process(
        target=_load_main, args=(child_end, {"seed": 1, "agents": 1, "nice": 7}), daemon=True)
    child.start()
    try:
        assert conn.poll(60) and "port" in conn.recv()
        with open(f"/proc/{child.pid}/stat", encoding="ascii") as fh:
            nice = int(fh.read().rsplit(")", 1)[1].split()[16])
        assert nice == min(19, os.nice(0) + 7)
    finally:
        conn.send({"op": "stop"})
        child.join(10)
        if child.is_alive():
            child.terminate()


def test_cores_busy_per_role_and_the_rest_of_the_machine() -> None:
    import os
    import time

    from callcenter.bench_scaleout import cores_used, cpu_of, cpu_times

    before = cpu_of(os.getpid())
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    assert cpu_of(os.getpid()) - before >= 0.2
    assert cpu_of(2 ** 22 + 12345) == 0.0  # no such process
    assert cores_used({"core": 10.0, "web0": 5.0, "machine": 100.0},
                      {"core": 16.0, "web0": 8.0, "machine": 120.0}, 10.0) == {
        "core": 0.6, "web0": 0.3, "rest": 1.1, "machine": 2.0}
    now = cpu_times({"me": [os.getpid()]})
    assert now["me"] > 0 and now["machine"] > 0


def test_the_warm_up_ends_when_the_cores_buffers_are_full() -> None:
    """RSS growth is measured from when every PBX's state first let go of visits (its
    bounded buffers full), at least 60 s in; a phase too short for that says so and
    measures from 60 s; the growth from 60 s is shown beside it."""
    from callcenter.bench_scaleout import rss_growth, warmup

    assert warmup(780.0, 1800.0) == (780.0, True)
    assert warmup(20.0, 1800.0) == (60.0, True)
    assert warmup(1500.0, 1800.0) == (60.0, False)  # less than a third left
    assert warmup(None, 1800.0) == (60.0, False)
    assert warmup(None, 90.0) == (18.0, False)
    samples = [(t, 100.0 + min(600, t) / 10) for t in range(0, 1801, 5)]
    g = rss_growth(samples, 780.0)
    assert (g["after_warmup"], g["end"], g["growth_pct"]) == (160.0, 160.0, 0.0)
    assert (g["from_60s"], g["growth_from_60s_pct"]) == (106.0, 50.9)
