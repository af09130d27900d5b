"""Pre-flight lines for a confirm step (services/preflight.py): how long sending will take, the
pool and programme budgets after it, and which rows need a second person's approval."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import streamlit as st

from services import preflight
from services.bulk_files import Preview
from services.errors import PointsDeskError
from ui.context import desk
from ui.format import points
from ui.text import md


def rows_of(preview: Preview) -> list[preflight.PlannedRow]:
    """A bulk preview's valid rows as planned rows."""
    return [
        preflight.PlannedRow(
            v.number, v.allocation.kind, v.allocation.amount, v.allocation.programme
        )
        for v in preview.valid
    ]


def _rows(numbers: Sequence[int]) -> str:
    """``row 9`` or ``rows 2, 5 and 7`` (the first ten, then how many more)."""
    if len(numbers) == 1:
        return f"row {numbers[0]}"
    shown = [str(n) for n in numbers[:10]]
    if len(numbers) > 10:
        return f"rows {', '.join(shown)} and {len(numbers) - 10:,} more"
    return f"rows {', '.join(shown[:-1])} and {shown[-1]}"


def preflight_lines(
    rows: Sequence[preflight.PlannedRow],
    *,
    pool_balance: Decimal | None,
    concurrency: int,
    rate_limit: float | None,
    operator: str | None = None,
) -> preflight.Preflight | None:
    """Show the pre-flight of ``rows``; returns it (``None`` if it could not be worked out).

    ``operator``: who will send the rows, so their credits past a programme's monthly limit per
    operator count as the batch will (without it that rule is left out). The returned
    ``batch_reasons`` say why the batch waits for a second person (empty: it does not), by the
    rules the service holds a queued batch by."""
    the_desk = desk()
    try:
        found = preflight.preflight(
            the_desk.ledger,
            the_desk.settings,
            rows,
            pool_balance=pool_balance,
            concurrency=concurrency,
            rate_limit=rate_limit,
            operator=operator,
        )
    except PointsDeskError:
        st.caption("The pre-flight figures could not be worked out just now.")
        return None
    # The pace's working (often long, with its own brackets) goes in a caption below.
    lines = [
        f"Expected to take **{preflight.duration_words(found.expected_seconds)}**, at about "
        f"{found.rate.rows_per_second:,.1f} rows a second"
    ]
    if found.pool_after is None:
        lines.append("Pool after: not known (EnKash did not say what it holds now)")
    else:
        lines.append(
            f"Pool after: **{points(found.pool_after)}** points (now {points(found.pool_before)})"
        )
    for p in found.programmes:
        if p.remaining is not None:
            lines.append(
                f"{md(p.name)}: **{points(p.remaining_after)}** left after "
                f"(now {points(p.remaining)})"
            )
    if found.batch_reasons:
        lines.append(
            f"Need approval: **all {found.rows:,} rows** (the batch waits for a second person)"
            + (
                f"; debits above their limit: {_rows(found.approval_rows)}"
                if found.approval_rows
                else ""
            )
        )
    elif found.approval_rows:
        lines.append(f"Need approval: {_rows(found.approval_rows)} (debits above their limit)")
    else:
        lines.append("Need approval: no row")
    st.markdown("  \n".join(lines))
    st.caption(f"How long: {md(found.rate.note)}.")
    return found
