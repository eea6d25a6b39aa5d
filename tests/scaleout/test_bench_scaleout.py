"""The scale-out bench's reading of a process's Prometheus page (``/metrics``): the
counters and gauges by name, a histogram's quantile as the bound of its bucket."""

from __future__ import annotations

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
