"""How numbers, times and people read on the page: Indian digit grouping, India Standard Time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

IST = timezone(timedelta(hours=5, minutes=30), "IST")


def points(value: Decimal | int | float | None, *, decimals: bool = True) -> str:
    """``1234567.5`` -> ``12,34,567.50`` (lakh/crore grouping); ``None`` -> ``—``."""
    if value is None:
        return "—"
    amount = Decimal(str(value)).quantize(Decimal("0.01"))
    sign = "-" if amount < 0 else ""
    whole, _, cents = f"{abs(amount):.2f}".partition(".")
    if len(whole) > 3:
        head, tail = whole[:-3], whole[-3:]
        groups = []
        while len(head) > 2:
            groups.insert(0, head[-2:])
            head = head[:-2]
        if head:
            groups.insert(0, head)
        whole = ",".join([*groups, tail])
    return f"{sign}{whole}.{cents}" if decimals else f"{sign}{whole}"


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
