"""Numbers as people in India read them: lakh/crore grouping (12,34,567.50), via Babel's en_IN.

Services use these for their messages ("At most 10,00,000 points"), the UI for every figure on
the page (ui/format.py wraps them), exports for their cell formats, so the grouping is the same
everywhere and is never hand-written.
"""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_decimal

LOCALE = "en_IN"
# Excel/LibreOffice number format with Indian grouping and two decimals, for XLSX cells.
XLSX_POINTS_FORMAT = "#,##,##0.00"
XLSX_COUNT_FORMAT = "#,##,##0"
_POINTS_PATTERN = "#,##,##0.00"
_WHOLE_PATTERN = "#,##,##0"


def points(value: Decimal | int | float | None, *, decimals: bool = True) -> str:
    """``1234567.5`` -> ``12,34,567.50``; ``decimals=False`` -> ``12,34,568``; ``None`` -> ``—``.

    Never raises: a value too large to group (``1E+30``: more digits than ``Decimal``'s context
    holds) is shown plainly as ``1E+30``, and ``NaN`` or ``Infinity`` as themselves. A figure
    on a page must not take the page down with it.
    """
    if value is None:
        return "—"
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
        if amount.is_finite():
            pattern = _POINTS_PATTERN if decimals else _WHOLE_PATTERN
            return format_decimal(amount, format=pattern, locale=LOCALE, decimal_quantization=True)
    except (ArithmeticError, ValueError, TypeError):
        pass
    return _plain(value)


def _plain(value: object) -> str:
    """The fallback form of a figure that cannot be grouped: as ``Decimal`` writes it, clipped."""
    try:
        text = str(value)
    except ValueError:  # an int with more digits than ``str`` will write
        return "a number too large to show"
    return text if len(text) <= 40 else text[:39] + "…"


def figure(amount: Decimal | int | float) -> str:
    """Points in a sentence: ``99999`` -> ``99,999``, ``10.5`` -> ``10.50``. Never raises."""
    return points(amount).removesuffix(".00")


def count(value: int) -> str:
    """A number of things: ``1000000`` -> ``10,00,000``."""
    return format_decimal(int(value), format=_WHOLE_PATTERN, locale=LOCALE)


def plural(value: int, one: str, many: str | None = None) -> str:
    """``1 card``, ``2 cards``, ``10,00,000 cards``."""
    return f"{count(value)} {one if value == 1 else (many or one + 's')}"
