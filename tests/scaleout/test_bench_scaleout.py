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

