"""Maker-checker: large debits wait for a second person; nothing is sent before approval."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path

import pytest

from services import approvals
from services.allocations import new_reference, submit
from services.approvals import AlreadyDecided, ApprovalError, SelfApproval
from services.config import load_settings
from services.desk import Desk
from services.models import Allocation, Status
from tests.auth_support import new_app, page_text, sign_in, write_secrets

EMPLOYEE = {
    "email": "ravi@example.com",
    "mobile": "9600098867",
    "title": "Mr",
    "first_name": "Ravi",
    "gender": "M",
}


@pytest.fixture
def desk(tmp_path: Path):
    desk = Desk(load_settings(secrets_file=None, points_desk_data_dir=tmp_path))
    yield desk
    desk.close()


def open_card(desk: Desk, amount: str = "50000") -> str:
    allocation = Allocation.model_validate(
        {"reference": new_reference(), "kind": "create", "amount": amount, "employee": EMPLOYEE}
    )
    with desk.client() as client:
        outcome = submit(desk.ledger, client, allocation, operator="asha")
    assert outcome.status is Status.SUCCEEDED
    return outcome.row.card_id


def debit(card_id: str, amount: str) -> Allocation:
    return Allocation.model_validate(
        {
            "reference": new_reference(),
            "kind": "debit",
            "amount": amount,
            "card_id": card_id,
            "employee": EMPLOYEE,
            "reason": "Reversal of duplicate award",
        }
    )


def test_thresholds_decide_which_debits_wait(tmp_path):
    settings = load_settings(secrets_file=None)
    assert not approvals.debit_needs_approval(Decimal("10000"), settings)
    assert approvals.debit_needs_approval(Decimal("10000.01"), settings)
    assert approvals.batch_needs_approval(Decimal("100000.01"), settings)
    every = load_settings(secrets_file=None, points_desk_approval_debit_threshold="0")
    assert approvals.debit_needs_approval(Decimal("0.01"), every)


def test_a_held_debit_is_not_sent_and_only_a_second_person_can_send_it(desk):
    card = open_card(desk)
    store = desk.sandbox.store
    sent_before = store.allocate_requests()
    allocation = debit(card, "15000")

    held = approvals.request_debit(desk.ledger, allocation, maker="asha", session_id="s1")
    assert held.headline == "Waiting for approval by a second person"
    assert held.row.status is Status.QUEUED and held.row.operator == "asha"
    # A double click or a rerun of the same form changes nothing.
    again = approvals.request_debit(desk.ledger, allocation, maker="asha")
    assert again.replayed and len(approvals.pending(desk.ledger)) == 1
    assert store.allocate_requests() == sent_before
    assert store.card_balance(card) == Decimal("50000.00")

    request = approvals.pending(desk.ledger)[0]
    with desk.client() as client, pytest.raises(SelfApproval):
        approvals.approve(desk.ledger, request.id, approver="asha", client=client)
    assert store.allocate_requests() == sent_before

    with desk.client() as client:
        decision = approvals.approve(
            desk.ledger, request.id, approver="vikram", comment="Checked with HR", client=client
        )
    row = decision.outcome.row
    assert row.status is Status.SUCCEEDED
    assert row.reference == allocation.reference  # the reference minted with the form
    assert row.operator == "asha" and row.approved_by == "vikram"
    assert store.allocate_requests() == sent_before + 1
    assert store.card_balance(card) == Decimal("35000.00")
    trail = desk.ledger.audit_trail(allocation.reference)
    assert trail[0].actor == "asha" and trail[0].to_status is Status.QUEUED
    assert any(e.actor == "vikram" and "Checked with HR" in e.detail for e in trail)
    assert trail[-1].to_status is Status.SUCCEEDED
    with desk.client() as client, pytest.raises(AlreadyDecided):
        approvals.approve(desk.ledger, request.id, approver="neha", client=client)
    assert store.allocate_requests() == sent_before + 1


def test_a_rejection_needs_a_comment_and_sends_nothing(desk):
    card = open_card(desk)
    sent_before = desk.sandbox.store.allocate_requests()
    allocation = debit(card, "20000")
    approvals.request_debit(desk.ledger, allocation, maker="asha")
    request = approvals.for_subject(desk.ledger, "debit", allocation.reference)
    with pytest.raises(ApprovalError, match="Say why"):
        approvals.reject(desk.ledger, request.id, approver="vikram", comment="  ")
    decision = approvals.reject(desk.ledger, request.id, approver="vikram", comment="Wrong card")
    assert decision.outcome.headline == "Rejected at approval: nothing was sent"
    row = desk.ledger.get(allocation.reference)
    assert row.status is Status.FAILED and "Wrong card" in row.enkash_message
    assert desk.sandbox.store.allocate_requests() == sent_before
    assert approvals.for_subject(desk.ledger, "debit", allocation.reference).status == "rejected"


def test_two_approvers_racing_send_the_debit_once(desk):
    card = open_card(desk)
    allocation = debit(card, "12000")
    approvals.request_debit(desk.ledger, allocation, maker="asha")
    request = approvals.pending(desk.ledger)[0]
    results: list[str] = []

    def decide(approver: str) -> None:
        with desk.client() as client:
            try:
                approvals.approve(desk.ledger, request.id, approver=approver, client=client)
                results.append("approved")
            except AlreadyDecided:
                results.append("late")

    threads = [threading.Thread(target=decide, args=(name,)) for name in ("vikram", "neha")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["approved", "late"]
    assert desk.sandbox.store.card_balance(card) == Decimal("38000.00")


def test_an_approval_whose_ledger_row_was_never_written_still_sends_exactly_that(desk):
    card = open_card(desk)
    allocation = debit(card, "11000")
    # The process stopped between writing the request and the intent.
    approvals._request(
        desk.ledger,
        "debit",
        allocation.reference,
        allocation.amount,
        "asha",
        allocation.model_dump(mode="json"),
    )
    request = approvals.pending(desk.ledger)[0]
    with desk.client() as client:
        decision = approvals.approve(desk.ledger, request.id, approver="vikram", client=client)
    assert decision.outcome.row.status is Status.SUCCEEDED
    assert decision.outcome.row.approved_by == "vikram"
    assert desk.sandbox.store.card_balance(card) == Decimal("39000.00")


def test_batches_are_approved_for_their_runner_without_sending(desk):
    sent_before = desk.sandbox.store.allocate_requests()
    request = approvals.request_batch(desk.ledger, "B-2026-01", Decimal("250000"), "asha")
    assert request.pending and not approvals.is_approved(desk.ledger, "B-2026-01")
    with pytest.raises(SelfApproval):
        approvals.approve(desk.ledger, request.id, approver="asha")
    approvals.approve(desk.ledger, request.id, approver="vikram", comment="Quarterly run")
    assert approvals.is_approved(desk.ledger, "B-2026-01")
    assert not approvals.is_approved(desk.ledger, "B-other")
    assert desk.sandbox.store.allocate_requests() == sent_before


def test_nobody_approves_their_own_request_under_another_identity(desk):
    """The same person signed in locally and through SSO, or under the same display name, is
    one person: their request waits for someone else."""
    from services.auth import Person, oidc_person, parse_auth_config

    config = parse_auth_config(
        {
            "points_desk": {
                "users": {
                    "asha": {
                        "name": "Asha Menon",
                        "roles": ["operator", "approver"],
                        "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$x$y",
                        "email": "asha@example.com",
                    },
                    "vikram": {
                        "name": "Vikram Rao",
                        "roles": ["approver"],
                        "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$x$y",
                    },
                },
                "oidc_roles": {"@example.com": ["approver"], "@elsewhere.com": ["approver"]},
            }
        }
    )
    local_asha = Person("asha", "Asha Menon", frozenset({"approver"}), "local", "asha@example.com")
    sso_asha = oidc_person(config, {"email": "asha@example.com", "email_verified": True})
    same_name = oidc_person(
        config, {"email": "a.menon@elsewhere.com", "email_verified": True, "name": "asha  MENON"}
    )
    cases = [
        ("asha", sso_asha),  # asked locally, approving through SSO
        ("asha@example.com", local_asha),  # asked through SSO (as the email), approving locally
        ("asha", same_name),  # another account, the same display name
    ]
    for number, (maker, approver) in enumerate(cases):
        batch = f"B-SELF-{number}"
        request = approvals.request_batch(desk.ledger, batch, Decimal("250000"), maker)
        identities = config.identities(approver)
        with pytest.raises(SelfApproval):
            approvals.approve(desk.ledger, request.id, approver=approver.id, identities=identities)
        with pytest.raises(SelfApproval):
            approvals.reject(
                desk.ledger, request.id, approver=approver.id, comment="x", identities=identities
            )
        assert approvals.get(desk.ledger, request.id).pending, (maker, approver)
    # Someone else may; and in the open sandbox the one person still may decide their own.
    vikram = Person("vikram", "Vikram Rao", frozenset({"approver"}), "local")
    approvals.approve(
        desk.ledger, request.id, approver="vikram", identities=config.identities(vikram)
    )
    assert approvals.is_approved(desk.ledger, "B-SELF-2")
    alone = approvals.request_batch(desk.ledger, "B-ALONE", Decimal("250000"), "asha")
    approvals.approve(
        desk.ledger,
        alone.id,
        approver="asha",
        identities=config.identities(local_asha),
        allow_self=True,
    )
    assert approvals.is_approved(desk.ledger, "B-ALONE")


def test_the_debit_page_holds_a_large_debit_and_the_approver_sends_it(desk_env):
    from ui.context import _desk

    write_secrets(desk_env)
    maker = new_app()
    maker.run()
    sign_in(maker, "asha")
    maker.switch_page("pages/create_account.py").run()
    for key, value in {
        "new_first_name": "Ravi",
        "new_email": "ravi@example.com",
        "new_mobile": "9600098867",
        "new_amount": "50000",
    }.items():
        maker.text_input(key=key).input(value)
    maker.selectbox(key="new_title").select("Mr")
    maker.selectbox(key="new_gender").select("M")
    maker.button(key="create_submit").click().run()
    the_desk = _desk()
    store = the_desk.sandbox.store
    card = the_desk.ledger.rows()[0].card_id

    maker.switch_page("pages/debit.py").run()
    maker.text_input(key="debit_query").input("ravi").run()
    maker.text_input(key="debit_amount").input("15000")
    maker.button(key="debit_submit").click().run()
    assert "goes for approval" in page_text(maker)
    assert maker.button(key="debit_confirm").label == "Send for approval"
    maker.button(key="debit_confirm").click().run()
    assert not maker.exception, maker.exception
    assert "Waiting for approval by a second person" in page_text(maker)
    assert store.allocate_requests() == 1  # only the create
    held = the_desk.ledger.rows(order="-created_at")[0]
    assert held.status is Status.QUEUED and held.operator == "asha"

    approver = new_app()
    approver.run()
    sign_in(approver, "vikram")
    approver.switch_page("pages/approvals.py").run()
    assert "Debit from **Mr Ravi**" in page_text(approver)
    approver.text_input(key="approval_comment_1").input("Confirmed with HR")
    approver.button(key="approve_1").click().run()
    assert not approver.exception, approver.exception
    assert "15,000.00 points debited from Ravi" in page_text(approver)
    row = the_desk.ledger.get(held.reference)
    assert row.status is Status.SUCCEEDED and row.approved_by == "vikram"
    assert store.card_balance(card) == Decimal("35000.00")


def test_the_maker_sees_no_decision_buttons_on_their_own_request(desk_env):
    from ui.context import _desk

    write_secrets(desk_env)
    at = new_app()
    at.run()
    sign_in(at, "neha")  # operator and approver
    card = open_card(_desk())
    approvals.request_debit(_desk().ledger, debit(card, "12000"), maker="neha")
    at.switch_page("pages/approvals.py").run()
    assert "You asked for this" in page_text(at)
    assert not [button for button in at.button if button.key.startswith("approve_")]


def test_approving_a_batch_on_the_page_starts_it(desk_env, monkeypatch):
    from services import bulk
    from ui.context import _desk

    monkeypatch.setenv("POINTS_DESK_APPROVAL_BATCH_THRESHOLD", "500")
    write_secrets(desk_env)
    approver = new_app()
    approver.run()
    sign_in(approver, "vikram")
    the_desk = _desk()
    lines = [f"create,Emp,Ms,F,emp{n}@example.com,98{n:08d},,{200 + n},Q3" for n in range(4)]
    content = "kind,first_name,title,gender,email,mobile,card_id,amount,reason\n" + "\n".join(lines)
    preview = bulk.preview_upload(
        the_desk.ledger, the_desk.client, the_desk.settings, "q3.csv", content.encode()
    )
    record = bulk.queue_batch(the_desk.ledger, preview, operator="asha")
    assert bulk.needs_approval(the_desk.ledger, the_desk.settings, record)
    approvals.request_batch(the_desk.ledger, record.batch_id, bulk.batch_total(record), "asha")

    approver.switch_page("pages/approvals.py").run()
    assert "Batch **q3.csv** · 4 rows" in page_text(approver)
    assert approver.button(key="approve_1").label == "Approve and start"
    approver.button(key="approve_1").click().run()
    assert not approver.exception, approver.exception
    assert "It is sending now" in page_text(approver)
    assert the_desk.runner.wait(record.batch_id, timeout=60)
    rows = the_desk.ledger.rows(batch_id=record.batch_id)
    assert [r.status for r in rows] == [Status.SUCCEEDED] * 4
    assert the_desk.sandbox.store.commit_count() == 4


def test_in_the_open_sandbox_the_one_person_decides_their_own_request(app, app_desk):
    person = app.session_state["_person"]  # whom the gate admitted: no sign-in, every role
    assert person.method == "sandbox"
    card = open_card(app_desk)
    approvals.request_debit(app_desk.ledger, debit(card, "12000"), maker=person.id)
    app.switch_page("pages/approvals.py").run()
    assert "Open sandbox: you may decide your own request" in page_text(app)
    app.button(key="approve_1").click().run()
    assert not app.exception, app.exception
    assert app_desk.sandbox.store.card_balance(card) == Decimal("38000.00")


def test_the_menu_count_follows_what_waits(desk):
    card = open_card(desk)
    assert approvals.pending_count(desk.ledger) == 0
    approvals.request_debit(desk.ledger, debit(card, "12000"), maker="asha")
    approvals.request_batch(desk.ledger, "B-1", Decimal("200000"), "asha")
    assert approvals.pending_count(desk.ledger) == 2
    request = approvals.pending(desk.ledger)[0]
    approvals.reject(desk.ledger, request.id, approver="vikram", comment="Not this month")
    assert approvals.pending_count(desk.ledger) == 1
    assert desk.ledger.count([Status.FAILED]) == 1
    assert desk.ledger.count([Status.SUCCEEDED, Status.FAILED]) == 2


def test_outside_the_open_sandbox_self_approval_stays_refused(desk):
    card = open_card(desk)
    approvals.request_debit(desk.ledger, debit(card, "12000"), maker="asha")
    request = approvals.pending(desk.ledger)[0]
    with desk.client() as client, pytest.raises(SelfApproval):
        approvals.approve(desk.ledger, request.id, approver="asha", client=client)
    assert approvals.get(desk.ledger, request.id).pending


def test_history_names_held_and_rejected_debits_in_words(desk):
    from ui.history import table

    card = open_card(desk)
    approvals.request_debit(desk.ledger, debit(card, "12000"), maker="asha")
    approvals.request_debit(desk.ledger, debit(card, "13000"), maker="asha")
    first = approvals.pending(desk.ledger)[0]
    approvals.reject(desk.ledger, first.id, approver="vikram", comment="Not agreed")
    shown = table(desk.ledger.rows(order="created_at"))
    assert list(shown["Status"]) == ["Succeeded", "Rejected", "Awaiting approval"]
