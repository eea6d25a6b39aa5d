"""Chinese working-day calendar (工作日历) for work-order deadlines.

A day is a working day when it is a Monday–Friday that is not a public holiday, or a
weekend day that the State Council made a make-up working day (调休上班).  The
State Council's lists come from the ``chinesecalendar`` package (PyPI, updated every
November when the next year's notice is published; :func:`statutory_days`); a
centre's own changes (a local holiday, a day the centre works anyway) come from the
``[years.YYYY]`` tables of ``config/calendar.toml`` and win over the package.  This
module never reads files or the clock.

Working time is measured in *windows*: every working day contributes one window,
either the whole day (00:00–24:00, the default, which is what deadlines use) or the
configured office hours (e.g. 09:00–17:30).  ``add_working_days(start, n)`` adds
``n`` windows' worth of working time, so it is the exact inverse of
``working_time_between``::

    working_time_between(start, add_working_days(start, n)) == n * window_length

Examples with whole days: accepted on Monday 10:00, five working days later is the
next Monday 10:00; accepted on a Saturday (or during a holiday) the clock starts at
00:00 of the next working day, so five working days end at 24:00 of the fifth one.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import chinese_calendar

SHANGHAI = ZoneInfo("Asia/Shanghai")
_DAY = timedelta(days=1)


def statutory_days() -> tuple[frozenset[date], frozenset[date], frozenset[int]]:
    """The State Council's (holidays, make-up working days, years covered), from ``chinesecalendar``.

    A year is covered when the package lists any holiday in it (2004 through the
    latest notice it carries).  Holidays include the weekend days inside a break.
    """
    holidays = frozenset(chinese_calendar.constants.holidays)
    workdays = frozenset(chinese_calendar.constants.workdays)
    return holidays, workdays, frozenset(d.year for d in holidays)


@dataclass(frozen=True)
class WorkCalendar:
    """Holidays, make-up working days and the working window of each working day.

    ``years`` lists the years whose holidays are configured; for other years the
    calendar falls back to Monday–Friday (see :meth:`covers`).
    """

    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()
    years: frozenset[int] = frozenset()
    tz: ZoneInfo = SHANGHAI
    office_hours: tuple[time, time] | None = None

    def __post_init__(self) -> None:
        both = self.holidays & self.workdays
        if both:
            raise ValueError(f"dates both holiday and working day: {sorted(both)}")
        if self.office_hours is not None and not self.office_hours[0] < self.office_hours[1]:
            raise ValueError(f"office hours must open before they close: {self.office_hours}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> WorkCalendar:
        """Build from the parsed ``calendar.toml`` (``[calendar]`` and ``[years.YYYY]``).

        The State Council's days (:func:`statutory_days`) are the base unless
        ``[calendar] statutory = false``; each ``[years.YYYY]`` table then adds the
        centre's own ``holidays`` and ``workdays``, a date listed there replacing the
        package's verdict on it.  A date listed under the wrong year, or as both a
        holiday and a working day, is a ``ValueError``.
        """
        settings = data.get("calendar", {})
        hours = settings.get("office_hours")
        office = None
        if hours:
            opens, closes = hours
            office = (time.fromisoformat(opens), time.fromisoformat(closes))
        holidays: set[date] = set()
        workdays: set[date] = set()
        years: set[int] = set()
        if settings.get("statutory", True):
            base_holidays, base_workdays, base_years = statutory_days()
            holidays |= base_holidays
            workdays |= base_workdays
            years |= base_years
        own: dict[str, set[date]] = {"holidays": set(), "workdays": set()}
        for year, table in data.get("years", {}).items():
            years.add(int(year))
            for key, target in own.items():
                for text in table.get(key, []):
                    day = date.fromisoformat(text)
                    if day.year != int(year):
                        raise ValueError(f"{day} listed under year {year}")
                    target.add(day)
        both = own["holidays"] & own["workdays"]
        if both:
            raise ValueError(f"dates both holiday and working day: {sorted(both)}")
        holidays = (holidays - own["workdays"]) | own["holidays"]
        workdays = (workdays - own["holidays"]) | own["workdays"]
        return cls(
            holidays=frozenset(holidays),
            workdays=frozenset(workdays),
            years=frozenset(years),
            tz=ZoneInfo(settings.get("timezone", "Asia/Shanghai")),
            office_hours=office,
        )

    @classmethod
    def from_toml(cls, text: str) -> WorkCalendar:
        """Build from the text of ``calendar.toml``."""
        return cls.from_mapping(tomllib.loads(text))

    @property
    def window_length(self) -> timedelta:
        """Working time in one working day: 24 h, or the length of the office hours."""
        if self.office_hours is None:
            return _DAY
        opens, closes = self.office_hours
        return datetime.combine(date.min, closes) - datetime.combine(date.min, opens)

    def covers(self, day: date) -> bool:
        """True when ``day``'s year has known holidays (not the Mon–Fri fallback)."""
        return day.year in self.years

    def is_working_day(self, day: date) -> bool:
        """Mon–Fri unless a public holiday; a weekend day only when it is 调休上班."""
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        return day.weekday() < 5

    def next_working_day(self, day: date) -> date:
        """The first working day strictly after ``day``."""
        day += _DAY
        while not self.is_working_day(day):
            day += _DAY
        return day

    def _window(self, day: date) -> tuple[datetime, datetime]:
        if self.office_hours is None:
            start = datetime.combine(day, time(0), self.tz)
            return start, datetime.combine(day + _DAY, time(0), self.tz)
        opens, closes = self.office_hours
        return datetime.combine(day, opens, self.tz), datetime.combine(day, closes, self.tz)

    def _local(self, moment: datetime, tz: tzinfo | None = None) -> datetime:
        if moment.tzinfo is None:
            return moment.replace(tzinfo=tz or self.tz).astimezone(self.tz)
        return moment.astimezone(self.tz)

    def add_working_days(self, start: datetime, n: int, tz: tzinfo | None = None) -> datetime:
        """The instant when ``n`` working days of working time have elapsed since ``start``.

        ``tz`` is the zone of the result and of a naive ``start`` (default: the
        calendar's, Asia/Shanghai).  Day boundaries always follow the calendar's zone,
        because holidays are Chinese dates.
        """
        if n < 0:
            raise ValueError("n must not be negative")
        out_tz = tz or self.tz
        local = self._local(start, tz)
        remaining = n * self.window_length
        if not remaining:
            return local.astimezone(out_tz)
        day = local.date()
        while True:
            if self.is_working_day(day):
                opens, closes = self._window(day)
                begin = max(opens, local)
                if begin < closes:
                    available = closes - begin
                    if remaining <= available:
                        return (begin + remaining).astimezone(out_tz)
                    remaining -= available
            day += _DAY

    def working_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Working time inside ``[a, b]`` (negative when ``b`` is before ``a``)."""
        if b < a:
            return -self.working_time_between(b, a)
        a, b = self._local(a), self._local(b)
        total = timedelta(0)
        day = a.date()
        while day <= b.date():
            if self.is_working_day(day):
                opens, closes = self._window(day)
                begin, end = max(opens, a), min(closes, b)
                if begin < end:
                    total += end - begin
            day += _DAY
        return total
