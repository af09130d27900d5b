"""Sandbox tools: script a bad day (a fault for the next N allocate calls), then switch it off.

Sandbox mode only: it sets the in-process sandbox's knobs (``next_fault``, ``next_fault_calls``)
directly, so a demo can show an unknown outcome being settled on Reconcile.
"""

from __future__ import annotations

import streamlit as st

from ui.context import desk
from ui.notice import set_notice

#: What a person picks, and the sandbox's name for it.
FAULT_CHOICES: dict[str, str] = {
    "Timeout after commit": "timeout_after_commit",
    "Refusal": "refusal",
    "Malformed reply": "malformed",
    "Wrong reference echo": "wrong_reference",
}
_WORDS = {name: label.lower() for label, name in FAULT_CHOICES.items()}
_EFFECT = {
    "timeout_after_commit": "EnKash moves the points, then the reply times out: outcome unknown",
    "refusal": "EnKash refuses: nothing moves",
    "malformed": "EnKash moves the points, then the reply cannot be read: outcome unknown",
    "wrong_reference": "EnKash moves the points but echoes another reference: outcome unknown",
}


def _apply(changes: dict) -> None:
    from services.sandbox.app import apply_knob_changes  # sandbox mode only pays for the import

    apply_knob_changes(desk().sandbox.knobs, changes)


def _turn_on() -> None:
    # Read from the widgets' state: a callback's args would hold the values of the previous run.
    name = FAULT_CHOICES[st.session_state["sandbox_fault"]]
    calls = int(st.session_state["sandbox_fault_calls"])
    _apply({"next_fault": name, "next_fault_calls": calls})
    set_notice(
        "warning",
        f"Fault on: {_WORDS[name]} for the next {calls} credit or debit call"
        f"{'s' if calls != 1 else ''} to the sandbox ({_EFFECT[name]}).",
    )


def _switch_off() -> None:
    _apply({"next_fault": "", "next_fault_calls": 0})
    set_notice("success", "Faults off: the sandbox answers normally again.")


def fault_controls() -> None:
    """The "Bad day" controls inside the Sandbox tools expander."""
    knobs = desk().sandbox.knobs
    st.markdown("**Demo a bad day**")
    if knobs.next_fault and knobs.next_fault_calls > 0:
        st.caption(
            f"On: {_WORDS.get(knobs.next_fault, knobs.next_fault)} for the next "
            f"{knobs.next_fault_calls} credit or debit call(s)."
        )
    else:
        st.caption(
            "Make the sandbox misbehave on the next credits or debits, then settle the unknown "
            "outcomes on Reconcile."
        )
    kind, calls, on, off = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
    kind.selectbox("Fault", list(FAULT_CHOICES), key="sandbox_fault")
    calls.number_input(
        "Next calls", min_value=1, max_value=100, value=1, step=1, key="sandbox_fault_calls"
    )
    on.button(
        "Turn on",
        key="sandbox_fault_on",
        icon="⚡",
        on_click=_turn_on,
    )
    off.button("Switch off", key="sandbox_fault_off", on_click=_switch_off)
