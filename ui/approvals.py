"""The approval queue's pieces: one card per waiting request, the decisions, the outcome."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import streamlit as st

from services import approvals, bulk
from services.approvals import Approval
from services.errors import PointsDeskError
from services.models import Status
from services.store import GENERAL_CODE
from ui.auth import auth_config, current_person
from ui.context import desk, operator
from ui.format import ist, points
from ui.notice import error_message, set_error, set_notice, show_notices
from ui.outcome import render_outcome
from ui.sidebar import forget_pool
from ui.text import code, md

_RESULT = "_approval_result"


def open_sandbox() -> bool:
    """The sandbox without sign-in: one person on their own computer, no real points. There is
    no second person, so the maker-checker rule would leave every request waiting forever."""
    person = current_person()
    return desk().is_sandbox and person is not None and person.method == "sandbox"


def display_name(person_id: str) -> str:
    """A local account's name for its username (an OIDC id is already an email)."""
    account = auth_config().users.get(person_id)
    return account.display_name if account is not None else person_id


def _what(approval: Approval) -> str:
    if approval.subject_kind == "batch":
        record = desk().ledger.get_batch(approval.subject)
        if record is None:
            return f"Batch {code(approval.subject)}"
        moves = []
        if record.credit_rows:
            moves.append(
                f"credits {points(record.credit_points)} points to {record.credit_rows:,} cards"
            )
        if record.debit_rows:
            moves.append(
                f"debits {points(record.debit_points)} points from {record.debit_rows:,} cards"
            )
        summary = ", ".join(moves)
        why = " and ".join(approval.reasons)
        return (
            f"Batch **{md(record.file_name)}** · {record.row_count:,} rows  \n"
            f"{summary[:1].upper()}{summary[1:]}"
            + (f"  \nWaits because it {md(why)}." if why else "")
        )
    request = approval.request
    if approval.subject_kind == "reversal":
        undo = "Debit" if request.get("kind") == "debit" else "Credit"
        name = request.get("first_name") or request.get("card_id") or "the card"
        return (
            f"Reversal of {code(request.get('reverses') or '—')}: {undo.lower()} "
            f"**{md(name)}** (card {code(request.get('card_id') or '—')})"
        )
    if approval.subject_kind == "budget":
        return _budget_words(approval)
    card_id = request.get("card_id")
    name, email = approvals.holder(desk().ledger, card_id, request.get("employee"))
    if approval.subject_kind == "credit":
        programme = desk().ledger.programme(request.get("programme") or GENERAL_CODE)
        why = " and ".join(approval.reasons)
        return (
            f"Credit to **{md(name or 'an unnamed employee')}**"
            + (f" · {md(email)}" if email else "")
            + f"  \nCard {code(card_id or '—')}"
            + (f" · programme **{md(programme.name)}**" if programme is not None else "")
            + (f"  \nWaits because it is {md(why)}." if why else "")
        )
    return (
        f"Debit from **{md(name or 'an unnamed employee')}**"
        + (f" · {md(email)}" if email else "")
        + f"  \nCard {code(card_id or '—')}"
    )


#: A programme's money rules as the approval card names them, and what "none" means for each.
_RULES = {
    "budget": ("Budget", "no limit"),
    "debit_threshold": ("Debit approval limit", "the global threshold"),
    "monthly_operator_limit": ("Monthly limit per operator", "no limit"),
}


def _rule_value(rule: str, value: Decimal | None) -> str:
    return _RULES[rule][1] if value is None else points(value)


def _budget_words(approval: Approval) -> str:
    """A programme change: which programme, then each thing asked, as the maker's request says
    it ("raise Q3's debit approval limit from the global 10,000 to 50,000 points")."""
    programme_code = approval.programme_code
    programme = desk().ledger.programme(programme_code)
    name = programme.name if programme is not None else programme_code
    asked = approval.reasons or [
        f"set the {_RULES[rule][0].lower()} to {_rule_value(rule, value)}"
        for rule, value in approval.changes.items()
        if rule in _RULES
    ]
    return "  \n".join(
        [f"Change to **{md(name)}** ({code(programme_code)})", *(md(line) for line in asked)]
    )


def _change_metric(approval: Approval) -> tuple[str, str, list[str]]:
    """The right-hand figure of a programme change: (label, value, captions under it). The new
    budget when one is asked, else the new value of the one rule asked (its caption names it)."""
    changes = {rule: value for rule, value in approval.changes.items() if rule in _RULES}
    if "budget" in changes:
        others = [rule for rule in changes if rule != "budget"]
        captions = [f"{_RULES[r][0]}: {_rule_value(r, changes[r])}" for r in others]
        return "New budget", _rule_value("budget", changes["budget"]), captions
    if len(changes) == 1:
        ((rule, value),) = changes.items()
        return "Programme change", _rule_value(rule, value), [f"New {_RULES[rule][0].lower()}"]
    captions = [f"{_RULES[r][0]}: {_rule_value(r, v)}" for r, v in changes.items()]
    return "Programme change", f"{len(changes)} rules", captions


def _decided_points(approval: Approval) -> str:
    """The decided table's points: the amount moved, or a programme change's new budget."""
    if approval.subject_kind != "budget":
        return points(approval.amount)
    changes = approval.changes
    return _rule_value("budget", changes["budget"]) if "budget" in changes else "—"


def _comment_error(approval_id: int) -> str:
    return f"approval_comment_error_{approval_id}"


def _decide(approval_id: int, approve: bool) -> None:
    """Approve/Reject button callback: decide, send an approved debit, keep what happened."""
    comment = st.session_state.get(f"approval_comment_{approval_id}", "")
    the_desk = desk()
    alone = open_sandbox()
    person = current_person()
    # Every name this person goes by: a request made under their other identity is theirs too.
    identities = auth_config().identities(person) if person is not None else frozenset()
    try:
        if approve:
            with the_desk.client() as client:
                decision = approvals.approve(
                    the_desk.ledger,
                    approval_id,
                    approver=operator(),
                    comment=comment,
                    client=client,
                    allow_self=alone,
                    identities=identities,
                )
            if decision.approval.subject_kind == "batch":
                bulk.start_batch(
                    the_desk.ledger,
                    the_desk.settings,
                    decision.approval.subject,
                    actor=operator(),
                    wake=the_desk.pick_up,
                )
        else:
            decision = approvals.reject(
                the_desk.ledger,
                approval_id,
                approver=operator(),
                comment=comment,
                allow_self=alone,
                identities=identities,
            )
    except approvals.ProgrammeNotOpen as error:
        # Closed as refused, nothing sent: what happened, not a failure of the click.
        st.session_state.pop(_RESULT, None)
        set_notice("warning", error.message, icon="🚫")  # its own words say it all
        return
    except approvals.CommentRequired as error:
        # Said under this request's comment box, where the missing comment goes.
        st.session_state[_comment_error(approval_id)] = error_message(error)
        return
    except PointsDeskError as error:
        st.session_state.pop(_RESULT, None)
        set_error(error)
        return
    forget_pool()  # points may have moved
    _remember(decision)


def _remember(decision: approvals.Decision) -> None:
    """A debit's outcome card stays above the queue until the next decision; a batch's is a
    notice, shown once."""
    approval = decision.approval
    verb = "Approved" if approval.status == approvals.APPROVED else "Rejected"
    if decision.outcome is not None:
        st.session_state[_RESULT] = decision
        return
    st.session_state.pop(_RESULT, None)
    if approval.subject_kind == "budget":
        done = (
            " and ".join(
                f"the {_RULES[rule][0].lower()} is now {_rule_value(rule, value)}"
                for rule, value in approval.changes.items()
                if rule in _RULES
            )
            or "it applies"
            if approval.status == approvals.APPROVED
            else "the programme stays as it was"
        )
        set_notice("success", f"{verb} the change to {approval.programme_code}: {done}.")
        return
    started = (
        " It is sending now; follow it on the Bulk allocation page."
        if approval.status == approvals.APPROVED
        else " It was cancelled; nothing was sent."
    )
    set_notice("success", f"{verb} batch {approval.subject}.{started}")


def last_result() -> None:
    """What the approver's last click did, above the queue."""
    show_notices()
    decision = st.session_state.get(_RESULT)
    if decision is None or decision.outcome is None:
        return
    approval = decision.approval
    verb = "Approved" if approval.status == approvals.APPROVED else "Rejected"
    st.markdown(
        f"**{verb}** — the {approval.subject_kind} asked for by "
        f"**{md(display_name(approval.maker))}**, "
        f"decided by **{md(display_name(approval.decided_by or ''))}**:"
    )
    render_outcome(decision.outcome)


def request_card(approval: Approval) -> None:
    """One waiting request, with the comment box and the two decisions (not for its maker)."""
    me = operator()
    with st.container(border=True, key=f"approval_{approval.id}"):
        left, right = st.columns([3, 1])
        left.markdown(_what(approval))
        if approval.subject_kind == "budget":
            label, value, captions = _change_metric(approval)
            right.metric(label, value)
            for caption in captions:
                right.caption(caption)
        else:
            right.metric(
                {
                    "debit": "Points to debit",
                    "credit": "Points to credit",
                    "reversal": "Points to reverse",
                }.get(approval.subject_kind, "Batch total"),
                points(approval.amount),
            )
        facts = f"Asked by **{md(display_name(approval.maker))}** · {ist(approval.requested_at)}"
        if approval.subject_kind in approvals.SENT_ON_APPROVAL:
            facts += f" · reference {code(approval.subject)}"
        elif approval.subject_kind == "budget":
            pass
        else:
            facts += f" · batch {code(approval.subject)}"
        left.caption(facts)
        reason = approval.request.get("reason")
        if reason:
            left.caption(f"Reason: {md(reason)}")
        if approval.subject_kind in ("credit", "reversal"):
            closed = approvals.programme_not_open(desk().ledger, approval)
            if closed:
                left.warning(
                    md(closed) + ": approving sends nothing and closes the request.", icon="🚫"
                )
        card_id = approval.request.get("card_id")
        if card_id:
            known = desk().ledger.known_balance(card_id)
            if known is not None:
                right.caption(f"Card holds {points(known)}")
        if approval.maker == me and open_sandbox():
            st.caption(
                "Open sandbox: you may decide your own request here. Once sign-in is "
                "configured, a second person with the approver role has to."
            )
        elif approval.maker == me:
            st.info(
                "You asked for this: a second person with the approver role decides.", icon="👥"
            )
            return
        st.text_input(
            "Comment",
            key=f"approval_comment_{approval.id}",
            placeholder="Why you approve or reject (required to reject)",
            max_chars=200,
        )
        problem = st.session_state.pop(_comment_error(approval.id), None)
        if problem:
            st.error(md(problem), icon="✍️")
        approve_col, reject_col, _ = st.columns([1, 1, 3])
        approve_col.button(
            "Approve and send"
            if approval.subject_kind in approvals.SENT_ON_APPROVAL
            else "Approve the change"
            if approval.subject_kind == "budget"
            else "Approve and start",
            key=f"approve_{approval.id}",
            type="primary",
            on_click=_decide,
            args=(approval.id, True),
        )
        reject_col.button(
            "Reject", key=f"reject_{approval.id}", on_click=_decide, args=(approval.id, False)
        )


def _send_interrupted(approval_id: int) -> None:
    the_desk = desk()
    approval = approvals.get(the_desk.ledger, approval_id)
    if approval is None:
        return
    with the_desk.client() as client:
        outcome = approvals.send_approved(the_desk.ledger, client, approval)
    _remember(approvals.Decision(approval, outcome))


def _debit_words(approval: Approval) -> str:
    """A decided debit in the table: whose card, then its reference."""
    request = approval.request
    name, _ = approvals.holder(desk().ledger, request.get("card_id"), request.get("employee"))
    return f"debit from {name or request.get('card_id') or 'a card'} ({approval.subject})"


def decided_table(decided: list[Approval]) -> None:
    """The latest decisions, with what became of each approved debit."""
    ledger = desk().ledger
    rows = []
    for approval in decided:
        row = (
            ledger.get(approval.subject)
            if approval.subject_kind in approvals.SENT_ON_APPROVAL
            else None
        )
        if row is not None and row.status is Status.QUEUED and approval.status == "approved":
            st.warning(
                f"{approval.subject_kind.title()} {code(approval.subject)} was approved but its "
                "sending was interrupted.",
                icon="⏳",
            )
            st.button(
                "Send it now",
                key=f"send_{approval.id}",
                on_click=_send_interrupted,
                args=(approval.id,),
            )
        rows.append(
            {
                "Decided": ist(approval.decided_at, "%d %b, %H:%M"),
                "Decision": "✅ approved" if approval.status == "approved" else "⛔ rejected",
                "What": "batch " + approval.subject
                if approval.subject_kind == "batch"
                else _debit_words(approval)
                if approval.subject_kind == "debit"
                else "change to " + approval.programme_code
                if approval.subject_kind == "budget"
                else f"{approval.subject_kind} {approval.subject}",
                "Points": _decided_points(approval),
                "Asked by": display_name(approval.maker),
                "Decided by": display_name(approval.decided_by or ""),
                "Comment": approval.comment,
                "Now": row.status.value.lower() if row is not None else "—",
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
