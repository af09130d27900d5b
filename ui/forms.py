"""The life of one transaction form: its reference, its errors, its pending send and its outcome.

A reference is minted when the form is first shown and kept (in session state and in the URL's
query string) until the manager starts a new transaction. A double click, a rerun, a reload or a
duplicated tab therefore all carry the same reference, and the ledger refuses to send a reference
twice: they can never make a second transaction. A duplicated tab that asks for something else
under the reference its twin already used is told so, and its form gets a new reference.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import streamlit as st
from pydantic import ValidationError

from services import movements
from services.allocations import Outcome, ReferenceReused, new_reference
from services.approvals import describe_row
from services.models import Allocation, field_errors
from services.store import UnknownProgramme
from services.store.programmes import BudgetExceeded, ProgrammeClosed
from ui.context import desk, operator, session_id
from ui.text import md

_REFERENCE_SHAPE = re.compile(r"PD\d{12}[0-9A-F]{8}")


def needs_approval(allocation: Allocation) -> bool:
    """A debit above the approval threshold (its programme's own when it sets one) waits for a
    second person instead of being sent."""
    the_desk = desk()
    try:
        programme = movements.programme_of(the_desk.ledger, allocation)
    except UnknownProgramme:
        programme = None  # refused when sent, under the programme field
    return movements.needs_approval(allocation, the_desk.settings, programme)


class FormFlow:
    """State of one transaction form, kept in ``st.session_state`` under its key."""

    def __init__(self, key: str, fields: tuple[str, ...] = ()):
        """``fields`` are the widget keys of the form, kept while it is sent and after."""
        self.key = key
        self.fields = fields
        self._state: dict[str, Any] = st.session_state.setdefault(f"flow_{key}", {})
        if "reference" not in self._state:
            self._adopt_or_mint()
        # Streamlit resets a widget's value when it becomes disabled; put back what was sent so
        # the locked form shows it (and "Edit and try again" starts from it).
        kept = self._state.get("values") if self.locked else self._state.pop("restore", None)
        for field_key, value in (kept or {}).items():
            st.session_state[field_key] = value

    # --- reference --------------------------------------------------------------------------
    def _adopt_or_mint(self) -> None:
        from_url = st.query_params.get(f"{self.key}_ref")
        if from_url and _REFERENCE_SHAPE.fullmatch(from_url):
            self._state["reference"] = from_url
            ledger = desk().ledger
            existing = ledger.get(from_url)
            if existing is not None:  # a reload or a second tab of a form already submitted
                self._state["outcome"] = describe_row(ledger, existing, replayed=True)
        else:
            self._state["reference"] = new_reference()
        st.query_params[f"{self.key}_ref"] = self._state["reference"]

    @property
    def reference(self) -> str:
        return self._state["reference"]

    # --- errors, confirmation, outcome --------------------------------------------------------
    @property
    def errors(self) -> dict[str, str]:
        return self._state.get("errors", {})

    @property
    def outcome(self) -> Outcome | None:
        return self._state.get("outcome")

    @property
    def locked(self) -> bool:
        """The form has been sent (or is being sent): its fields can no longer change."""
        return self.outcome is not None or self._state.get("pending") is not None

    @property
    def awaiting_confirmation(self) -> Allocation | None:
        return self._state.get("confirm")

    @property
    def held(self) -> Any:
        """What stopped the last click before anything was sent (e.g. the employee already has
        a card), for the page to show with the manager's choices; None when nothing did."""
        return self._state.get("held")

    def hold(self, reason: Any) -> None:
        """Called by a ``check``: nothing is sent; the page shows ``reason`` until released."""
        self._state["held"] = reason

    def release(self) -> None:
        """Button callback: back to the form, values as they were."""
        self._state.pop("held", None)

    def error(self, field: str) -> None:
        """Show this field's validation message right under it, if it has one."""
        message = self.errors.get(field)
        if message:
            st.markdown(f":red[{md(message)}]", help=None)

    def validate(
        self,
        build: Callable[[], dict[str, Any]],
        *,
        confirm: bool = False,
        check: Callable[[Allocation], dict[str, str]] | None = None,
    ) -> None:
        """Submit-button callback: validate the form; queue the send (or ask to confirm first)."""
        if self.locked:
            return  # a second click on a form already sent does nothing
        self._state["values"] = {k: st.session_state.get(k) for k in self.fields}
        try:
            data = build()
            allocation = Allocation.model_validate(
                {**data, "reference": self.reference},
                context={"max_points": desk().settings.points_desk_max_points},
            )
        except ValidationError as error:
            self._state["errors"] = field_errors(error)
            return
        except ValueError as error:
            self._state["errors"] = {"__all__": str(error)}
            return
        self._state.pop("held", None)
        problems = check(allocation) if check else {}
        self._state["errors"] = problems
        if problems or self.held is not None:
            return
        if confirm:
            self._state["confirm"] = allocation
        else:
            self._state["pending"] = allocation

    def confirm(self) -> None:
        """Confirm-button callback of the dialog."""
        allocation = self._state.pop("confirm", None)
        if allocation is not None and not self.locked:
            self._state["pending"] = allocation

    def cancel_confirmation(self) -> None:
        self._state.pop("confirm", None)

    def send_pending(self) -> Outcome | None:
        """Send what the last click validated; the ledger makes a repeat of it a no-op."""
        allocation = self._state.get("pending")
        if allocation is None:
            return self.outcome
        the_desk = desk()
        # One use case decides: a debit above the threshold is held for a second person
        # (nothing goes to EnKash), anything else is recorded and sent.
        spinner = "Asking for approval…" if needs_approval(allocation) else "Sending to EnKash…"
        try:
            with st.spinner(spinner), the_desk.client() as client:
                outcome = movements.request(
                    the_desk.ledger,
                    client,
                    allocation,
                    the_desk.settings,
                    operator=operator(),
                    session_id=session_id(),
                )
        except (BudgetExceeded, ProgrammeClosed, UnknownProgramme) as refused:
            # Nothing was recorded or sent: back to the form, the reason under the programme
            # (a budget refusal says how much is left).
            self._state.pop("pending", None)
            self._state["errors"] = {"programme": str(refused)}
            return None
        except ReferenceReused as reused:
            # Another tab of this form sent its reference first, for something else: this one
            # gets a new reference, keeps what was typed, and says why nothing was sent.
            self.start_new(keep_values=True)
            self._state["errors"] = {"__all__": str(reused)}
            return None
        self._state["outcome"] = outcome
        self._state.pop("pending", None)
        return outcome

    def start_new(self, *, keep_values: bool = False) -> None:
        """Button callback: end this transaction; clear the form, or keep it to edit and retry."""
        values = self._state.get("values") or {}
        self._state.clear()
        self._state["reference"] = new_reference()
        st.query_params[f"{self.key}_ref"] = self._state["reference"]
        if keep_values:
            self._state["restore"] = values
        else:
            # Set each widget back to empty rather than forgetting it: a browser keeps showing
            # (and sends back) the value of a widget whose state was only dropped.
            for field_key in self.fields:
                if field_key in st.session_state:
                    kept = st.session_state[field_key]
                    st.session_state[field_key] = "" if isinstance(kept, str) else None

    def form_error(self) -> None:
        """Errors that belong to no single field."""
        message = self.errors.get("__all__")
        if message:
            st.error(md(message))


def result_panel(flow: FormFlow, *, new_label: str, intro: str) -> None:
    """Send what is pending, then show the outcome and what the manager can do next."""
    from services.models import Status
    from ui.outcome import render_outcome
    from ui.phone import bring_into_view
    from ui.sidebar import forget_pool

    outcome = flow.send_pending()
    if outcome is None:
        st.markdown(intro)
        st.caption(f"Reference for this transaction: `{flow.reference}`")
        return
    forget_pool()
    render_outcome(outcome)
    bring_into_view(f"{flow.key}_outcome", flow.reference)
    if outcome.status is Status.FAILED:
        # Nothing moved: the same details may be corrected and sent under a new reference.
        st.button(
            "Edit and try again",
            key=f"{flow.key}_retry",
            on_click=flow.start_new,
            kwargs={"keep_values": True},
            type="primary",
        )
    st.button(new_label, key=f"{flow.key}_new", on_click=flow.start_new)
