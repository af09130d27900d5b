"""How numbers, times and people read on the page: Indian digit grouping (services.numbers, Babel's
en_IN), India Standard Time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from services.numbers import count, figure, plural, points

__all__ = ["IST", "count", "figure", "ist", "mobile", "plural", "points"]

IST = timezone(timedelta(hours=5, minutes=30), "IST")


def ist(moment: datetime | None, fmt: str = "%d %b %Y, %H:%M IST") -> str:
    """A UTC time as India Standard Time."""
    if moment is None:
        return "—"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(IST).strftime(fmt)


def mobile(number: str | None) -> str:
    """``9600098867`` -> ``96000 98867``."""
    if not number or len(number) != 10:
        return number or ""
    return f"{number[:5]} {number[5:]}"
