"""Replays of the recorded traces must equal Asterisk's own counters, exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from acd.state import QueueConfig
from callcenter.pbx.replay import TraceError, parse_raw, read_trace, replay
from tests.conftest import ROOT, trace_dirs

TRACE_DIRS = trace_dirs()
pytestmark = pytest.mark.skipif(not TRACE_DIRS, reason="no traces in ../shared/ami-traces")


def truth(trace_dir: Path) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """QueueParams per queue and QueueMember per member name from truth.txt."""
    params: dict[str, dict[str, str]] = {}
    members: dict[str, dict[str, str]] = {}
    for block in (trace_dir / "truth.txt").read_text(encoding="utf-8").split("\n\n"):
        h = parse_raw(block.replace("\n", "\r\n"))
        if h.get("Event") == "QueueParams":
            params[h["Queue"]] = h
        elif h.get("Event") == "QueueMember":
            members[h["Name"]] = h
    return params, members


def queue_settings(trace_dir: Path) -> dict[str, QueueConfig]:
    params, _ = truth(trace_dir)
    # wrapuptime=3 as the trace README says; servicelevel from Asterisk's own answer.
    return {q: QueueConfig(int(p["ServiceLevel"]), 3) for q, p in params.items()}


@pytest.mark.parametrize("trace_dir", TRACE_DIRS, ids=lambda p: p.name)
def test_counters_equal_asterisk(trace_dir: Path) -> None:
    params, _ = truth(trace_dir)
    result = replay(trace_dir / "trace.jsonl", queue_settings(trace_dir))
    assert set(result["queues"]) == set(params)
    for queue, p in params.items():
        f = result["queues"][queue]
        assert f["completed"] == int(p["Completed"])
        assert f["abandoned"] == int(p["Abandoned"])
        assert round(f["servicelevel_perf"], 1) == float(p["ServicelevelPerf"])
        assert round(f["servicelevel_perf2"], 1) == float(p["ServicelevelPerf2"])
        # Asterisk's smoothed Holdtime/TalkTime, recomputed from the per-call records.
        assert f["asterisk_holdtime"] == int(p["Holdtime"])
        assert f["asterisk_talktime"] == int(p["TalkTime"])
        assert f["waiting"] == int(p["Calls"]) == 0


@pytest.mark.parametrize("trace_dir", TRACE_DIRS, ids=lambda p: p.name)
def test_members_calls_taken_equal_asterisk(trace_dir: Path) -> None:
    _, members = truth(trace_dir)
    result = replay(trace_dir / "trace.jsonl", queue_settings(trace_dir))
    for name, m in members.items():
        assert result["agents"][name]["calls_taken"] == int(m["CallsTaken"]), name


@pytest.mark.parametrize("trace_dir", TRACE_DIRS, ids=lambda p: p.name)
def test_counts_agree_with_queue_log(trace_dir: Path) -> None:
    """queue_log is a second, independent record of the same calls."""
    verbs = [line.split("|")[4] for line in
             (trace_dir / "queue_log").read_text(encoding="utf-8").splitlines() if line]
    result = replay(trace_dir / "trace.jsonl", queue_settings(trace_dir))
    f = result["overall"]
    assert f["offered"] == verbs.count("ENTERQUEUE")
    assert f["answered"] == verbs.count("CONNECT")
    assert f["abandoned"] == verbs.count("ABANDON")
    assert f["completed"] == verbs.count("COMPLETEAGENT") + verbs.count("COMPLETECALLER")
    assert sum(a["ring_no_answer"] for a in result["agents"].values()) == verbs.count(
        "RINGNOANSWER")


def test_scenario_a_figures() -> None:
    """The figures for scenario-a, worked by hand from its queue_log."""
    trace = TRACE_DIRS[0] / "trace.jsonl"
    f = replay(trace, queue_settings(TRACE_DIRS[0]))["queues"]["hotline"]
    assert f["offered"] == 36 and f["answered"] == 26 and f["answered_within_sl"] == 6
    assert f["connection_rate"] == 72.22  # 26 / 36
    assert f["answer_rate_sl"] == 23.08  # 6 / 26
    assert f["servicelevel_perf2"] == 19.44  # (6 + 1) / 36


def test_servicelevel_option_changes_threshold() -> None:
    trace = TRACE_DIRS[0] / "trace.jsonl"
    strict = replay(trace, queue_settings(TRACE_DIRS[0]), servicelevel=5)["queues"]["hotline"]
    loose = replay(trace, queue_settings(TRACE_DIRS[0]), servicelevel=120)["queues"]["hotline"]
    assert strict["answered_within_sl"] < 6 < loose["answered_within_sl"]
    assert loose["answered_within_sl"] == loose["answered"]


def test_pause_time_measured_from_events() -> None:
    agents = replay(TRACE_DIRS[0] / "trace.jsonl", queue_settings(TRACE_DIRS[0]))["agents"]
    # agent1003 paused 'busy' 1795418411.581 -> 1795418454.729; agent1001 'meal' ...457.667 -> ...534.838
    assert agents["agent1003"]["paused_s"] == pytest.approx(43.15, abs=0.01)
    assert agents["agent1001"]["paused_s"] == pytest.approx(77.17, abs=0.01)
    assert agents["agent1002"]["paused_s"] == 0


def test_cli_replay_json() -> None:
    trace = TRACE_DIRS[0] / "trace.jsonl"
    out = subprocess.run([sys.executable, "-m", "callcenter.cli", "replay", str(trace), "--json"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    data = json.loads(out)
    q = data["queues"]["hotline"]
    for key in ("offered", "answered", "abandoned", "answered_within_sl", "connection_rate",
                "answer_rate_sl", "servicelevel_perf", "servicelevel_perf2", "asa_s", "aht_s"):
        assert key in q
    for a in data["agents"].values():
        assert set(a) >= {"answered", "ring_no_answer", "paused_s", "talk_s"}


@pytest.mark.parametrize("content,message", [
    ('{"t": 1.0, "dir": "in", "raw": "Asterisk Call Manager/11.0.0\\r\\n"}\n{"t": 2, "di',
     "not a trace record"),
    ('{"t": 1.0, "dir": "in", "raw": "Event: QueueCallerJoin\\r\\nQueue: q\\r\\n"}\n',
     "cut off"),
    ("", "empty trace"),
    ('{"t": 1.0, "dir": "sideways", "raw": "x"}\n', "bad record"),
])
def test_bad_trace_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TraceError, match=message):
        list(read_trace(path))
    proc = subprocess.run([sys.executable, "-m", "callcenter.cli", "replay", str(path), "--json"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_truncated_real_trace_fails(tmp_path: Path) -> None:
    raw = (TRACE_DIRS[0] / "trace.jsonl").read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(TraceError):
        list(read_trace(cut))
