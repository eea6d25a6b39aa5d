"""The wallboard's alert rules: a picture and a time in, alerts out."""

from __future__ import annotations

from typing import Any

import pytest

from agent_console.alerts import CRITICAL, WARNING, Thresholds, evaluate

T = Thresholds(paused_while_waiting_s=300, paused_share_pct=20, paused_share_min_s=1800,
               ring_no_answer_count=3, longest_wait_s=60)
NOW = 100_000.0


def agent(name: str = "agent1001", **kw: Any) -> dict[str, Any]:
    a = {"name": name, "state": "ready", "since": NOW - 10, "reason": "", "queues": ["hotline"],
         "paused_s": 0.0, "paused_since": None, "logged_in_s": 0.0,
         "ring_no_answer_streak": 0}
    a.update(kw)
    return a


def picture(*agents: dict[str, Any], waiting: int = 0, oldest: float | None = None,
            link_up: bool = True) -> dict[str, Any]:
    return {
        "link": {"up": link_up, "reason": "" if link_up else "connection refused",
                 "since": NOW - 5},
        "queues": {"hotline": {"waiting": waiting, "oldest_joined_at": oldest},
                   "hotline-en": {"waiting": 0, "oldest_joined_at": None}},
        "agents": {a["name"]: a for a in agents},
    }


def kinds(alerts: list[Any]) -> list[tuple[str, str]]:
    return [(a.kind, a.subject) for a in alerts]


def test_quiet_centre_has_no_alerts() -> None:
    assert evaluate(picture(agent()), T, NOW) == []


def test_link_down_is_critical_and_first() -> None:
    alerts = evaluate(picture(agent(ring_no_answer_streak=5), link_up=False), T, NOW)
    assert kinds(alerts) == [("link_down", "pbx"), ("ring_no_answer", "agent1001")]
    assert alerts[0].severity == CRITICAL
    assert alerts[0].since == NOW - 5
    assert alerts[0].detail["reason"] == "connection refused"


@pytest.mark.parametrize(("waited", "expected"), [
    (59.9, None), (60.0, None), (60.1, WARNING), (120.0, WARNING), (120.5, CRITICAL)])
def test_longest_wait_threshold_and_severity(waited: float, expected: str | None) -> None:
    alerts = evaluate(picture(waiting=2, oldest=NOW - waited), T, NOW)
    if expected is None:
        assert alerts == []
    else:
        assert kinds(alerts) == [("longest_wait", "hotline")]
        assert alerts[0].severity == expected
        assert alerts[0].since == NOW - waited
        assert alerts[0].detail == {"waiting": 2}


def test_paused_long_while_callers_wait() -> None:
    paused = agent(state="paused", reason="busy", since=NOW - 301, paused_since=NOW - 301)
    alerts = evaluate(picture(paused, waiting=1, oldest=NOW - 5), T, NOW)
    assert kinds(alerts) == [("paused_while_waiting", "agent1001")]
    assert alerts[0].detail == {"reason": "busy", "queues": ["hotline"]}
    assert alerts[0].since == NOW - 301


def test_paused_long_but_nobody_waiting_is_fine() -> None:
    paused = agent(state="paused", reason="meal", since=NOW - 3000, paused_since=NOW - 3000,
                   logged_in_s=20000.0)  # 3000 / 23000: a normal share of the shift
    assert evaluate(picture(paused, waiting=0), T, NOW) == []


def test_paused_short_while_waiting_is_fine() -> None:
    paused = agent(state="paused", reason="toilet", since=NOW - 299, paused_since=NOW - 299)
    assert evaluate(picture(paused, waiting=3, oldest=NOW - 10), T, NOW) == []


def test_callers_waiting_in_another_queue_do_not_count() -> None:
    paused = agent(state="paused", reason="busy", since=NOW - 900, paused_since=NOW - 900,
                   queues=["hotline-en"])
    assert evaluate(picture(paused, waiting=3, oldest=NOW - 10), T, NOW) == []


def test_paused_share_counts_the_running_pause_and_state() -> None:
    # 3000 s signed in before this state, 500 s of it paused; paused again for the last 400 s.
    a = agent(state="paused", reason="meal", since=NOW - 400, paused_since=NOW - 400,
              paused_s=500.0, logged_in_s=3000.0)
    alerts = evaluate(picture(a), T, NOW)
    assert kinds(alerts) == [("paused_share", "agent1001")]
    assert alerts[0].detail == {"pct": int(100 * 900 / 3400)}


def test_paused_share_at_or_below_threshold_is_fine() -> None:
    a = agent(state="ready", since=NOW - 1000, paused_s=600.0, logged_in_s=2000.0)
    assert evaluate(picture(a), T, NOW) == []  # 600 / 3000 = 20 %, not above


def test_paused_share_is_not_judged_on_a_short_shift() -> None:
    a = agent(state="paused", reason="toilet", since=NOW - 300, paused_since=NOW - 300,
              logged_in_s=600.0)
    assert evaluate(picture(a), T, NOW) == []  # 100 % paused, but only 15 minutes in


def test_paused_share_of_a_signed_out_agent_uses_closed_totals() -> None:
    a = agent(state="logged_out", since=NOW - 7200, paused_s=1000.0, logged_in_s=2000.0)
    assert kinds(evaluate(picture(a), T, NOW)) == [("paused_share", "agent1001")]


@pytest.mark.parametrize(("streak", "alerting"), [(0, False), (2, False), (3, True), (7, True)])
def test_repeated_rings_not_answered(streak: int, alerting: bool) -> None:
    alerts = evaluate(picture(agent(ring_no_answer_streak=streak)), T, NOW)
    assert (kinds(alerts) == [("ring_no_answer", "agent1001")]) is alerting
    if alerting:
        assert alerts[0].detail == {"count": streak}


def test_order_is_critical_first_then_kind_then_subject() -> None:
    a1 = agent("agent1002", ring_no_answer_streak=3)
    a2 = agent("agent1001", ring_no_answer_streak=4)
    a3 = agent("agent1003", state="paused", reason="busy", since=NOW - 600,
               paused_since=NOW - 600)
    alerts = evaluate(picture(a1, a2, a3, waiting=1, oldest=NOW - 200), T, NOW)
    assert kinds(alerts) == [
        ("longest_wait", "hotline"),
        ("paused_while_waiting", "agent1003"),
        ("ring_no_answer", "agent1001"),
        ("ring_no_answer", "agent1002"),
    ]
    assert alerts[0].key == "longest_wait:hotline"


def test_lists_are_accepted_as_well_as_maps() -> None:
    snap = {"link": {"up": True}, "queues": [{"queue": "hotline", "waiting": 1,
                                              "oldest_joined_at": NOW - 61}],
            "agents": [agent(ring_no_answer_streak=3)]}
    assert kinds(evaluate(snap, T, NOW)) == [("longest_wait", "hotline"),
                                             ("ring_no_answer", "agent1001")]


def test_thresholds_from_settings_table() -> None:
    t = Thresholds.from_settings({"paused_while_waiting_s": 120, "paused_share_pct": 15.5,
                                  "ring_no_answer_count": 2.0, "longest_wait_s": 30,
                                  "something_else": 1})
    assert t == Thresholds(120.0, 15.5, 1800.0, 2, 30.0)
    assert isinstance(t.ring_no_answer_count, int)


def test_as_dict_is_plain_json() -> None:
    a = evaluate(picture(waiting=1, oldest=NOW - 61), T, NOW)[0]
    assert a.as_dict() == {"key": "longest_wait:hotline", "kind": "longest_wait",
                           "subject": "hotline", "severity": WARNING, "since": NOW - 61,
                           "detail": {"waiting": 1}}


def test_pbx_restart_is_shown_for_an_hour() -> None:
    """A restart of Asterisk (or a reset of its counters) is a warning on the wallboard
    for an hour: the calls it cut were settled, a supervisor should know."""
    p = picture()
    p["link"] |= {"pbx_restarted_at": NOW - 120, "pbx_restart": "Asterisk restarted"}
    alerts = evaluate(p, T, NOW)
    assert [(a.kind, a.severity) for a in alerts] == [("pbx_restarted", WARNING)]
    assert alerts[0].detail == {"what": "Asterisk restarted"}
    assert evaluate(p, T, NOW + 3600) == []


# --------------------------------------------------------------------------- FastAGI refusals


def test_fastagi_refusals_are_one_alert_per_address_worst_reason_first() -> None:
    from agent_console.alerts import FASTAGI_SHOWN_S, fastagi_alerts

    now = 10_000.0
    refusals = [
        {"peer": "10.0.0.5", "why": "closed before the end of the headers", "count": 40,
         "last": now - 5},
        {"peer": "10.0.0.5", "why": "token not issued by this service", "count": 2,
         "last": now - 30},
        {"peer": "10.0.0.9", "why": "too many connections", "count": 300, "last": now - 1},
        {"peer": "10.0.0.7", "why": "address not allowed", "count": 1,
         "last": now - FASTAGI_SHOWN_S - 1},  # over an hour ago: no longer shown
    ]
    alerts = fastagi_alerts(refusals, now)
    assert [(a.key, a.severity, a.since, dict(a.detail)) for a in alerts] == [
        ("fastagi_refused:10.0.0.5", "critical", now - 5,
         {"count": 42, "why": "token not issued by this service", "why_kind": "token"}),
        ("fastagi_refused:10.0.0.9", "warning", now - 1,
         {"count": 300, "why": "too many connections", "why_kind": "flood"}),
    ]
    assert fastagi_alerts([{"peer": "::1", "why": "header not UTF-8", "count": 1,
                            "last": now}], now)[0].detail["why_kind"] == "header"
    assert fastagi_alerts([{"peer": "x", "why": "address not allowed", "count": 1,
                            "last": now}], now)[0].severity == "critical"


def test_the_tiles_an_alert_may_hold_for_follow_the_rebuilt_tiles() -> None:
    """The wallboard evaluates agent alerts over these tiles alone, so they must follow
    every rebuilt tile: in when it pauses or misses rings, out when it no longer may."""
    from agent_console.alerts import AlertTiles

    t = Thresholds()
    quiet = {"state": "ready", "paused_s": 0.0, "paused_since": None,
             "ring_no_answer_streak": 0}
    agents = {"a": dict(quiet), "b": dict(quiet), "c": {**quiet, "paused_s": 30.0}}
    kept = AlertTiles()
    assert set(kept.update(agents, None, t)) == {"c"}  # paused earlier this shift
    agents["a"] = {**quiet, "state": "paused", "paused_since": 5.0}
    agents["b"] = {**quiet, "ring_no_answer_streak": t.ring_no_answer_count}
    assert set(kept.update(agents, {"a"}, t)) == {"a", "c"}  # only what was touched
    assert set(kept.update(agents, {"b"}, t)) == {"a", "b", "c"}
    agents["b"] = dict(quiet)  # answered: the streak is over
    del agents["c"]  # signed off the wallboard
    assert set(kept.update(agents, {"b", "c"}, t)) == {"a"}
    assert kept.tiles["a"] is agents["a"]
    looser = Thresholds(ring_no_answer_count=0)  # new thresholds: all looked at again
    agents["b"] = {**quiet, "ring_no_answer_streak": 9}
    assert set(kept.update(agents, set(), looser)) == {"a"}
    strict = Thresholds(ring_no_answer_count=5)
    assert set(kept.update(agents, set(), strict)) == {"a", "b"}
    # and what they stand for: the same alerts as over every tile
    everyone = {"agents": agents, "queues": {}, "link": {"up": True}}
    assert evaluate(everyone, strict, 100.0) == evaluate(
        {**everyone, "agents": kept.tiles}, strict, 100.0)
