"""Credit and debit an existing card: the two pages differ only in direction and in safeguards."""

from __future__ import annotations

import streamlit as st

from services.allocations import programme_debit_threshold
from services.models import Allocation, Kind
from services.store import EmployeeSummary
from ui.context import desk
from ui.format import mobile, points
from ui.forms import FormFlow, needs_approval, result_panel
from ui.picker import employee_picker
from ui.programmes import programme_select
from ui.text import md


def _employee_fields(summary: EmployeeSummary) -> dict | None:
    fields = {
        "email": summary.email,
        "mobile": summary.mobile,
        "title": summary.title,
        "first_name": summary.first_name,
        "gender": summary.gender,
    }
    return fields if all(fields.values()) else None


def render_movement(kind: Kind) -> None:
    """The picker, the amount form, the (debit) confirmation and the outcome."""
    debit = kind is Kind.DEBIT
    key = kind.value
    flow = FormFlow(
        key,
        (f"{key}_query", f"{key}_card", f"{key}_amount", f"{key}_reason", f"{key}_programme"),
    )
    flow.send_pending()  # before the picker, so the balance it shows is already the new one

    # Once there is an outcome it goes above the form: on a phone the columns stack, and the
    # outcome under a greyed-out form would be below the fold.
    outcome_slot = st.container(key=f"{flow.key}_outcome")
    picker_column, result_column = st.columns([3, 2], gap="large")
    with picker_column:
        chosen = employee_picker(key, disabled=flow.locked)
        if chosen is None and not flow.locked:
            return

        def values() -> dict:
            if chosen is None:
                raise ValueError("Choose the employee whose card to use")
            return {
                "kind": kind,
                "card_id": chosen.card_id,
                "employee": _employee_fields(chosen),
                "amount": st.session_state.get(f"{key}_amount", ""),
                "reason": st.session_state.get(f"{key}_reason", ""),
                "programme": st.session_state.get(f"{key}_programme"),
            }

        def within_balance(allocation: Allocation) -> dict[str, str]:
            # Refuse locally what EnKash would refuse; EnKash's answer stays the final word.
            known = chosen.balance if chosen is not None else None
            if debit and known is not None and allocation.amount > known:
                return {
                    "amount": f"The card holds {points(known)} points; "
                    "a debit cannot take more than that."
                }
            return {}

        with st.form(f"{key}_form", enter_to_submit=False):
            st.text_input(
                f"Points to {'debit' if debit else 'credit'}",
                key=f"{key}_amount",
                placeholder="e.g. 500 or 500.50",
                disabled=flow.locked,
            )
            flow.error("amount")
            st.text_input(
                "Reason",
                key=f"{key}_reason",
                disabled=flow.locked,
                placeholder="e.g. Reversal of duplicate award" if debit else "e.g. Diwali bonus",
            )
            flow.error("reason")
            programme_select(f"{key}_programme", disabled=flow.locked)
            flow.error("programme")
            flow.form_error()
            for field, message in flow.errors.items():
                if field.startswith("employee") or field == "card_id":
                    st.error(f"The chosen card's details are incomplete: {md(message)}")
            st.form_submit_button(
                "Review debit" if debit else "Credit points",
                key=f"{key}_submit",
                type="primary",
                disabled=flow.locked,
                on_click=flow.validate,
                args=(values,),
                kwargs={"confirm": debit, "check": within_balance},
            )

    if debit and flow.awaiting_confirmation is not None:
        _confirm_debit(flow, flow.awaiting_confirmation, chosen)

    with outcome_slot if flow.outcome is not None else result_column:
        result_panel(
            flow,
            new_label=f"New {'debit' if debit else 'credit'}",
            intro=(
                "**Debit (unallocate)** takes points back from the card into the company pool. "
                "You will be asked to confirm before anything is sent."
                if debit
                else "**Credit** adds points to the card from the company pool."
            ),
        )


@st.dialog("Confirm debit", dismissible=False)
def _confirm_debit(flow: FormFlow, allocation: Allocation, chosen: EmployeeSummary | None) -> None:
    if flow.awaiting_confirmation is None:
        # A dialog button reruns only the dialog; after Debit now / Cancel, rerun the whole page
        # so it closes and the page sends (or not) and shows the outcome.
        st.rerun()
    st.markdown(f"Debit **{points(allocation.amount)} points** from this card?")
    # Who it is, as plain text (supplied names and emails are never read as Markdown).
    with st.container(border=True):
        if chosen is not None:
            name = " ".join(part for part in (chosen.title, chosen.first_name) if part)
            st.text(name or "Unnamed")
            st.text(f"Email {chosen.email or '—'}  ·  Mobile {mobile(chosen.mobile) or '—'}")
        st.text(f"Card {allocation.card_id}")
    if chosen is not None and chosen.balance is not None:
        st.caption(
            f"Known balance {points(chosen.balance)} → "
            f"{points(chosen.balance - allocation.amount)} after."
        )
    if allocation.reason:
        st.caption(f"Reason: {md(allocation.reason)}")
    held = needs_approval(allocation)
    if held:
        own = programme_debit_threshold(desk().ledger, allocation)
        threshold = desk().settings.points_desk_approval_debit_threshold if own is None else own
        limit = points(threshold, decimals=False)
        st.info(
            f"This debit is above the approval limit of {limit} points, so it **goes for "
            "approval**: a second person with the approver role approves it on the Approvals "
            "page, and nothing is sent until they do.",
            icon="👥",
        )
    left, right = st.columns(2)
    left.button(
        "Send for approval" if held else "Debit now",
        type="primary",
        on_click=flow.confirm,
        key=f"{flow.key}_confirm",
    )
    right.button("Cancel", on_click=flow.cancel_confirmation, key=f"{flow.key}_cancel")
