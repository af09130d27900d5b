"""Before an account is created: the cards its email or mobile already has, and what to do.

EnKash matches a create by email, then mobile, and credits the card it finds, whoever holds it.
So a create is checked first (services/employees.py ``existing_holders``); when a card exists,
nothing is sent and the manager chooses: credit that card instead (the Credit page, with the
amount and reason carried over), or go back to the form.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal

import streamlit as st

from services.employees import HolderCheck, existing_holders
from services.models import Allocation
from services.store import EmployeeSummary
from ui.context import desk
from ui.format import mobile, points
from ui.forms import FormFlow
from ui.text import md

_GOTO_CREDIT = "_goto_credit"
_PLAIN_NAME = re.compile(r"[^\W\d_][\w .'-]{0,49}")


def existing_card_check(flow: FormFlow):
    """A ``FormFlow.validate`` check: hold the create when the employee already has a card."""

    def check(allocation: Allocation) -> dict[str, str]:
        assert allocation.employee is not None  # a create always carries the employee
        the_desk = desk()
        with the_desk.client() as client:
            found = existing_holders(the_desk.ledger, client, allocation.employee)
        if not found.clear:
            flow.hold(found)
        return {}

    return check


def follow_to_credit() -> None:
    """At the top of a page: go to the Credit page if the manager chose to credit instead."""
    if st.session_state.pop(_GOTO_CREDIT, False):
        st.switch_page("pages/credit.py")


def _name(holder: EmployeeSummary) -> str:
    return " ".join(part for part in (holder.title, holder.first_name) if part) or "Unnamed"


def _credit_instead(flow: FormFlow, holder: EmployeeSummary, amount: str, reason: str) -> None:
    # A fresh credit form with this card chosen and the amount and reason carried over; the
    # credit then goes through the Credit page like any other (its own reference, its own click).
    state = st.session_state
    state.pop("flow_credit", None)
    state["credit_query"] = holder.card_id
    state["credit_card"] = holder.card_id
    state["credit_amount"] = amount
    state["credit_reason"] = reason
    flow.start_new()  # this create was never sent: it ends here
    state[_GOTO_CREDIT] = True


def render_existing_cards(
    flow: FormFlow, amount: str, reason: str, *, build: Callable[[], dict], check: Callable
) -> None:
    """The held create: whose card it would have credited, and the manager's two choices."""
    found: HolderCheck = flow.held
    if found.holders:
        st.warning(
            "**This employee already has a card.** Nothing was sent: EnKash would credit the "
            "existing card below instead of opening a new one.",
            icon="🛑",
        )
        for holder in found.holders:
            with st.container(border=True):
                # Supplied text (names, emails) as plain text, never Markdown.
                st.text(_name(holder))
                st.text(f"Email {holder.email or '—'}  ·  Mobile {mobile(holder.mobile) or '—'}")
                st.text(f"Card {holder.card_id}")
                if holder.balance is not None:
                    st.caption(f"Known balance {points(Decimal(holder.balance))} points")
                first = holder.first_name or ""
                # A button's label is Markdown, and EnKash's name for the holder is its text: a
                # name of letters can still hold a web address or underscores.
                label = (
                    f"Credit {md(first)}'s card instead"
                    if _PLAIN_NAME.fullmatch(first)
                    else "Credit this card instead"
                )
                st.button(
                    label,
                    key=f"credit_instead_{holder.card_id}",
                    type="primary",
                    on_click=_credit_instead,
                    args=(flow, holder, amount, reason),
                )
        if found.unchecked:
            st.caption(
                "EnKash's user search did not answer, so other cards with this email or mobile "
                "may exist at EnKash too."
            )
    else:
        st.error(found.unchecked or "", icon="🛑")
        st.button(
            "Check again",
            key=f"{flow.key}_check_again",
            type="primary",
            on_click=flow.validate,
            args=(build,),
            kwargs={"check": check},
        )
    st.button("Stop", key=f"{flow.key}_stop", on_click=flow.release)
