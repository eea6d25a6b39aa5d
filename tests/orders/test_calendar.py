"""Working-day arithmetic on the Chinese calendar (holidays and 调休 make-up days)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callcenter.orders.calendar import WorkCalendar

TZ = ZoneInfo("Asia/Shanghai")
CONFIG = Path(__file__).resolve().parents[2] / "config" / "calendar.toml"
SHIPPED = WorkCalendar.from_toml(CONFIG.read_text(encoding="utf-8"))
SHIPPED_OFFICE_HOURS = WorkCalendar.from_toml(
    CONFIG.read_text(encoding="utf-8").replace("# office_hours", "office_hours")
)

# The 2025 National Day / Mid-Autumn week as announced: 10-01..10-08 off,
# Sunday 09-28 and Saturday 10-11 are working days.
NATIONAL_DAY_2025 = """
[calendar]
timezone = "Asia/Shanghai"
statutory = false

[years.2025]
holidays = ["2025-10-01", "2025-10-02", "2025-10-03", "2025-10-04",
            "2025-10-05", "2025-10-06", "2025-10-07", "2025-10-08"]
workdays = ["2025-09-28", "2025-10-11"]
"""


@pytest.fixture
def cal() -> WorkCalendar:
    return WorkCalendar.from_toml(NATIONAL_DAY_2025)


@pytest.fixture
def office() -> WorkCalendar:
    return WorkCalendar.from_toml(
        NATIONAL_DAY_2025.replace("[calendar]", '[calendar]\noffice_hours = ["09:00", "17:30"]')
    )


def at(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=TZ)


def test_weekdays_weekends_holidays_and_make_up_days(cal: WorkCalendar) -> None:
    assert cal.is_working_day(date(2025, 9, 26))  # Friday
    assert not cal.is_working_day(date(2025, 9, 27))  # Saturday
    assert cal.is_working_day(date(2025, 9, 28))  # Sunday, 调休上班
    assert not cal.is_working_day(date(2025, 10, 1))  # Wednesday, 国庆
    assert not cal.is_working_day(date(2025, 10, 8))  # Wednesday, 国庆 (8 days with 中秋)
    assert cal.is_working_day(date(2025, 10, 9))  # Thursday
    assert cal.is_working_day(date(2025, 10, 11))  # Saturday, 调休上班
    assert not cal.is_working_day(date(2025, 10, 12))  # Sunday


def test_five_working_days_across_the_national_day_week(cal: WorkCalendar) -> None:
    # Tue 09-30 10:00: 09-30, 10-09, 10-10, 10-11 (Sat, 调休), 10-13, then to 10:00 on 10-14.
    assert cal.add_working_days(at(2025, 9, 30, 10), 5) == at(2025, 10, 14, 10)


def test_a_make_up_saturday_counts(cal: WorkCalendar) -> None:
    # Fri 10-10 15:00 + 1 working day lands on the 调休 Saturday, not on Monday.
    assert cal.add_working_days(at(2025, 10, 10, 15), 1) == at(2025, 10, 11, 15)
    # Fri 09-26 + 1 working day: Saturday off, the 调休 Sunday 09-28 works.
    assert cal.add_working_days(at(2025, 9, 26, 15), 1) == at(2025, 9, 28, 15)


def test_clock_starts_on_the_next_working_day_when_accepted_on_a_holiday(
    cal: WorkCalendar,
) -> None:
    # Accepted on National Day: the clock starts 10-09 00:00; 2 days end at 24:00 of 10-10.
    assert cal.add_working_days(at(2025, 10, 3, 20), 2) == at(2025, 10, 11)
    assert cal.working_time_between(at(2025, 10, 1), at(2025, 10, 9)) == timedelta(0)


def test_working_time_between_skips_holidays(cal: WorkCalendar) -> None:
    span = cal.working_time_between(at(2025, 9, 30, 12), at(2025, 10, 9, 12))
    assert span == timedelta(hours=24)  # 12 h on 09-30, 12 h on 10-09
    assert cal.working_time_between(at(2025, 10, 9, 12), at(2025, 9, 30, 12)) == -span


def test_zero_days_and_negative_days(cal: WorkCalendar) -> None:
    start = at(2025, 10, 4, 9)
    assert cal.add_working_days(start, 0) == start
    with pytest.raises(ValueError):
        cal.add_working_days(start, -1)


def test_office_hours_mode(office: WorkCalendar) -> None:
    assert office.window_length == timedelta(hours=8, minutes=30)
    # Tue 09-30 16:30: one office hour left that day, then 7.5 h on Thu 10-09.
    assert office.add_working_days(at(2025, 9, 30, 16, 30), 1) == at(2025, 10, 9, 16, 30)
    # Before opening time the clock waits for 09:00.
    assert office.add_working_days(at(2025, 10, 9, 7), 1) == at(2025, 10, 9, 17, 30)
    assert office.working_time_between(at(2025, 9, 30, 8), at(2025, 9, 30, 20)) == timedelta(
        hours=8, minutes=30
    )


def test_timezones_naive_and_foreign(cal: WorkCalendar) -> None:
    # 2025-09-30 02:00 UTC is 10:00 in Shanghai; the result is given in the zone asked for.
    start = datetime(2025, 9, 30, 2, tzinfo=UTC)
    result = cal.add_working_days(start, 5, UTC)
    assert result == at(2025, 10, 14, 10)
    assert result.tzinfo is UTC
    assert cal.add_working_days(datetime(2025, 9, 30, 10), 5) == at(2025, 10, 14, 10)


def test_years_not_configured_fall_back_to_weekdays(cal: WorkCalendar) -> None:
    assert not cal.covers(date(2027, 10, 1))
    assert cal.is_working_day(date(2027, 10, 1))  # a Friday; no holiday list for 2027
    assert not cal.is_working_day(date(2027, 10, 2))
    assert not SHIPPED.covers(date(2099, 10, 1)) and SHIPPED.is_working_day(date(2099, 10, 1))


def test_the_centres_own_days_win_over_the_package() -> None:
    own = WorkCalendar.from_toml("""
[years.2026]
holidays = ["2026-07-01"]   # a Wednesday the centre closes
workdays = ["2026-10-07"]   # a 国庆 holiday the centre works
""")
    assert not own.is_working_day(date(2026, 7, 1))
    assert own.is_working_day(date(2026, 10, 7))
    assert not own.is_working_day(date(2026, 10, 6))  # still the package's holiday
    assert own.is_working_day(date(2026, 10, 10))  # the package's 调休 Saturday
    assert own.covers(date(2024, 5, 1)) and not own.is_working_day(date(2024, 5, 1))
    with pytest.raises(ValueError):
        WorkCalendar.from_mapping({"years": {"2026": {"holidays": ["2026-07-01"],
                                                       "workdays": ["2026-07-01"]}}})


def test_inconsistent_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        WorkCalendar(holidays=frozenset({date(2025, 1, 1)}), workdays=frozenset({date(2025, 1, 1)}))
    with pytest.raises(ValueError):
        WorkCalendar.from_mapping({"years": {"2025": {"holidays": ["2026-01-01"]}}})
    with pytest.raises(ValueError):
        WorkCalendar(office_hours=(time(17, 30), time(9)))


@given(
    start=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2026, 11, 30)),
    n=st.integers(min_value=0, max_value=15),
    hours=st.booleans(),
)
def test_adding_is_the_inverse_of_measuring(start: datetime, n: int, hours: bool) -> None:
    cal = SHIPPED_OFFICE_HOURS if hours else SHIPPED
    start = start.replace(tzinfo=TZ)
    end = cal.add_working_days(start, n)
    assert end >= start
    assert cal.working_time_between(start, end) == n * cal.window_length
    # and no earlier instant would do
    if n:
        assert cal.working_time_between(start, end - timedelta(minutes=1)) < n * cal.window_length


class TestShippedCalendar:
    """config/calendar.toml over ``chinesecalendar`` against the State Council notices:
    2025: 国办发明电〔2024〕12号 (2024-11-12); 2026: the notice of 2025-11-04 (Xinhua)."""

    @pytest.fixture
    def shipped(self) -> WorkCalendar:
        return SHIPPED

    def test_years_and_zone(self, shipped: WorkCalendar) -> None:
        assert {2024, 2025, 2026} <= shipped.years
        assert shipped.tz == TZ
        assert shipped.office_hours is None  # deadlines count whole working days

    def test_holiday_counts(self, shipped: WorkCalendar) -> None:
        assert len([d for d in shipped.holidays if d.year == 2025]) == 28
        assert len([d for d in shipped.holidays if d.year == 2026]) == 33

    @pytest.mark.parametrize(
        "day",
        [
            "2025-01-26",
            "2025-02-08",
            "2025-04-27",
            "2025-09-28",
            "2025-10-11",
            "2026-01-04",
            "2026-02-14",
            "2026-02-28",
            "2026-05-09",
            "2026-09-20",
            "2026-10-10",
        ],
    )
    def test_make_up_days_are_weekend_working_days(self, shipped: WorkCalendar, day: str) -> None:
        d = date.fromisoformat(day)
        assert d.weekday() >= 5
        assert shipped.is_working_day(d)

    def test_holidays_as_announced(self, shipped: WorkCalendar) -> None:
        days = {
            2025: ["01-01", "01-28", "01-29", "01-30", "01-31", "02-01", "02-02", "02-03",
                   "02-04", "04-04", "04-05", "04-06", "05-01", "05-02", "05-03", "05-04",
                   "05-05", "05-31", "06-01", "06-02", "10-01", "10-02", "10-03", "10-04",
                   "10-05", "10-06", "10-07", "10-08"],
            2026: ["01-01", "01-02", "01-03", "02-15", "02-16", "02-17", "02-18", "02-19",
                   "02-20", "02-21", "02-22", "02-23", "04-04", "04-05", "04-06", "05-01",
                   "05-02", "05-03", "05-04", "05-05", "06-19", "06-20", "06-21", "09-25",
                   "09-26", "09-27", "10-01", "10-02", "10-03", "10-04", "10-05", "10-06",
                   "10-07"],
        }
        for year, listed in days.items():
            announced = {date.fromisoformat(f"{year}-{md}") for md in listed}
            assert {d for d in shipped.holidays if d.year == year} == announced

    def test_every_holiday_is_a_day_off(self, shipped: WorkCalendar) -> None:
        assert not any(shipped.is_working_day(d) for d in shipped.holidays)
        # Spring Festival 2026: 02-15 (Sun) to 02-23 (Mon), nine days.
        assert [shipped.is_working_day(date(2026, 2, d)) for d in range(14, 25)] == (
            [True] + [False] * 9 + [True]
        )

    def test_national_day_2026(self, shipped: WorkCalendar) -> None:
        # Wed 09-30 10:00 + 5: 09-30, 10-08, 10-09, 10-10 (Sat, 调休), 10-12, to 10-13 10:00.
        assert shipped.add_working_days(at(2026, 9, 30, 10), 5) == at(2026, 10, 13, 10)
