"""``callcenter bench``: the quick path end to end with tiny numbers, and its helpers.

The run is a subprocess: the benchmark spawns its load process, raises the
open-files limit and sets the log level for the whole process.  No timing is
asserted, only that every figure is there and makes sense.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from callcenter.bench import (
    TABLE,
    panoramisk_rate,
    percentile,
    rss_mb,
    synthetic_day,
    trace_sample,
)

ROOT = Path(__file__).resolve().parent.parent

KEYS = {
    "events_per_s", "max_events_per_s", "baseline_panoramisk_events_per_s",
    "ratio_to_baseline", "pop_latency_ms", "operators", "wallboards", "rss_mb_peak",
    "rss_growth_pct", "cpu_s_per_1000_events", "orders_per_s", "day_rebuild_s",
}


@pytest.fixture(scope="module")
def quick_run() -> tuple[dict[str, Any], str]:
    """One tiny ``callcenter bench --quick --json`` run: its figures and its stderr."""
    out = subprocess.run(
        [sys.executable, "-m", "callcenter.cli", "bench", "--quick", "--json",
         "--operators", "3", "--wallboards", "1", "--rate", "300", "--duration", "2",
         "--blast-events", "3000", "--orders", "10", "--day-calls", "300"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout), out.stderr


def test_quick_run_reports_every_figure(quick_run: tuple[dict[str, Any], str]) -> None:
    r, stderr = quick_run
    assert KEYS <= r.keys()
    assert (r["operators"], r["wallboards"]) == (3, 1)
    assert r["websockets_connected"] == 4 and r["websockets_failed"] == 0
    assert 0 < r["events_per_s"] <= 300 * 1.05
    assert r["events_sustained"] > 0 and r["events_skipped"] == 0
    assert r["max_events_per_s"] > 0 and r["baseline_panoramisk_events_per_s"] > 0
    assert r["ratio_to_baseline"] == round(
        r["max_events_per_s"] / r["baseline_panoramisk_events_per_s"], 3)
    lat = r["pop_latency_ms"]
    assert set(lat) == {"p50", "p99", "max"}
    assert r["pops"] > 0 and 0 <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert 0 < r["rss_mb_end"] <= r["rss_mb_peak"] < 1000
    assert r["cpu_s_per_1000_events"] > 0
    assert r["orders_per_s"] > 0 and r["day_calls"] == 300 and r["day_rebuild_s"] >= 0
    assert "[bench" in stderr  # progress lines go to stderr, the JSON alone to stdout


def test_table_without_json(quick_run: tuple[dict[str, Any], str]) -> None:
    """Without --json the same figures are printed as TABLE (a second bench run would
    only repeat the first): every row renders from a real run's figures."""
    rows = {label: fmt(quick_run[0]) for label, fmt in TABLE}
    assert rows["ring-to-pop ms p50 / p99 / max"].endswith(" missed)")
    assert rows["work orders/s (SQLite)"] == f"{quick_run[0]['orders_per_s']:,.1f}"
    assert rows["operators / wallboards connected"] == "3 / 1 (4 open, 0 failed)"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_baseline_counts_every_frame_of_the_trace() -> None:
    frames = trace_sample(seed=1, agents=5, events=500)
    assert len(frames) == 500 and all(f.startswith(b"Event: ") for f in frames)
    assert panoramisk_rate(frames, chunk=1000) > 0


def test_synthetic_day_stays_inside_the_day() -> None:
    rows = synthetic_day(1_000_000.0, 200, seed=3)
    assert len({r["uniqueid"] for r in rows}) == 200
    assert all(1_000_000.0 <= r["joined_at"] < 1_086_400.0 for r in rows)
    assert {r["outcome"] for r in rows} == {"completed", "abandoned"}


def test_rss_is_read_from_proc() -> None:
    now, peak = rss_mb()
    assert 0 < now <= peak
