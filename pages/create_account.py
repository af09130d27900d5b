"""Create account: open an incentive card for a partner employee with their first points."""

import streamlit as st

from services.models import Gender, Title
from ui.access import require
from ui.forms import FormFlow, result_panel
from ui.holders import existing_card_check, follow_to_credit, render_existing_cards
from ui.programmes import programme_select
from ui.sidebar import mode_banner

FIELDS = (
    "new_first_name",
    "new_title",
    "new_gender",
    "new_email",
    "new_mobile",
    "new_amount",
    "new_reason",
    "new_programme",
)

follow_to_credit()
mode_banner()
require("move")
st.title("Create account")
st.caption("Opens an EnKash incentive card for a partner employee and credits their first points.")

flow = FormFlow("create", FIELDS)
check = existing_card_check(flow)


def _values() -> dict:
    state = st.session_state
    return {
        "kind": "create",
        "employee": {
            "email": state.get("new_email", ""),
            "mobile": state.get("new_mobile", ""),
            "title": state.get("new_title") or "",
            "first_name": state.get("new_first_name", ""),
            "gender": state.get("new_gender") or "",
        },
        "amount": state.get("new_amount", ""),
        "reason": state.get("new_reason", ""),
        "programme": state.get("new_programme"),
    }


flow.send_pending()
# Once there is an outcome it goes above the form: on a phone the columns stack, and the outcome
# under a greyed-out form would be below the fold.
outcome_slot = st.container(key=f"{flow.key}_outcome")
form_column, result_column = st.columns([3, 2], gap="large")
with form_column, st.form("create_form", enter_to_submit=False):
    locked = flow.locked
    name_col, title_col, gender_col = st.columns([2, 1, 1])
    with name_col:
        st.text_input("First name", key="new_first_name", max_chars=50, disabled=locked)
        flow.error("employee.first_name")
    with title_col:
        st.selectbox(
            "Title",
            [t.value for t in Title],
            index=None,
            placeholder="Choose",
            key="new_title",
            disabled=locked,
        )
        flow.error("employee.title")
    with gender_col:
        st.selectbox(
            "Gender",
            [g.value for g in Gender],
            index=None,
            placeholder="Choose",
            format_func={"M": "Male", "F": "Female"}.get,
            key="new_gender",
            disabled=locked,
        )
        flow.error("employee.gender")
    email_col, mobile_col = st.columns(2)
    with email_col:
        st.text_input("Email", key="new_email", placeholder="name@company.com", disabled=locked)
        flow.error("employee.email")
    with mobile_col:
        st.text_input(
            "Mobile",
            key="new_mobile",
            placeholder="96000 98867",
            disabled=locked,
            help="An Indian mobile number; +91 and a leading 0 are fine.",
        )
        flow.error("employee.mobile")
    st.text_input(
        "First credit (points)",
        key="new_amount",
        placeholder="e.g. 1500 or 1500.50",
        disabled=locked,
    )
    flow.error("amount")
    st.text_input(
        "Reason", key="new_reason", placeholder="e.g. Q3 sales incentive", disabled=locked
    )
    flow.error("reason")
    programme_select("new_programme", disabled=locked)
    flow.error("programme")
    flow.form_error()
    st.form_submit_button(
        "Create account and credit",
        key="create_submit",
        type="primary",
        disabled=locked,
        on_click=flow.validate,
        args=(_values,),
        kwargs={"check": check},
    )

with outcome_slot if flow.outcome is not None else result_column:
    if flow.held is not None:  # the employee already has a card: nothing was sent
        values = _values()
        render_existing_cards(flow, values["amount"], values["reason"], build=_values, check=check)
    else:
        result_panel(
            flow,
            new_label="Create another account",
            intro="**What happens**\n\n"
            "1. Points Desk checks that the email and mobile have no card yet.\n"
            "2. It records the request before anything is sent.\n"
            "3. EnKash creates the employee and their card, and credits the points from the "
            "pool.\n"
            "4. You see the card id, EnKash's transaction id and the balance.",
        )
