"""When a schedule is due: a one-off, monthly on a day, or weekly on a weekday, at an IST time.

Pure date arithmetic, no storage. Every occurrence is computed in Asia/Kolkata and handed back
as an aware UTC datetime (what the ledger stores). Monthly on day 29, 30 or 31 falls on the last
day of a shorter month (day 31 in February is the 28th or 29th), so no month is skipped.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MAX_OCCURRENCES = 10_000  # a rule with no end is walked at most this far (about 190 years weekly)


class Repeat(StrEnum):
    ONCE = "once"
    MONTHLY = "monthly"
    WEEKLY = "weekly"


@dataclass(frozen=True)
class Rule:
    """When a schedule sends. ``start_on`` (IST) is a one-off's day, or the first day a repeating
    schedule may send; ``end_on`` (IST, inclusive) and ``count`` (occurrences in all) end it."""

    repeat: Repeat
    start_on: date
    time_of_day: time
    day_of_month: int | None = None
    weekday: int | None = None
    end_on: date | None = None
    count: int | None = None

    def problems(self) -> dict[str, str]:
        """What is wrong with the rule, by field (empty when it is usable)."""
        found: dict[str, str] = {}
        if self.repeat is Repeat.MONTHLY and not (
            self.day_of_month is not None and 1 <= self.day_of_month <= 31
        ):
            found["day_of_month"] = "Choose a day of the month from 1 to 31"
        if self.repeat is Repeat.WEEKLY and not (
            self.weekday is not None and 0 <= self.weekday <= 6
        ):
            found["weekday"] = "Choose a weekday"
        if self.end_on is not None and self.end_on < self.start_on:
            found["end_on"] = "The end date is before the start date"
        if self.count is not None and self.count < 1:
            found["count"] = "Send at least once"
        return found

    def occurrences(self) -> Iterator[datetime]:
        """Every occurrence in order, as aware UTC datetimes (bounded by the end date and count)."""
        for sent, day in enumerate(self._days()):
            if self.end_on is not None and day > self.end_on:
                return
            if self.count is not None and sent >= self.count:
                return
            yield datetime.combine(day, self.time_of_day, IST).astimezone(UTC)

    def _days(self) -> Iterator[date]:
        if self.repeat is Repeat.ONCE:
            yield self.start_on
            return
        if self.repeat is Repeat.WEEKLY:
            assert self.weekday is not None
            day = self.start_on + timedelta(days=(self.weekday - self.start_on.weekday()) % 7)
            for _ in range(MAX_OCCURRENCES):
                yield day
                day += timedelta(days=7)
            return
        assert self.day_of_month is not None
        year, month = self.start_on.year, self.start_on.month
        for _ in range(MAX_OCCURRENCES):
            last = calendar.monthrange(year, month)[1]
            day = date(year, month, min(self.day_of_month, last))
            if day >= self.start_on:
                yield day
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)

    def first_from(self, moment: datetime) -> datetime | None:
        """The first occurrence at or after ``moment`` (aware); ``None`` when there is none."""
        for due in self.occurrences():
            if due >= moment:
                return due
        return None

    def first_after(self, moment: datetime) -> datetime | None:
        """The first occurrence strictly after ``moment``; ``None`` when there is none."""
        return self.first_from(moment + timedelta(microseconds=1))

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        """Occurrences in ``[start, end]``, earliest first."""
        found: list[datetime] = []
        for due in self.occurrences():
            if due > end:
                break
            if due >= start:
                found.append(due)
        return found

    def describe(self) -> str:
        """The rule in a manager's words: "monthly on day 31 (the last day in shorter months)
        at 09:00 IST, from 1 Jan 2027, 12 times"."""
        at = f"{self.time_of_day:%H:%M} IST"
        if self.repeat is Repeat.ONCE:
            return f"once, on {self.start_on:%d %b %Y} at {at}"
        if self.repeat is Repeat.MONTHLY:
            day = f"day {self.day_of_month}"
            if (self.day_of_month or 0) > 28:
                day += " (the last day in shorter months)"
            words = f"monthly on {day} at {at}"
        else:
            words = f"weekly on {WEEKDAYS[self.weekday or 0]} at {at}"
        words += f", from {self.start_on:%d %b %Y}"
        if self.end_on is not None:
            words += f" until {self.end_on:%d %b %Y}"
        if self.count is not None:
            words += f", {self.count} time{'s' if self.count != 1 else ''}"
        return words


def ist(moment: datetime) -> datetime:
    """An aware datetime in IST (for showing)."""
    return moment.astimezone(IST)
