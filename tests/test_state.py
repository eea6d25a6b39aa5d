"""Agent and call state machines, fed typed events with no IO."""

from __future__ import annotations

import pytest

from acd import events as ev
from acd import queue_log as ql
from acd import state as st
from acd.state import (
    AGENT_TRANSITIONS,
    Agent,
    AgentChanged,
    AgentState,
    Anomaly,
    CallCenter,
    IllegalTransition,
    Outcome,
    QueueConfig,
)

S = AgentState
Q = "hotline"
IFACE = "Local/1001@agents/n"


def member(paused: bool = False, reason: str = "", queue: str = Q, iface: str = IFACE,
           name: str = "agent1001", in_call: bool = False) -> ev.MemberInfo:
    return ev.MemberInfo(queue, name, iface, paused, reason, in_call, 1, 0)


def centre(wrap: int = 3) -> CallCenter:
    c = CallCenter({Q: QueueConfig(15, wrap)})
    c.apply(ev.MemberAdded(0.0, member()))
    return c


def join(c: CallCenter, uid: str, at: float, num: str = "13800001111") -> None:
    c.apply(ev.CallerJoined(at, Q, uid, "Local/s@inbound-1;2", num, "王五", 1,
                            {"HOTLINE": "12345", "CATEGORY": "housing"}))


def ring(c: CallCenter, uid: str, at: float, iface: str = IFACE, name: str = "agent1001") -> None:
    c.apply(ev.AgentRung(at, Q, uid, iface, name, "13800001111", "王五"))


def answer(c: CallCenter, uid: str, at: float, hold: int, iface: str = IFACE,
           name: str = "agent1001") -> None:
    c.apply(ev.CallerLeft(at, Q, uid))
    c.apply(ev.AgentAnswered(at, Q, uid, iface, name, hold, 2))


def complete(c: CallCenter, at: float, hold: int, talk: int, uid: str | None = None,
             iface: str = IFACE, name: str = "agent1001") -> list:
    return c.apply(ev.AgentCompleted(at, Q, uid, iface, name, hold, talk, "caller"))


def agent(c: CallCenter) -> Agent:
    return c.agents[IFACE]


# ---- the table itself


@pytest.mark.parametrize("state,step,expected", sorted(
    ((s, st, n) for (s, st), n in AGENT_TRANSITIONS.items()), key=str))
def test_every_listed_transition(state: AgentState, step: str, expected: AgentState) -> None:
    a = Agent("x", "x", state=state)
    assert a.step(step) is expected


@pytest.mark.parametrize("state,step", [
    (S.LOGGED_OUT, "ring"), (S.LOGGED_OUT, "answer"), (S.READY, "answer"),
    (S.READY, "hangup"), (S.PAUSED, "answer"), (S.WRAP_UP, "answer"), (S.ON_CALL, "ring"),
])
def test_illegal_transitions_raise_and_name_the_state(state: AgentState, step: str) -> None:
    a = Agent("x", "agent9", state=state)
    with pytest.raises(IllegalTransition, match=f"{step!r} from state {state.value!r}"):
        a.step(step)
    assert a.state is state


# ---- agents through events


def test_full_agent_cycle_with_wrap_up_timer() -> None:
    c = centre(wrap=3)
    assert agent(c).state is S.READY
    join(c, "u1", 10.0)
    ring(c, "u1", 10.5)
    assert agent(c).state is S.RINGING
    answer(c, "u1", 14.0, hold=4)
    assert agent(c).state is S.ON_CALL
    complete(c, 40.0, hold=4, talk=26)
    assert agent(c).state is S.WRAP_UP
    c.apply(ev.Tick(42.0))
    assert agent(c).state is S.WRAP_UP
    changes = c.apply(ev.Tick(43.5))
    assert agent(c).state is S.READY
    wrap_end = next(ch for ch in changes if isinstance(ch, AgentChanged))
    assert wrap_end.at == 43.0 and wrap_end.step == "wrap_end"
    assert c.calls["u1"].wrap_s == pytest.approx(3.0)
    assert agent(c).time_in["on_call"] == pytest.approx(26.0)
    assert agent(c).time_in["ringing"] == pytest.approx(3.5)


def test_pause_with_reason_is_tracked_with_duration() -> None:
    c = centre()
    changes = c.apply(ev.MemberPaused(100.0, member(True, "busy")))
    a = agent(c)
    assert a.state is S.PAUSED and a.reason == "busy"
    moved = [ch for ch in changes if isinstance(ch, AgentChanged)]
    assert moved[0].reason == "busy" and moved[0].cause == "QueueMemberPause"
    c.apply(ev.MemberPaused(160.0, member(True, "meal")))  # reason changes while paused
    assert a.reason == "meal" and a.since == 160.0
    c.apply(ev.MemberPaused(200.0, member(False)))
    assert a.state is S.READY and a.paused_s == pytest.approx(100.0)


def test_pause_during_call_takes_effect_at_hang_up() -> None:
    c = centre()
    join(c, "u1", 10.0)
    ring(c, "u1", 10.0)
    answer(c, "u1", 12.0, hold=2)
    c.apply(ev.MemberPaused(20.0, member(True, "meal")))
    assert agent(c).state is S.ON_CALL and agent(c).paused
    complete(c, 30.0, hold=2, talk=18)
    assert agent(c).state is S.PAUSED and agent(c).reason == "meal"
    assert agent(c).paused_total(40.0) == pytest.approx(20.0)


def test_ring_no_answer_counts_and_returns_to_ready() -> None:
    c = centre()
    join(c, "u1", 10.0)
    ring(c, "u1", 10.0)
    c.apply(ev.AgentRingNoAnswer(20.0, Q, "u1", IFACE, "agent1001", 10000))
    assert agent(c).state is S.READY and agent(c).ring_no_answer == 1
    assert c.calls["u1"].ring_no_answer == 1


def test_removed_mid_call_stays_on_call_then_logs_out() -> None:
    c = centre()
    join(c, "u1", 10.0)
    ring(c, "u1", 10.0)
    answer(c, "u1", 12.0, hold=2)
    c.apply(ev.MemberRemoved(15.0, member(in_call=True)))
    assert agent(c).state is S.ON_CALL
    complete(c, 30.0, hold=2, talk=18)
    assert agent(c).state is S.LOGGED_OUT


def test_member_paused_in_one_queue_only_is_not_paused() -> None:
    c = centre()
    c.apply(ev.MemberAdded(1.0, member(queue="other")))
    c.apply(ev.MemberPaused(2.0, member(True, "busy")))
    assert agent(c).state is S.READY and not agent(c).paused
    c.apply(ev.MemberPaused(3.0, member(True, "busy", queue="other")))
    assert agent(c).state is S.PAUSED


def test_a_member_renamed_back_and_forth_is_found_once_under_its_current_name() -> None:
    c = centre()
    c.apply(ev.MemberAdded(1.0, member(iface="PJSIP/1002", name="agent1002")))
    for at, name in enumerate(["agent1009", "agent1001", "agent1009", "agent1001"], start=2):
        c.apply(ev.MemberAdded(float(at), member(name=name)))
    assert c.agents_named("agent1001") == [agent(c)] and c.agents_named("agent1009") == []
    assert c.agent_by_name("agent1009") is None
    # the index holds each interface once, under its current name (it grew on every rename)
    assert c._named == {"agent1001": [IFACE], "agent1002": ["PJSIP/1002"]}


def test_event_that_does_not_fit_is_an_anomaly_not_a_crash() -> None:
    c = CallCenter()
    changes = c.apply(ev.MemberPaused(1.0, member(True, "busy")))
    assert any(isinstance(ch, Anomaly) for ch in changes)


# ---- calls


def test_call_lifecycle_and_counters() -> None:
    c = centre()
    join(c, "u1", 10.0)
    call = c.calls["u1"]
    assert call.hotline == "12345" and call.category == "housing"
    assert [x.uniqueid for x in c.waiting_in(Q)] == ["u1"]
    assert c.longest_wait(Q, 25.0) == 15.0
    ring(c, "u1", 11.0)
    answer(c, "u1", 30.0, hold=20)
    assert call.outcome is Outcome.ANSWERED and c.waiting_in(Q) == []
    assert c.observed[Q].completed == 0  # Asterisk counts completion at hang-up
    complete(c, 60.0, hold=20, talk=30)
    assert call.outcome is Outcome.COMPLETED and call.talk_time == 30
    assert c.observed[Q].completed == 1 and c.observed[Q].completed_in_sl == 0


def test_completion_without_uniqueid_matched_on_queue_and_interface() -> None:
    c = centre()
    join(c, "u1", 10.0)
    ring(c, "u1", 10.0)
    answer(c, "u1", 12.0, hold=2)
    complete(c, 30.0, hold=2, talk=18, uid=None)
    assert c.calls["u1"].outcome is Outcome.COMPLETED


def test_abandon_and_exit() -> None:
    c = centre()
    join(c, "u1", 10.0)
    join(c, "u2", 11.0)
    ring(c, "u1", 10.0)
    c.apply(ev.CallerAbandoned(20.0, Q, "u1", 10, 1))
    c.apply(ev.CallerLeft(20.0, Q, "u1"))
    assert c.calls["u1"].outcome is Outcome.ABANDONED
    assert agent(c).state is S.READY  # stopped ringing for a caller who left
    c.apply(ev.CallerLeft(30.0, Q, "u2"))  # exit by key: left without abandon or answer
    c.apply(ev.ChannelHungup(31.0, "u2", "", "16"))
    assert c.calls["u2"].outcome is Outcome.EXITED
    assert c.observed[Q].abandoned == 1 and c.observed[Q].abandoned_in_sl == 1


def test_duplicate_join_is_not_counted_twice() -> None:
    c = centre()
    join(c, "u1", 10.0)
    assert c.apply(ev.CallerJoined(10.5, Q, "u1", "", "", "", 1)) == []
    assert len(c.waiting_in(Q)) == 1


# ---- resync after the link was down


def counters(completed: int, abandoned: int, perf: float = 0.0, perf2: float = 0.0
             ) -> ev.QueueCounters:
    return ev.QueueCounters(Q, completed, abandoned, 15, perf, perf2)


def test_resync_settles_lost_calls_from_asterisk_counters() -> None:
    c = centre()
    c.apply(ev.Resync(0.5, (counters(0, 0),), (member(),), (), ()))
    join(c, "u1", 10.0)
    join(c, "u2", 11.0)
    ring(c, "u1", 11.0)
    answer(c, "u1", 12.0, hold=2)
    c.apply(ev.LinkChanged(20.0, False, "connection lost"))
    assert not c.link_up
    # While down: u1's call ended; u2 abandoned; one more call came and was answered
    # and completed within the service level, all unseen.  Asterisk's counters say so.
    c.apply(ev.Resync(60.0, (counters(2, 1, 100.0, 66.7),), (member(),), (), ()))
    assert c.link_up
    assert c.calls["u1"].outcome is Outcome.COMPLETED and c.calls["u1"].estimated
    # u2 vanished while waiting: the counters alone cannot say whether it was
    # answered or abandoned, only how many of each there were.
    assert c.calls["u2"].outcome in (Outcome.ABANDONED, Outcome.COMPLETED)
    assert c.observed[Q].completed == 2 and c.observed[Q].abandoned == 1
    assert c.observed[Q].completed_in_sl == 2
    assert agent(c).state is S.READY
    # A second resync with no change adds nothing.
    c.apply(ev.Resync(70.0, (counters(2, 1, 100.0, 66.7),), (member(),), (), ()))
    assert c.observed[Q].completed == 2 and c.observed[Q].abandoned == 1


def test_resync_keeps_waiting_and_adopts_unknown_waiting_callers() -> None:
    c = centre()
    c.apply(ev.Resync(0.5, (counters(0, 0),), (member(),), (), ()))
    join(c, "u1", 10.0)
    waiting = (ev.WaitingEntry(Q, "u1", "ch1", "138", "", 1, 20),
               ev.WaitingEntry(Q, "u9", "ch9", "139", "", 2, 5))
    c.apply(ev.Resync(30.0, (counters(0, 0),), (member(),), waiting, ()))
    assert [x.uniqueid for x in c.waiting_in(Q)] == ["u1", "u9"]
    assert c.calls["u9"].joined_at == 25.0
    join(c, "u9", 31.0)  # a late duplicate join is not a second offer
    assert len(c.waiting_in(Q)) == 2


def test_resync_marks_bridged_caller_answered() -> None:
    c = centre()
    c.apply(ev.Resync(0.5, (counters(0, 0),), (member(),), (), ()))
    join(c, "u1", 10.0)
    chans = (ev.ActiveChannel("u1", "ch1", "Queue", True),)
    c.apply(ev.Resync(30.0, (counters(0, 0),), (member(in_call=True),), (), chans))
    assert c.calls["u1"].outcome is Outcome.ANSWERED


def test_channel_variables_in_both_wire_forms() -> None:
    from callcenter.pbx.ami import parse_frame

    raw = (b"Event: QueueCallerJoin\r\nQueue: hotline\r\nUniqueid: 1.1\r\nCallerIDNum: 138\r\n"
           b"ChanVariable: HOTLINE=12315\r\nChanVariable: IVR_PATH=2-1\r\n"
           b"ChanVariable: CATEGORY=market\r\nPosition: 1\r\n\r\n")
    e = ev.to_event(parse_frame(raw), 1.0)
    assert isinstance(e, ev.CallerJoined)
    assert e.variables == {"HOTLINE": "12315", "IVR_PATH": "2-1", "CATEGORY": "market"}
    old = {"Event": "QueueCallerJoin", "Queue": "q", "Uniqueid": "1.2",
           "ChanVariable(HOTLINE)": "12345"}
    assert ev.to_event(old, 1.0).variables == {"HOTLINE": "12345"}  # type: ignore[union-attr]


def test_rung_before_membership_seen_logs_the_agent_in() -> None:
    """At connect, AgentCalled can arrive before the resync shows the member."""
    c = CallCenter({Q: QueueConfig(15, 0)})
    join(c, "u1", 1.0)
    changes = c.apply(ev.AgentRung(2.0, Q, "u1", IFACE, "agent1001", "", ""))
    assert not any(isinstance(ch, Anomaly) for ch in changes)
    assert agent(c).state is S.RINGING
    c.apply(ev.Resync(2.5, (), (member(in_call=False),), (), ()))
    answer(c, "u1", 3.0, hold=2)
    assert agent(c).state is S.ON_CALL
    c.apply(ev.Resync(4.0, (), (member(in_call=True),),
                      (), (ev.ActiveChannel("u1", "c", "Queue", True),)))
    assert agent(c).state is S.ON_CALL


def test_a_ring_for_another_call_ends_the_ring_left_over_and_pops_the_new_caller() -> None:
    """A caller who leaves the queue (a timeout, an exit key) stops the member's phone
    ringing with no event that names the member; the member's next AgentCalled is for
    another caller.  The screen must show that caller at once: the state ends the old
    ring and rings again, and says so (it kept the old caller until the next change, a
    7.5 s pop in the scale-out bench)."""
    c = centre()
    join(c, "u1", 1.0)
    ring(c, "u1", 2.0)
    c.apply(ev.CallerLeft(9.0, Q, "u1"))  # left unanswered: exited
    assert agent(c).state is S.RINGING and agent(c).call == "u1"
    # (rung again within LEFT_RING_GRACE_S of the leave, before its own end of the ring)
    join(c, "u2", 9.2, num="13900002222")
    changes = c.apply(ev.AgentRung(9.4, Q, "u2", IFACE, "agent1001", "13900002222", "赵六"))
    moves = [(ch.old, ch.new, ch.step) for ch in changes if isinstance(ch, AgentChanged)]
    assert moves == [(S.RINGING, S.READY, "ring_end"), (S.READY, S.RINGING, "ring")]
    assert agent(c).call == "u2"
    assert c.apply(ev.AgentRung(9.5, Q, "u2", IFACE, "agent1001", "", "")) == []  # again
    # ringinuse=yes: rung for another caller while the first still waits, no ring ended
    join(c, "u3", 12.0)
    assert not [ch for ch in c.apply(ev.AgentRung(12.5, Q, "u3", IFACE, "agent1001", "", ""))
                if isinstance(ch, AgentChanged)]


def test_a_ring_whose_caller_left_ends_a_moment_after_the_leave_when_no_answer_follows(
        ) -> None:
    """A member watching its own Local interface (trace a) hears no status of a ring:
    a caller who leaves unanswered (an exit key, the queue's timeout; QueueCallerLeave
    names no member) ends the rings for her once LEFT_RING_GRACE_S has passed without
    AgentConnect, at the time she left.  An answered caller's leave, followed by
    AgentConnect at once, ends nothing."""
    from acd.state import LEFT_RING_GRACE_S

    c = centre()
    join(c, "u1", 1.0)
    ring(c, "u1", 2.0)
    answer(c, "u1", 5.0, hold=4)  # leave, then AgentConnect in the same moment
    changes = c.apply(ev.Tick(5.0 + 2 * LEFT_RING_GRACE_S))
    assert agent(c).state is S.ON_CALL and not [
        ch for ch in changes if isinstance(ch, AgentChanged)]
    complete(c, 20.0, hold=4, talk=15, uid="u1")
    c.apply(ev.Tick(30.0))  # the 3-s wrap-up is over
    join(c, "u2", 31.0)
    ring(c, "u2", 32.0)
    c.apply(ev.CallerLeft(36.0, Q, "u2"))  # the exit key while her phone rings
    assert agent(c).state is S.RINGING  # AgentConnect may still follow
    assert not c.apply(ev.Tick(36.0 + LEFT_RING_GRACE_S / 2))
    changes = c.apply(ev.Tick(36.0 + LEFT_RING_GRACE_S))
    moves = [(ch.old, ch.new, ch.step, ch.at) for ch in changes if isinstance(ch, AgentChanged)]
    assert moves == [(S.RINGING, S.READY, "ring_end", 36.0)]
    assert agent(c).call is None and c.calls["u2"].outcome is Outcome.EXITED


def test_a_ring_whose_caller_left_ends_when_the_phone_stops_ringing() -> None:
    """The caller leaves the queue unanswered (QueueCallerLeave names no member), and the
    member's device goes not-in-use: the operator is ready again at once, not only at
    the next AgentCalled (at a quiet hour, minutes of a gone caller on the screen and
    one ready operator fewer on the wallboard).  While the caller still waits, a device
    going not-in-use leaves the ring to its own end (AgentRingNoAnswer)."""
    c = centre()
    join(c, "u1", 1.0)
    ring(c, "u1", 2.0)
    idle = ev.MemberInfo(Q, "agent1001", IFACE, False, "", False, 1, 0)
    assert not [ch for ch in c.apply(ev.MemberStatus(3.0, idle)) if isinstance(ch, AgentChanged)]
    assert agent(c).state is S.RINGING  # still waiting: not this rule's to end
    c.apply(ev.CallerLeft(9.0, Q, "u1"))  # left unanswered: exited
    assert agent(c).state is S.RINGING and agent(c).call == "u1"
    changes = c.apply(ev.MemberStatus(9.01, idle))
    moves = [(ch.old, ch.new, ch.step) for ch in changes if isinstance(ch, AgentChanged)]
    assert moves == [(S.RINGING, S.READY, "ring_end")]
    assert agent(c).call is None
    assert c.apply(ev.MemberStatus(9.02, idle)) == []  # the next queue's status: nothing
    join(c, "u2", 10.0)  # and the next ring pops as ever
    ring(c, "u2", 11.0)
    assert agent(c).state is S.RINGING and agent(c).call == "u2"


def test_finished_visits_kept_stay_between_keep_finished_and_a_quarter_more() -> None:
    """A long-running core holds the last ``keep_finished`` finished visits (a rebuild
    from queue_log must not make them again) and at most a quarter more before it
    forgets the oldest: what its memory settles at; waiting callers are never
    forgotten."""
    c = CallCenter({Q: QueueConfig(15, 0)}, keep_finished=40)
    c.apply(ev.MemberAdded(0.0, member()))
    join(c, "waiting", 0.5)
    most = 0
    for i in range(200):
        join(c, f"u{i}", 1.0 + i)
        c.apply(ev.CallerAbandoned(1.5 + i, Q, f"u{i}", 0, 1))
        c.collect_finished()
        most = max(most, len(c.visits))
    assert most <= 1 + 40 + 10
    assert len(c.visits) >= 1 + 40 and "waiting" in c.visits
    assert "u199" in c.visits and "u0" not in c.visits


def test_the_visits_kept_are_the_last_to_end_and_a_wrap_up_finds_its_own() -> None:
    """A long call that has just ended is kept however long ago it joined, and the
    operator's wrap-up after it is added to it when it ends."""
    c = CallCenter({Q: QueueConfig(15, 30)}, keep_finished=10)
    c.apply(ev.MemberAdded(0.0, member()))
    join(c, "long", 1.0)
    ring(c, "long", 2.0)
    answer(c, "long", 3.0, hold=2)
    for i in range(30):  # others join and leave while it talks
        join(c, f"u{i}", 10.0 + i)
        c.apply(ev.CallerAbandoned(10.5 + i, Q, f"u{i}", 0, 1))
        c.collect_finished()
    complete(c, 100.0, hold=2, talk=97, uid="long")
    assert agent(c).state is S.WRAP_UP
    for i in range(30, 60):  # more leave during the wrap-up: the prune runs again
        join(c, f"u{i}", 100.0 + i / 10)
        c.apply(ev.CallerAbandoned(100.05 + i / 10, Q, f"u{i}", 0, 1))
        c.collect_finished()
    assert "long" in c.visits
    changes = c.apply(ev.Tick(131.0))  # the 30-s wrap-up is over
    wrapped = [ch.call for ch in changes if isinstance(ch, st.CallChanged)]
    assert [w.visit_id for w in wrapped] == ["long"] and wrapped[0].wrap_s >= 30.0


def test_combined_intervals_equal_one_computation() -> None:
    """Day figures combined from 15-minute intervals equal a direct computation."""
    from acd.metrics import MetricsBook, figures

    c = centre(wrap=3)
    t = 0.0
    for i in range(40):
        uid = f"u{i}"
        t += 97.0
        join(c, uid, t)
        if i % 4 == 3:
            c.apply(ev.CallerAbandoned(t + 7 + i, Q, uid, 7 + i, 1))
            continue
        ring(c, uid, t + 1)
        answer(c, uid, t + 3 + i, hold=3 + i)
        complete(c, t + 60 + i, hold=3 + i, talk=50 + i, uid=uid)
    c.advance(t + 600)
    book = MetricsBook(lambda q: 15)
    for call in c.calls.values():
        book.put(call)
    _, combined = book.figures(0, t + 1000)
    direct = figures(c.calls.values(), 15)
    for key in ("offered", "answered", "abandoned", "answered_within_sl", "connection_rate",
                "answer_rate_sl", "servicelevel_perf", "servicelevel_perf2", "asa_s", "aht_s"):
        assert getattr(combined, key) == getattr(direct, key), key
    assert len(book.series(0, t + 1000)) > 3


# ---- queue visits, late completions, restarts (issue 16)


def test_one_channel_two_queues_keeps_two_linked_visits() -> None:
    """A blind transfer: the same Uniqueid joins a second queue; both visits count."""
    c = CallCenter({Q: QueueConfig(15, 0), "hotline-en": QueueConfig(15, 0)})
    c.apply(ev.MemberAdded(0.0, member()))
    c.apply(ev.MemberAdded(0.0, member(queue="hotline-en", iface="Local/1002@agents/n",
                                       name="agent1002")))
    join(c, "u1", 10.0)
    answer(c, "u1", 12.0, hold=2)
    c.apply(ev.AgentCompleted(30.0, Q, "u1", IFACE, "agent1001", 2, 18, "transfer"))
    c.apply(ev.CallerJoined(30.0, "hotline-en", "u1", "Local/s@inbound-1;2", "", "", 1))
    c.apply(ev.AgentAnswered(40.0, "hotline-en", "u1", "Local/1002@agents/n", "agent1002",
                             10, 2))
    c.apply(ev.AgentCompleted(50.0, "hotline-en", "u1", "Local/1002@agents/n", "agent1002",
                              10, 10, "caller"))
    first, second = c.visits_of("u1")
    assert (first.visit_id, first.queue, first.outcome, first.end_reason) == (
        "u1", Q, Outcome.COMPLETED, "transfer")
    assert (second.visit_id, second.previous, second.queue, second.outcome) == (
        "u1#2", "u1", "hotline-en", Outcome.COMPLETED)
    assert second.to_row()["uniqueid"] == "u1#2" and second.to_row()["channel_uniqueid"] == "u1"
    assert c.observed[Q].completed == c.observed["hotline-en"].completed == 1


def test_attended_transfer_links_the_consultation_leg_to_the_callers_visit() -> None:
    """Atxfer: the consultation leg (``Local/...;2`` in hotline-en, its own Uniqueid) joins
    while the caller waits on hold; when the transfer completes (the event names the
    leg's ``;1`` half) its visit continues the caller's call: linked, the caller's
    identity, each queue still counting its own visit."""
    en, iface2 = "hotline-en", "Local/1002@agents/n"
    c = CallCenter({Q: QueueConfig(15, 0), en: QueueConfig(15, 0)})
    c.apply(ev.MemberAdded(0.0, member()))
    c.apply(ev.MemberAdded(0.0, member(queue=en, iface=iface2, name="agent1002")))
    join(c, "u1", 10.0)
    answer(c, "u1", 12.0, hold=2)
    c.apply(ev.CallerJoined(20.0, en, "u7", "Local/hotline-en@transfer-0002;2", "1001",
                            "agent1001", 1, linkedid="u1"))
    c.apply(ev.CallerLeft(24.0, en, "u7"))
    c.apply(ev.AgentAnswered(24.0, en, "u7", iface2, "agent1002", 4, 2))
    changes = c.apply(ev.AttendedTransferred(
        30.0, "u1", ("Local/1001@agents-0001;1", "Local/hotline-en@transfer-0002;1",
                     "Local/s@inbound-1;2", "Local/1002@agents-0003;1"),
        ("u2", "u6", "u1", "u8")))
    c.apply(ev.AgentCompleted(30.0, Q, "u1", IFACE, "agent1001", 2, 18, "transfer"))
    c.apply(ev.AgentCompleted(60.0, en, "u7", iface2, "agent1002", 4, 36, "caller"))
    first, leg = c.visits["u1"], c.visits["u7"]
    assert [ch.call.visit_id for ch in changes if isinstance(ch, st.CallChanged)] == ["u7"]
    assert (leg.previous, leg.caller_num, leg.caller_name, leg.hotline) == (
        "u1", "13800001111", "王五", "12345")
    assert (first.outcome, first.end_reason, leg.outcome) == (
        Outcome.COMPLETED, "transfer", Outcome.COMPLETED)
    assert c.observed[Q].completed == c.observed[en].completed == 1
    # The leg's channel keeps its own visits: the caller's visit is not one of them.
    assert c.visits_of("u7") == [leg] and c.visits_of("u1") == [first]
    assert c._visit("u7", Q) is None


def test_blond_transfer_links_the_leg_still_waiting_and_a_failed_one_nothing() -> None:
    """The first operator completes the transfer while the leg still waits in hotline-en:
    the caller waits on in its place, linked.  A transfer naming no queue caller links
    nothing."""
    en = "hotline-en"
    c = CallCenter({Q: QueueConfig(15, 0), en: QueueConfig(15, 0)})
    c.apply(ev.MemberAdded(0.0, member()))
    join(c, "u1", 10.0)
    answer(c, "u1", 12.0, hold=2)
    assert c.apply(ev.AttendedTransferred(18.0, "u1", ("PJSIP/2001-0007",), ("u3",))) == []
    c.apply(ev.CallerJoined(20.0, en, "u7", "Local/hotline-en@transfer-0002;2", "1001",
                            "agent1001", 1))
    c.apply(ev.AttendedTransferred(25.0, "u1", ("Local/hotline-en@transfer-0002;1",),
                                   ("u6", "u1")))
    leg = c.visits["u7"]
    assert (leg.previous, leg.outcome, leg.caller_num) == ("u1", Outcome.WAITING, "13800001111")


def test_device_idle_counts_the_call_and_the_late_complete_only_confirms_it() -> None:
    """'*' then the survey: the operator's device goes idle (counted, wrap-up), takes the
    next caller; the first call's AgentComplete comes late and must not end the second."""
    c = centre(wrap=3)
    join(c, "a", 10.0)
    c.apply(ev.MemberStatus(12.0, ev.MemberInfo(Q, "agent1001", IFACE, False, "", True, 2, 0)))
    answer(c, "a", 12.0, hold=2)
    c.apply(ev.MemberStatus(30.0, ev.MemberInfo(Q, "agent1001", IFACE, False, "", False, 1, 1)))
    assert c.visits["a"].outcome is Outcome.COMPLETED and c.visits["a"].talk_time == 18
    assert agent(c).state is S.WRAP_UP
    join(c, "b", 35.0)
    ring(c, "b", 35.0)
    answer(c, "b", 36.0, hold=1)
    c.apply(ev.AgentCompleted(60.0, Q, "a", IFACE, "agent1001", 2, 48, "caller"))
    assert agent(c).state is S.ON_CALL and agent(c).call == "b"
    assert c.visits["b"].outcome is Outcome.ANSWERED
    assert c.observed[Q].completed == 1 and c.visits["a"].talk_time == 18  # not 48
    c.apply(ev.AgentCompleted(60.0, Q, "a", IFACE, "agent1001", 2, 48, "caller"))  # duplicate
    assert c.observed[Q].completed == 1


def test_member_wrapuptime_wins_over_the_queue() -> None:
    c = CallCenter({Q: QueueConfig(15, 3)})
    c.apply(ev.MemberAdded(0.0, ev.MemberInfo(Q, "agent1001", IFACE, False, "", False, 1, 0,
                                              wrapuptime=30)))
    join(c, "u1", 10.0)
    answer(c, "u1", 12.0, hold=2)
    complete(c, 20.0, hold=2, talk=8, uid="u1")
    c.advance(45.0)
    assert agent(c).state is S.WRAP_UP
    c.advance(50.0)
    assert agent(c).state is S.READY and c.visits["u1"].wrap_s == 30


def test_fullybooted_uptime_tells_a_restart_and_cuts_what_the_old_pbx_held() -> None:
    c = centre()
    c.apply(ev.PbxBooted(1.0, 100, 100))
    c.apply(ev.Resync(1.5, (counters(5, 0),), (member(),), (), ()))
    join(c, "talking", 10.0)
    answer(c, "talking", 12.0, hold=2)
    join(c, "waiting", 13.0)
    c.apply(ev.LinkChanged(20.0, False, "connection lost"))
    changes = c.apply(ev.PbxBooted(60.0, 10, 10))  # booted at 50: a new process
    assert any(isinstance(ch, st.PbxRestarted) for ch in changes)
    assert c.last_restart is not None and c.last_restart.booted_at == 50.0
    # The new process counted 1 completed call (in SL) while we were away.
    c.apply(ev.Resync(61.0, (counters(1, 0, 100.0, 100.0),), (member(),), (), ()))
    assert c.visits["talking"].outcome is Outcome.INTERRUPTED
    assert c.visits["waiting"].outcome is Outcome.DROPPED
    assert c.visits["talking"].settled == "pbx_restart"
    assert c.observed[Q].completed == 1  # the unseen one, not the old base of 5


def test_queue_log_rebuilds_the_gap_exactly() -> None:
    c = centre()
    c.apply(ev.Resync(1.0, (counters(0, 0),), (member(),), (), ()))
    join(c, "u1", 10.0)
    c.apply(ev.LinkChanged(20.0, False, "connection lost"))
    lines = ql.parse(
        "10|u1|hotline|NONE|ENTERQUEUE||13800001111|1\n"
        "22|u1|hotline|agent1001|CONNECT|12|u1.2|1\n"
        "40|u1|hotline|agent1001|COMPLETEAGENT|12|18|1\n"
        "25|u9|hotline|NONE|ENTERQUEUE||13900009999|1\n"
        "33|u9|hotline|NONE|ABANDON|1|1|8\n"
        "41|u8|hotline|NONE|ENTERQUEUE||13700007777|1\n"
        "43|u8|hotline|agent1001|CONNECT|2|u8.2|1\n")
    bridged = (ev.ActiveChannel("u8", "Local/s@inbound-8;2", "Queue", True, "b8"),)
    c.apply(ev.Resync(50.0, (counters(1, 1, 100.0, 100.0),), (member(in_call=True),), (),
                      bridged, queue_log=tuple(lines)))
    u1, u9, u8 = c.visits["u1"], c.visits["u9"], c.visits["u8"]
    assert (u1.outcome, u1.hold_time, u1.talk_time, u1.agent, u1.settled) == (
        Outcome.COMPLETED, 12, 18, "agent1001", "queue_log")
    assert (u9.outcome, u9.hold_time, u9.estimated) == (Outcome.ABANDONED, 8, False)
    # answered while the link was cut: stored with its operator, ended by its own complete
    assert (u8.outcome, u8.agent) == (Outcome.ANSWERED, "agent1001")
    assert not any(v.visit_id.startswith("unseen-") for v in c.visits.values())
    c.apply(ev.AgentCompleted(60.0, Q, "u8", IFACE, "agent1001", 2, 17, "agent"))
    assert u8.outcome is Outcome.COMPLETED and c.observed[Q].completed == 2


def test_a_late_bare_complete_after_a_service_restart_only_confirms_its_visit() -> None:
    """Redirect, then the service restarts: the visit comes back completed from the
    database (its wait for an AgentComplete is not stored); the late AgentComplete
    without caller fields (HoldTime 2, TalkTime from its answer) neither makes a new
    call nor ends the operator's current one."""
    c = centre()
    done = st.Call("a", Q, 10.0, answered_at=12.0, hold_time=2, agent="agent1001",
                   interface=IFACE, outcome=Outcome.COMPLETED, ended_at=20.0, talk_time=8,
                   end_reason="device_idle")
    c.restore([done], 20.0)
    c.apply(ev.Resync(30.0, (counters(1, 0, 100.0, 100.0),), (member(),), (), ()))
    join(c, "b", 35.0)
    answer(c, "b", 36.0, hold=1)
    c.apply(ev.AgentCompleted(60.0, Q, None, IFACE, "agent1001", 2, 48, "caller"))
    assert c.visits["b"].outcome is Outcome.ANSWERED and agent(c).call == "b"
    assert not any(v.visit_id.startswith("unseen-") for v in c.visits.values())
    assert c.observed.get(Q, st.Counters()).completed == 0  # nothing new was counted


def test_queue_log_takes_a_late_read_event_for_the_same_visit() -> None:
    """A loaded service read QueueCallerJoin 14 s late; queue_log's only visit of that
    channel to that queue is the same visit, not a second one."""
    c = centre()
    c.apply(ev.Resync(1.0, (counters(0, 0),), (member(),), (), ()))
    join(c, "u1", 24.0)  # entered at 10 by queue_log
    c.apply(ev.CallerAbandoned(25.0, Q, "u1", 14, 1))
    c.apply(ev.LinkChanged(26.0, False, "connection lost"))
    lines = ql.parse("10|u1|hotline|NONE|ENTERQUEUE||13800001111|1\n"
                     "24|u1|hotline|NONE|ABANDON|1|1|14\n")
    c.apply(ev.Resync(50.0, (counters(0, 1),), (member(),), (), (), queue_log=tuple(lines)))
    assert [v.visit_id for v in c.visits.values() if v.uniqueid == "u1"] == ["u1"]
    assert c.observed[Q].abandoned == 1


def test_a_start_mid_traffic_counts_a_call_its_queue_log_told_once() -> None:
    """The service starts while u1 talks: its first resync rebuilds u1 from queue_log
    (answered), then the events of u1's join and answer, read 15 s late by a loaded
    service, arrive: the channel cannot join the queue it is still in, so they are that
    visit's, not a second one; its AgentComplete ends it once."""
    c = centre()
    c.restore([], 0.0)  # a first start: today's queue_log is rebuilt from the day's start
    lines = ql.parse("10|u1|hotline|NONE|ENTERQUEUE||13800001111|1\n"
                     "12|u1|hotline|agent1001|CONNECT|2|u1.2|1\n")
    bridged = (ev.ActiveChannel("u1", "Local/s@inbound-1;2", "Queue", True, "b1"),)
    c.apply(ev.Resync(20.0, (counters(0, 0),), (member(in_call=True),), (), bridged,
                      queue_log=tuple(lines)))
    join(c, "u1", 25.0)
    answer(c, "u1", 27.0, hold=2)
    complete(c, 40.0, hold=2, talk=28, uid="u1")
    assert [(v.visit_id, v.outcome) for v in c.visits.values()] == [
        ("u1", Outcome.COMPLETED)]
    assert c.observed[Q].completed == 1 and agent(c).calls_taken == 1


def test_queue_log_resync_counts_a_caller_its_operator_left() -> None:
    """The operator pressed '*' while the link was cut: the caller is up in the survey,
    not bridged; queue_log has no end yet.  app_queue counted it completed when the
    device went idle, and so does the resync; the late AgentComplete confirms it."""
    c = centre()
    c.apply(ev.Resync(1.0, (counters(0, 0),), (member(),), (), ()))
    join(c, "u1", 10.0)
    answer(c, "u1", 12.0, hold=2)
    c.apply(ev.LinkChanged(20.0, False, "connection lost"))
    lines = ql.parse("10|u1|hotline|NONE|ENTERQUEUE||13800001111|1\n"
                     "12|u1|hotline|agent1001|CONNECT|2|u1.2|1\n")
    survey = (ev.ActiveChannel("u1", "Local/s@inbound-1;2", "Read", False, ""),)
    c.apply(ev.Resync(40.0, (counters(1, 0, 100.0, 100.0),), (member(),), (), survey,
                      queue_log=tuple(lines)))
    assert c.visits["u1"].outcome is Outcome.COMPLETED and c.observed[Q].completed == 1
    assert agent(c).state is not S.ON_CALL
    c.apply(ev.AgentCompleted(70.0, Q, "u1", IFACE, "agent1001", 2, 58, "caller"))
    assert c.observed[Q].completed == 1


# ---- refresh: a QueueStatus asked mid-traffic for an unknown name (issue 11, item 5)

IFACE2 = "Local/1002@agents/n"


def live_centre() -> CallCenter:
    """Connected and resynchronised, one member (agent1001), no gap."""
    c = centre()
    c.apply(ev.LinkChanged(0.1, True, "up"))
    c.apply(ev.Resync(0.5, (counters(0, 0),), (member(),), (), ()))
    return c


def test_unknown_member_rung_asks_a_refresh_that_adds_her_memberships_and_pause() -> None:
    c = live_centre()
    join(c, "u1", 10.0)
    changes = c.apply(ev.AgentRung(11.0, Q, "u1", IFACE2, "agent1002", "", ""))
    wanted = [ch for ch in changes if isinstance(ch, st.ResyncWanted)]
    assert wanted and not wanted[0].full  # a refresh, not a full resync
    c.apply(ev.RefreshAsked(11.1))
    # Bob (unknown, paused with a reason) and Alice's second queue are in the answer.
    bob = member(paused=True, reason="training", iface="Local/1003@agents/n",
                 name="agent1003")
    alice = member(iface=IFACE2, name="agent1002", in_call=False)
    c.apply(ev.Refresh(11.2, (member(), alice, member(iface=IFACE2, name="agent1002",
                                                      queue="hotline-en"), bob), ()))
    a2 = c.agents[IFACE2]
    assert set(a2.memberships) == {Q, "hotline-en"}
    assert a2.state is S.RINGING  # her ring goes on: the refresh does not override it
    b = c.agents["Local/1003@agents/n"]
    assert b.state is S.PAUSED and b.paused and b.reason == "training"
    assert set(b.memberships) == {Q}
    # Counters are never touched by a refresh.
    assert c.observed[Q].completed == 0 and c.observed[Q].abandoned == 0


def test_refresh_adds_an_unknown_waiting_caller_once_and_counts_her_once() -> None:
    # Her QueueCallerJoin was lost (e.g. a malformed frame skipped): a leave names her.
    changes = live_centre().apply(ev.CallerLeft(20.5, Q, "u7"))
    assert any(isinstance(ch, st.ResyncWanted) and not ch.full for ch in changes)
    c2 = live_centre()
    c2.apply(ev.RefreshAsked(19.0))
    c2.apply(ev.Refresh(19.5, (member(),), (ev.WaitingEntry(Q, "u7", "ch7", "139", "", 1, 4),)))
    call = c2.calls["u7"]
    assert call.outcome is Outcome.WAITING and call.estimated and call.joined_at == 15.5
    join(c2, "u7", 19.6)  # the Join read late (stasis delivers it after the answer)
    assert len(c2.waiting_in(Q)) == 1
    ring(c2, "u7", 20.0)
    answer(c2, "u7", 21.0, hold=6)
    complete(c2, 40.0, hold=6, talk=19, uid="u7")
    assert c2.observed[Q].completed == 1
    assert len([v for v in c2.visits.values() if v.uniqueid == "u7"]) == 1


def test_agentconnect_for_a_caller_never_seen_counts_once_through_the_refresh() -> None:
    c = live_centre()
    changes = c.apply(ev.AgentAnswered(30.0, Q, "u8", IFACE, "agent1001", 5, 2))
    assert any(isinstance(ch, st.ResyncWanted) and not ch.full for ch in changes)
    c.apply(ev.RefreshAsked(30.1))
    c.apply(ev.Refresh(30.2, (member(in_call=True),), ()))  # nothing waiting: adds nothing
    assert agent(c).state is S.ON_CALL
    complete(c, 50.0, hold=5, talk=20, uid="u8")
    assert c.observed[Q].completed == 1 and c.observed[Q].completed_in_sl == 1
    assert [v.outcome for v in c.visits.values() if v.uniqueid == "u8"] == [Outcome.COMPLETED]


def test_a_name_an_event_gave_while_the_answer_was_on_its_way_is_left_to_the_event() -> None:
    c = live_centre()
    c.apply(ev.RefreshAsked(40.0))
    # After the PBX listed Bob and u5 (waiting), events say Bob left and u5 abandoned.
    bob = member(iface=IFACE2, name="agent1002")
    c.apply(ev.MemberRemoved(40.1, bob))
    c.apply(ev.CallerAbandoned(40.2, Q, "u5", 9, 1))
    changes = c.apply(ev.Refresh(40.3, (member(), bob),
                                 (ev.WaitingEntry(Q, "u5", "ch5", "139", "", 1, 9),)))
    # Bob is listed and still unknown to the state: one more refresh will tell.
    assert any(isinstance(ch, st.ResyncWanted) and not ch.full for ch in changes)
    assert not c.agents[IFACE2].memberships and c.agents[IFACE2].state is S.LOGGED_OUT
    assert "u5" not in {x.uniqueid for x in c.waiting_in(Q)}
    assert c.observed[Q].abandoned == 1
    # The answer's names are forgotten with it: a later refresh starts afresh.
    c.apply(ev.RefreshAsked(41.0))
    c.apply(ev.Refresh(41.1, (member(), bob), ()))
    assert Q in c.agents[IFACE2].memberships and c.agents[IFACE2].state is S.READY


def test_refresh_without_its_marker_or_during_a_gap_changes_nothing() -> None:
    c = live_centre()
    bob = member(iface=IFACE2, name="agent1002")
    c.apply(ev.Refresh(5.0, (bob,), ()))  # asked on a link that went down since
    assert IFACE2 not in c.agents
    c.apply(ev.RefreshAsked(6.0))
    c.apply(ev.LinkChanged(6.1, False, "connection lost"))
    c.apply(ev.Refresh(6.2, (bob,), ()))
    assert IFACE2 not in c.agents


def test_a_channel_back_after_its_visits_were_let_go_of_gets_the_next_visit_key() -> None:
    """The state let go of a channel's visit (its buffer of finished visits full); the
    same channel joins a queue again later (a long IVR, the survey): its new visit has
    the next key, not the first one again, which the figures' books have sealed (a
    visit under it would count twice, and its row would overwrite the first)."""
    c = CallCenter({Q: QueueConfig(15, 0)}, keep_finished=5)
    c.apply(ev.MemberAdded(0.0, member()))
    join(c, "back", 1.0)
    c.apply(ev.CallerAbandoned(2.0, Q, "back", 1, 1))
    for i in range(20):
        join(c, f"u{i}", 3.0 + i)
        c.apply(ev.CallerAbandoned(3.5 + i, Q, f"u{i}", 0, 1))
        c.collect_finished()
    assert "back" in c.let_go and "back" not in c.visits
    join(c, "back", 40.0)
    again = c.calls["back"]
    assert (again.visit_id, again.visit, again.previous) == ("back#2", 2, "back")
