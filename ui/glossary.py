"""What the statuses mean, in one place, for every page that shows them."""

from __future__ import annotations

import streamlit as st

STATUSES = {
    "Queued": "Recorded in Points Desk, not yet sent to EnKash (a batch row waiting its turn).",
    "Awaiting approval": "A large debit or batch waiting for a second person on the Approvals "
    "page. Nothing has been sent.",
    "Sending": "Sent to EnKash; Points Desk is waiting for the answer.",
    "Succeeded": "EnKash confirmed it: the points moved.",
    "Failed": "EnKash refused it, or it was never sent. No points moved.",
    "Rejected": "An approver said no. Nothing was sent.",
    "Cancelled": "A batch row stopped before it was sent. Nothing moved.",
    "Unknown": "EnKash's answer never arrived or could not be read. The points may or may not "
    "have moved: Reconcile looks the reference up at EnKash and never resends blindly.",
    "Reference check": "Whether EnKash's reply named the reference Points Desk sent. A reply "
    "naming another reference is never resent; it waits on Reconcile.",
}


def status_glossary(key: str) -> None:
    """A closed "What do these statuses mean?" expander."""
    with st.expander("What do these statuses mean?", icon=":material/help:", key=key):
        st.markdown("\n".join(f"- **{word}**: {meaning}" for word, meaning in STATUSES.items()))
