"""The live book's running sums against a direct computation (acd.metrics.MetricsBook).

The book adds each call's part to its interval when it is put and takes the old part
away when the same call is put again (the state changes calls in place); whatever the
order of puts, its figures must be :func:`acd.metrics.figures` of the calls as they
are last."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acd.metrics import SMOOTH_TAIL, MetricsBook, figures, smoothed
from tests.conftest import TRACES

PBX_TRACES = {"pbx1": TRACES / "scenario-g", "pbx2": TRACES / "scenario-j"}
PBX_TRACES_THERE = all((d / "trace.jsonl").is_file() for d in PBX_TRACES.values())

OUTCOMES = ("waiting", "answered", "completed", "abandoned", "exited", "interrupted",
            "dropped")
QUEUES = ("hotline", "hotline-en")
SL = {"hotline": 15, "hotline-en": 20}


@dataclass
class FakeCall:
    visit_id: str
    queue: str
    joined_at: float
    outcome: str = "waiting"
    hold_time: int | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    talk_time: int | None = None
    wrap_s: float = 0.0
    estimated: bool = False

    @property
    def uniqueid(self) -> str:
        return self.visit_id


def states(visit_id: str) -> st.SearchStrategy[FakeCall]:
    """One call as it may be at one put (join time, queue and all else may change)."""
    return st.builds(
        FakeCall, st.just(visit_id), st.sampled_from(QUEUES),
        st.floats(0, 4 * 900, allow_nan=False), st.sampled_from(OUTCOMES),
        st.one_of(st.none(), st.integers(0, 40)),
        st.one_of(st.none(), st.floats(0, 5000, allow_nan=False)),
        st.one_of(st.none(), st.floats(0, 5000, allow_nan=False)),
        st.one_of(st.none(), st.integers(0, 600)),
        st.floats(0, 30, allow_nan=False), st.booleans())


@st.composite
def histories(draw: st.DrawFn) -> list[FakeCall]:
    """Puts in order: each a state of one of a few calls (a call put again later)."""
    n = draw(st.integers(1, 12))
    puts = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=40))
    return [draw(states(f"v{i}")) for i in puts]


def expected_tail(last: dict[str, FakeCall], order: dict[str, int], completed: bool) -> int:
    """app_queue's smoothing over the range's last SMOOTH_TAIL samples in time order
    (equal times in first-put order)."""
    keep = ("completed",) if completed else ("answered", "completed", "interrupted")
    samples = sorted(
        ((c.ended_at or 0.0) if completed else (c.answered_at or 0.0), order[k],
         (c.talk_time or 0) if completed else (c.hold_time or 0))
        for k, c in last.items() if c.outcome in keep)
    return smoothed([v for _, _, v in samples[-SMOOTH_TAIL:]], first_is_value=completed)


@settings(max_examples=300, deadline=None)
@given(histories(), st.integers(0, 10))
def test_running_sums_equal_a_direct_computation(puts: list[FakeCall], short: int) -> None:
    book = MetricsBook(SL.__getitem__, short)
    last: dict[str, FakeCall] = {}
    order: dict[str, int] = {}
    for call in puts:
        book.put(call)
        last[call.visit_id] = call
        order.setdefault(call.visit_id, len(order))
    per, overall = book.figures(0, 10 * 900)
    assert len(book) == len(last)
    for q in QUEUES:
        mine = [c for c in last.values() if c.queue == q]
        if not mine:
            assert q not in per
            continue
        want = figures(mine, SL[q], short)
        got = per[q]
        for name, value in want.as_dict().items():
            if name in ("asterisk_holdtime", "asterisk_talktime"):
                continue
            if isinstance(value, float):
                assert abs(getattr(got, name) - value) < 1e-4, name
            else:
                assert getattr(got, name) == value, name
        one = {k: c for k, c in last.items() if c.queue == q}
        assert got.asterisk_holdtime == expected_tail(one, order, completed=False)
        assert got.asterisk_talktime == expected_tail(one, order, completed=True)
    assert overall.offered == len(last)


def test_a_call_put_again_in_place_moves_its_part() -> None:
    """The state changes a call object in place and puts it again: the old part goes."""
    book = MetricsBook(lambda q: 15)
    call = FakeCall("u1", "hotline", 10.0)
    book.put(call)
    assert book.figures(0, 900)[1].waiting == 1
    call.outcome, call.hold_time, call.answered_at = "answered", 20, 30.0
    book.put(call)
    f = book.figures(0, 900)[1]
    assert (f.waiting, f.answered, f.answered_within_sl, f.max_wait_s) == (0, 1, 0, 20)
    call.outcome, call.ended_at, call.talk_time, call.wrap_s = "completed", 90.0, 60, 2.5
    book.put(call)
    f = book.figures(0, 900)[1]
    assert (f.answered, f.completed, f.talk_total_s, f.handle_total_s) == (1, 1, 60.0, 62.5)
    book.put(replace(call, joined_at=1000.0))  # a rebuilt visit's join time corrected
    assert book.figures(0, 900)[1].offered == 0
    assert book.figures(900, 1800)[1].completed == 1
    assert book.series(0, 1800)[1][1].aht_s == 62.5


def test_the_book_keeps_no_call() -> None:
    """What the book holds per call is its own small record: the call object can go."""
    import gc
    import weakref

    class Call(FakeCall):
        pass

    book = MetricsBook(lambda q: 15)
    call = Call("u1", "hotline", 10.0, "abandoned", 4, ended_at=14.0)
    book.put(call)
    ref = weakref.ref(call)
    del call
    gc.collect()
    assert ref() is None
    assert book.figures(0, 900)[1].abandoned == 1
    book.forget_before(900)
    assert len(book) == 0 and book.figures(0, 900)[1].offered == 0


def test_an_interval_keeps_its_last_samples_only_and_the_smoothing_is_unchanged() -> None:
    """A busy interval lets go of samples older than its own last SMOOTH_TAIL (twice
    that at most are held); Asterisk's smoothed figures stay those of every call, and
    a call put again whose sample was let go still moves only its counts."""
    book = MetricsBook(lambda q: 15)
    calls = []
    for i in range(3 * SMOOTH_TAIL):
        call = FakeCall(f"u{i}", "hotline", 10.0 + i * 0.1, "completed", i % 37,
                        answered_at=20.0 + i * 0.1, ended_at=80.0 + i * 0.1,
                        talk_time=30 + i % 50)
        book.put(call)
        calls.append(call)
    sums = book._sums[0]["hotline"]
    assert SMOOTH_TAIL <= len(sums.answers) <= 2 * SMOOTH_TAIL
    f = book.figures(0, 900)[0]["hotline"]
    order = {c.visit_id: i for i, c in enumerate(calls)}
    every = {c.visit_id: c for c in calls}
    assert f.asterisk_holdtime == expected_tail(every, order, completed=False)
    assert f.asterisk_talktime == expected_tail(every, order, completed=True)
    first = calls[0]  # its samples were let go
    first.outcome, first.ended_at, first.talk_time = "abandoned", 25.0, None
    book.put(first)
    f = book.figures(0, 900)[0]["hotline"]
    assert (f.completed, f.abandoned, f.answered) == (3 * SMOOTH_TAIL - 1, 1,
                                                      3 * SMOOTH_TAIL - 1)
    assert f.asterisk_holdtime == expected_tail(every, order, completed=False)


def test_the_service_keeps_today_and_yesterday_in_its_books(tmp_path: Path) -> None:
    """A core that runs for weeks: once a day its books let go of the calls before
    yesterday (what it shows reads today; reports read the database)."""
    from callcenter.config import load
    from callcenter.service import Service

    settings = load()
    settings.database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    service = Service(settings)
    today = service.day_start(1_800_000_000.0)
    for n, at in enumerate((today - 3 * 86400, today - 86400 + 60, today + 60)):
        service.book.put(FakeCall(f"u{n}", "hotline", at, "abandoned", 3, ended_at=at + 3))
    service.forget_old_days(today + 3600)
    # yesterday's and today's sums stay; their records are sealed (no state holds them)
    assert service.book.figures(today - 86400, today + 86400)[1].abandoned == 2
    assert service.book.figures(today - 4 * 86400, today + 86400)[1].abandoned == 2
    assert len(service.book) == 0
    service.book.put(FakeCall("u9", "hotline", today - 5 * 86400, "abandoned", 1))
    service.forget_old_days(today + 7200)  # the same day: once only
    assert len(service.book) == 1
    assert service.book.figures(today - 6 * 86400, today + 86400)[1].abandoned == 3


def test_a_sealed_call_keeps_its_part_and_loses_its_record() -> None:
    """Sealing drops the records of calls that can no longer change; the sums, the
    samples and the other calls' records stay, and other calls still move."""
    book = MetricsBook(lambda q: 15)
    calls = [FakeCall(f"u{i}", "hotline", 10.0 + i, "completed", i, answered_at=20.0 + i,
                      ended_at=60.0 + i, talk_time=40) for i in range(5)]
    for c in calls:
        book.put(c)
    before = book.figures(0, 900)[0]["hotline"]
    assert book.seal(["u0", "u1", "nobody", "u1"]) == 2
    assert len(book) == 3 and set(book.records()) == {"u2", "u3", "u4"}
    assert book.figures(0, 900)[0]["hotline"] == before
    calls[4].outcome, calls[4].talk_time = "interrupted", None
    book.put(calls[4])  # a held call still moves its part
    f = book.figures(0, 900)[0]["hotline"]
    assert (f.offered, f.completed, f.interrupted) == (5, 4, 1)


@pytest.mark.skipif(not PBX_TRACES_THERE, reason="no recorded traces")
def test_a_core_that_seals_what_its_states_let_go_shows_the_same_figures(
        tmp_path: Path) -> None:
    """Two real traces through a two-PBX service whose states keep only 8 finished
    visits each, its books sealing what they let go of after every event: the books hold
    a record per visit the states hold (not one per call) and every figure, per PBX and
    for the centre, equals that of a service that seals nothing."""
    from acd.state import QueueConfig
    from callcenter.config import load
    from callcenter.pbx.replay import TraceEvents, read_queue_log
    from callcenter.service import Service

    def run(seal: bool) -> tuple[Service, int]:
        settings = load(env={})
        settings.database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
        settings.ami.name = "pbx1"
        settings.more_pbxs = [type(settings.ami)(name="pbx2", port=5039)]
        settings.queues = {q: QueueConfig(15, 3) for q in settings.queues}
        service = Service(settings)
        most = 0
        for name, d in PBX_TRACES.items():
            edge = service.edges[name]
            edge.centre.keep_finished = 8
            events = TraceEvents(d / "trace.jsonl", read_queue_log(d / "queue_log"))
            for event in events:
                service.dispatch(edge.centre.apply(event))
                if seal:
                    edge.centre.collect_finished()
                    service.seal_let_go()
                    held = sum(len(e.centre.visits) for e in service.edges.values())
                    assert len(service.book) <= held
                    most = max(most, len(service.book))
            service.dispatch(edge.centre.advance(events.last))
        return service, most

    plain, _ = run(False)
    sealed, most = run(True)
    calls = len(plain.book)
    assert calls > 4 * 8 and most < calls / 2, (calls, most)
    for name in ("", *PBX_TRACES):
        a = plain.book if not name else plain.edges[name].book
        b = sealed.book if not name else sealed.edges[name].book
        assert a.figures(0, 4e9) == b.figures(0, 4e9)


def test_old_samples_go_and_the_figures_of_today_and_the_last_15_minutes_stay() -> None:
    """A day of calls at 2 a second: the smoothing samples that no range ending now can
    read are let go (most of the day's), and "today" and "the last 15 minutes" are the
    same figures as before, Asterisk's smoothed ones included; calls put afterwards
    still move them as they would have."""
    import random

    rng = random.Random(7)
    book, kept = MetricsBook(lambda q: 15), MetricsBook(lambda q: 15)
    calls = []
    for i in range(40 * 900):  # 10 hours at 1 call a second
        t = 10.0 + i
        c = FakeCall(f"u{i}", rng.choice(QUEUES), t, rng.choice(("completed", "abandoned")),
                     rng.randint(0, 60), answered_at=t + 5, ended_at=t + 60,
                     talk_time=rng.randint(10, 300))
        book.put(c)
        kept.put(replace(c))
        calls.append(c)
    now = calls[-1].joined_at + 1
    ranges = [(0, now + 1), (book.bucket(now), now + 1), (book.bucket(now) - 3600, now + 1)]
    before = [book.figures(*r) for r in ranges]
    held = sum(len(s.answers) + len(s.completions)
               for per in book._sums.values() for s in per.values())
    dropped = book.drop_old_samples()
    assert dropped > held * 0.8  # 40 intervals: all but the newest few let go
    assert [book.figures(*r) for r in ranges] == before
    assert book.drop_old_samples() == 0
    late = calls[-50]  # a call of the newest interval changes after
    late.outcome, late.talk_time = "completed", 999
    for b in (book, kept):
        b.put(replace(late))
    assert book.figures(*ranges[0]) == kept.figures(*ranges[0])


def test_the_service_lets_go_of_old_samples_once_an_interval(tmp_path: Path) -> None:
    from callcenter.config import load
    from callcenter.service import Service

    settings = load()
    settings.database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    service = Service(settings)
    start = 1_800_000_000.0 - 1_800_000_000.0 % 900
    for i in range(3000):  # 4 hours, one call each 5 s
        t = start + 5 * i
        service.book.put(FakeCall(f"u{i}", "hotline", t, "completed", 3, answered_at=t + 3,
                                  ended_at=t + 30, talk_time=27))
    now = start + 15_000
    service.drop_old_samples(now)
    first = service.book.bucket(start)
    assert service.book._sums[first]["hotline"].answers == []
    newest = service.book._sums[service.book.bucket(now - 1)]["hotline"]
    assert newest.answers and newest.completions
    service.book.put(FakeCall("x", "hotline", start + 1, "completed", 3, answered_at=start + 4,
                              ended_at=start + 30, talk_time=27))
    service.drop_old_samples(now + 60)  # the same interval: not again
    assert len(service.book._sums[first]["hotline"].answers) == 1


def test_a_long_call_of_a_cleared_interval_still_moves_its_counts() -> None:
    """A call that joined in an interval whose samples were let go of completes later:
    its counts move, and its sample, taken away from an emptied list, is simply not
    there (nothing raises, the newest intervals' smoothing is unchanged)."""
    book, kept = MetricsBook(lambda q: 15), MetricsBook(lambda q: 15)
    long_call = FakeCall("long", "hotline", 5.0, "answered", 4, answered_at=9.0)
    for b in (book, kept):
        b.put(replace(long_call))
    for i in range(20 * 900):
        t = 900.0 + i
        c = FakeCall(f"u{i}", "hotline", t, "completed", 3, answered_at=t + 3,
                     ended_at=t + 30, talk_time=27)
        for b in (book, kept):
            b.put(replace(c))
    assert book.drop_old_samples() > 0 and book._sums[0]["hotline"].answers == []
    done = replace(long_call, outcome="completed", ended_at=19_000.0, talk_time=18_991)
    for b in (book, kept):
        b.put(replace(done))
    now = 19_000.0
    today, last15 = book.figures(0, now + 1), book.figures(book.bucket(now), now + 1)
    assert today[1].completed == 20 * 900 + 1 and today[1].talk_total_s == kept.figures(
        0, now + 1)[1].talk_total_s
    assert (today, last15) == (kept.figures(0, now + 1),
                               kept.figures(kept.bucket(now), now + 1))


def test_start_up_records_are_sealed_once_the_first_resyncs_are_applied(
        tmp_path: Path) -> None:
    """A core (a standby taking over late in the day) reads the day's calls back into
    its books: their records are sealed once every PBX's first resync has been applied
    (30 s after it began), all but the visits a state holds; not before, and once."""
    from callcenter.config import load
    from callcenter.service import Service

    settings = load()
    settings.database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    clock = [1_800_000_000.0]
    service = Service(settings, clock=lambda: clock[0])
    for i in range(50):  # what _load_recent put: the day's calls
        service.book.put(FakeCall(f"old{i}", "hotline", clock[0] - 3600 + i, "abandoned", 2))
    join = FakeCall("held", "hotline", clock[0] - 5, "waiting")
    service.book.put(join)
    service.home.centre.visits["held"] = join  # type: ignore[assignment]
    service.seal_let_go()
    assert len(service.book) == 51  # no resync yet: kept
    service.home.last_resync = clock[0]
    clock[0] += 10
    service.seal_let_go()
    assert len(service.book) == 51  # its rebuild may still put them
    clock[0] += 30
    service.seal_let_go()
    assert set(service.book.records()) == {"held"}
    assert service.book.figures(0, 4e9)[1].abandoned == 50
    service.book.put(FakeCall("new", "hotline", clock[0], "waiting"))
    service.seal_let_go()  # once only
    assert set(service.book.records()) == {"held", "new"}
