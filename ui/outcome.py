"""The card that says what happened to one transaction."""

from __future__ import annotations

import streamlit as st

from services.allocations import Outcome
from services.models import Status
from ui.format import ist, points
from ui.text import code, md


def render_outcome(outcome: Outcome) -> None:
    """Success, refusal or unknown, with the facts a manager needs to trust it."""
    row = outcome.row
    with st.container(border=True, key=f"outcome_{row.reference}"):
        if row.status is Status.SUCCEEDED:
            st.success(md(outcome.headline), icon="✅")
        elif row.status is Status.FAILED:
            st.error(f"**{md(outcome.headline)}** — {md(outcome.explanation)}", icon="⛔")
        elif row.status is Status.UNKNOWN:
            st.warning(f"**{md(outcome.headline)}** — {md(outcome.explanation)}", icon="⏳")
        else:
            st.info(f"**{md(outcome.headline)}** — {md(outcome.explanation)}", icon="🕓")
        if outcome.holder_warning:
            st.warning(f"**Check the card holder** — {md(outcome.holder_warning)}", icon="⚠️")
        if outcome.replayed:
            st.caption(
                "This form was already submitted; this is its recorded outcome. "
                "Nothing was sent again."
            )
        st.markdown(f"**Reference**  \n{code(row.reference)}")
        if row.status is Status.QUEUED:  # nothing sent yet: what is asked, not EnKash's reply
            facts = {
                "Points": points(row.amount),
                "Card id": code(row.card_id),
                "When": ist(row.updated_at),
            }
        else:
            facts = {
                "Card id": code(row.card_id),
                "EnKash transaction": code(row.transaction_id),
                "Balance after": points(row.balance_after)
                if row.balance_after is not None
                else "—",
                "When": ist(row.updated_at),
            }
        reported = outcome.reported
        if reported is not None:
            holder = " · ".join(
                part
                for part in (
                    " ".join(p for p in (reported.title, reported.first_name) if p),
                    reported.email,
                    reported.mobile,
                )
                if part
            )
            facts["Card holder (as EnKash reports)"] = md(holder)
        if row.status is Status.SUCCEEDED:
            facts["Reference check"] = "✓ EnKash echoed this reference"
        cols = st.columns(2)
        for index, (label, value) in enumerate(facts.items()):
            cols[index % 2].markdown(f"**{label}**  \n{value}")
        st.page_link(
            "pages/history.py",
            label="See it in History",
            icon="📈",
            query_params={"ref": row.reference},
        )
