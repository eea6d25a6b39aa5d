"""Replays of the recorded traces must equal Asterisk's own counters, exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from acd.state import QueueConfig
from callcenter.cli import main
from callcenter.pbx.replay import TraceError, parse_raw, read_trace, replay
from tests.conftest import ROOT, case_dirs, trace_dirs

TRACE_DIRS = trace_dirs()


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


def queue_log_truth(trace_dir: Path) -> dict[str, dict[str, float]] | None:
    """truth-queue_log.json's per-queue figures, for traces that cross a restart."""
    path = trace_dir / "truth-queue_log.json"
    return json.loads(path.read_text(encoding="utf-8"))["queues"] if path.exists() else None


def logged_per_operator(trace_dir: Path) -> dict[str, dict[str, dict[str, int]]]:
    """Per queue and operator: CONNECT and completion lines of queue_log."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for line in (trace_dir / "queue_log").read_text(encoding="utf-8").splitlines():
        f = line.split("|")
        if len(f) < 5 or f[3] in ("NONE", ""):
            continue
        kind = {"CONNECT": "answered", "COMPLETEAGENT": "completed", "COMPLETECALLER": "completed",
                "BLINDTRANSFER": "completed", "ATTENDEDTRANSFER": "completed"}.get(f[4])
        if kind:
            m = out.setdefault(f[2], {}).setdefault(f[3], {"answered": 0, "completed": 0})
            m[kind] += 1
    return out


@pytest.mark.parametrize("use_log", [True, False], ids=["queue_log", "counters"])
@pytest.mark.parametrize("trace_dir", TRACE_DIRS, ids=lambda p: p.name)
def test_replay_equals_truth(trace_dir: Path, use_log: bool) -> None:
    """Every recorded session replays to Asterisk's own figures, with or without the
    queue_log beside it.  Across a restart Asterisk's counters start again at 0, so
    the truth is queue_log's (truth-queue_log.json)."""
    result = replay(trace_dir / "trace.jsonl", queue_settings(trace_dir), use_queue_log=use_log)
    logged = queue_log_truth(trace_dir)
    if logged is not None:
        for queue, t in logged.items():
            if not t["offered"]:
                continue
            f = result["queues"][queue]
            for key in ("offered", "answered", "answered_within_sl", "completed",
                        "completed_in_sl", "abandoned", "abandoned_in_sl"):
                assert f[key] == t[key], (queue, key)
            assert f["servicelevel_perf"] == t["servicelevel_perf"]
            assert f["servicelevel_perf2"] == t["servicelevel_perf2"]
            assert f["waiting"] == 0 and f["answered"] - f["completed"] == f["interrupted"]
            # queue_log's calls cut by the kill: answered ones interrupted, waiting dropped
            assert f["estimated"] == (0 if use_log else f["estimated"])
        return
    params, _ = truth(trace_dir)
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
        assert f["estimated"] == 0


@pytest.mark.parametrize("trace_dir", TRACE_DIRS, ids=lambda p: p.name)
def test_per_operator_equals_queue_log(trace_dir: Path) -> None:
    """Per queue and operator, answered and completed calls equal queue_log's lines."""
    result = replay(trace_dir / "trace.jsonl", queue_settings(trace_dir))
    got = {q: {a: {"answered": m["answered"], "completed": m["completed"]}
               for a, m in ms.items()} for q, ms in result["queue_agents"].items()}
    assert got == logged_per_operator(trace_dir)


@pytest.mark.parametrize("trace_dir", TRACE_DIRS, ids=lambda p: p.name)
def test_members_calls_taken_equal_asterisk(trace_dir: Path) -> None:
    """CallsTaken of members never removed equals our completed count for them
    (a member removed and added again restarts at 0 in Asterisk)."""
    if queue_log_truth(trace_dir) is not None:
        pytest.skip("Asterisk's CallsTaken restarted with the process")
    _, members = truth(trace_dir)
    result = replay(trace_dir / "trace.jsonl", queue_settings(trace_dir))
    log = (trace_dir / "queue_log").read_text(encoding="utf-8")
    for block in (trace_dir / "truth.txt").read_text(encoding="utf-8").split("\n\n"):
        h = parse_raw(block.replace("\n", "\r\n"))
        if h.get("Event") != "QueueMember" or f"|{h['Name']}|REMOVEMEMBER" in log:
            continue
        got = result["queue_agents"].get(h["Queue"], {}).get(h["Name"], {}).get("completed", 0)
        assert got == int(h["CallsTaken"]), (h["Queue"], h["Name"])
    assert members


@pytest.mark.parametrize("trace_dir", TRACE_DIRS, ids=lambda p: p.name)
def test_counts_agree_with_queue_log(trace_dir: Path) -> None:
    """queue_log is a second, independent record of the same calls."""
    verbs = [line.split("|")[4] for line in
             (trace_dir / "queue_log").read_text(encoding="utf-8").splitlines() if line]
    result = replay(trace_dir / "trace.jsonl", queue_settings(trace_dir))
    f = result["overall"]
    assert f["offered"] == verbs.count("ENTERQUEUE")
    assert f["answered"] == verbs.count("CONNECT")
    assert f["abandoned"] == sum(verbs.count(v) for v in (
        "ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY", "WITHDRAW", "SYSCOMPAT"))
    assert f["completed"] == sum(verbs.count(v) for v in (
        "COMPLETEAGENT", "COMPLETECALLER", "BLINDTRANSFER", "ATTENDEDTRANSFER"))
    assert sum(a["ring_no_answer"] for a in result["agents"].values()) == verbs.count(
        "RINGNOANSWER")


CASE_DIRS = case_dirs()
CASE_KEYS = ("offered", "answered", "completed", "abandoned", "exited", "answered_within_sl",
             "completed_in_sl", "abandoned_in_sl", "connection_rate", "answer_rate_sl",
             "servicelevel_perf", "servicelevel_perf2", "aht_s")


@pytest.mark.parametrize("case_dir", CASE_DIRS, ids=lambda p: p.name)
def test_bug_case_equals_expected(case_dir: Path) -> None:
    """Each case from a public bug report replays to the figures app_queue would count,
    and, where given, to the agent states at the given seconds."""
    want = json.loads((case_dir / "expected.json").read_text(encoding="utf-8"))
    probes = want.get("agent_states", [])
    result = replay(case_dir / "trace.jsonl", {q: QueueConfig(15, 3) for q in want["queues"]},
                    states_at=[p["t"] for p in probes])
    for queue, figures in want["queues"].items():
        got = result["queues"][queue]
        for key in CASE_KEYS:
            if key in figures:
                assert got[key] == pytest.approx(figures[key], abs=0.011), (queue, key)
    for key, value in want.get("overall", {}).items():
        assert result["overall"][key] == value, key
    states = {s["t"]: s["agents"] for s in result.get("agent_states", [])}
    for p in probes:
        assert states[p["t"]][p["agent"]] == p["state"], (p["t"], p.get("why", ""))


def test_every_case_is_tested() -> None:
    assert len(CASE_DIRS) >= 4 and len(TRACE_DIRS) >= 3


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
def test_bad_trace_is_a_clear_error(tmp_path: Path, content: str, message: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TraceError, match=message):
        list(read_trace(path))
    # The command line in this process (test_cli_replay_json starts it as its own):
    # an exception would leave main() here instead of printing a traceback.
    assert main(["replay", str(path), "--json"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_truncated_real_trace_fails(tmp_path: Path) -> None:
    raw = (TRACE_DIRS[0] / "trace.jsonl").read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(TraceError):
        list(read_trace(cut))
