"""Changes that loosen a programme's money rules, as the pages show them (AppTest): an operator's
raised debit threshold waits for a second person and the programme keeps the old one; the
approver sees what is asked and why, with the programme's name as typed, and approving applies
it; a bulk file the service will hold (a debit above its programme's own threshold, credits past
the operator's monthly limit) says "Queue for approval" before it is confirmed; a held credit
whose programme closed says that approving it sends nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services import approvals, movements, programmes
from services.allocations import new_reference
from services.models import Allocation, Status
from tests.markdown_support import markdown_strings, problems
from tests.test_bulk_page import BULK, content, upload
from tests.test_pages_money import page_text

PROGRAMMES, APPROVALS = "pages/programmes.py", "pages/approvals.py"

#: A programme name with a link, an image, HTML and emphasis in it (80 characters at most).
NAME = "PNAME [Go](//evil.example) ![](//evil.example) <a href=//x>a</a> **b** <b>h</b>"


def _programme(ledger, **rules):
    return ledger.create_programme(
        code="Q3", name=NAME, budget=Decimal(50_000), actor="boss", **rules
    )


def _clean(at) -> None:
    """Every Markdown string that holds the programme's name shows it as typed."""
    holding = [s for s in markdown_strings(at) if "PNAME" in s]
    assert holding, "the programme's name is never shown"
    assert {s: found for s in holding if (found := problems(s))} == {}


def _card(the_desk, amount: str = "5000") -> str:
    """A card with ``amount`` points (from General), made by someone else."""
    opening = Allocation.model_validate(
        {
            "reference": new_reference(),
            "kind": "create",
            "amount": amount,
            "employee": {
                "email": "priya@example.com",
                "mobile": "9800000001",
                "title": "Ms",
                "first_name": "Priya",
                "gender": "F",
            },
        }
    )
    with the_desk.client() as client:
        opened = movements.request(
            the_desk.ledger, client, opening, the_desk.settings, operator="setup"
        )
    assert opened.status is Status.SUCCEEDED
    return opened.row.card_id


@pytest.fixture
def people(desk_env):
    """Local accounts: asha (operator), vikram (approver); the Desk the apps use."""
    from tests.auth_support import write_secrets
    from ui.context import _desk

    write_secrets(desk_env)
    return _desk()


def test_an_operator_raising_a_debit_threshold_sees_it_wait_and_the_old_one_stays(people):
    from tests.auth_support import signed_in_app

    _programme(people.ledger, debit_threshold=Decimal(50))
    asha = signed_in_app("asha")
    asha.switch_page(PROGRAMMES).run()
    asha.selectbox(key="edit_prog_choice").select("Q3").run()
    assert asha.text_input(key="edit_prog_debit_threshold").value == "50.00"
    asha.text_input(key="edit_prog_debit_threshold").input("5,000")
    asha.text_input(key="edit_prog_owner").input("Meera")
    asha.button(key="edit_prog_submit").click().run()
    assert not asha.exception, asha.exception

    (notice,) = [w.value for w in asha.warning if "waiting for approval" in w.value]
    assert "waiting for approval by a second person (Approvals page): raise Q3's debit " in notice
    assert "approval limit from 50 to 5,000 points" in notice
    assert notice.endswith("Until then it keeps its debit approval limit of 50.00.")
    q3 = people.ledger.programme("Q3")
    assert q3.debit_threshold == Decimal(50)  # the old threshold still applies
    assert q3.owner == "Meera"  # what loosens nothing applies at once
    # The form shows what applies now, and says what waits.
    assert asha.text_input(key="edit_prog_debit_threshold").value == "50.00"
    waiting = [i.value for i in asha.info if i.value.startswith("Waiting for approval")]
    assert len(waiting) == 1 and "raise Q3's debit approval limit from 50 to 5,000" in waiting[0]
    (request,) = approvals.pending(people.ledger)
    assert request.subject_kind == "budget" and request.maker == "asha"
    assert request.changes == {"debit_threshold": Decimal(5000)}
    _clean(asha)  # the notice names the programme


def test_an_approver_sees_the_change_and_its_reasons_and_approving_applies_it(people):
    from tests.auth_support import signed_in_app

    _programme(people.ledger, debit_threshold=Decimal(50), monthly_operator_limit=Decimal(100))
    saved = programmes.save(
        people.ledger,
        people.settings,
        "Q3",
        {"debit_threshold": Decimal(5000), "monthly_operator_limit": None},
        actor="asha",
    )
    assert saved.raise_request is not None

    vikram = signed_in_app("vikram")
    vikram.switch_page(APPROVALS).run()
    assert not vikram.exception, vikram.exception
    (card,) = [m.value for m in vikram.markdown if str(m.value).startswith("Change to")]
    lines = card.split("  \n")
    assert lines[0].startswith("Change to **PNAME") and lines[0].endswith("** (`Q3`)")
    assert lines[1:] == [
        "raise Q3's debit approval limit from 50 to 5,000 points",
        "remove Q3's monthly limit per operator of 100 points",
    ]
    shown = {m.label: m.value for m in vikram.metric}
    assert shown == {"Programme change": "2 rules"}  # no "New budget": the budget is not asked
    captions = [c.value for c in vikram.caption]
    assert "Debit approval limit: 5,000.00" in captions
    assert "Monthly limit per operator: no limit" in captions
    _clean(vikram)

    (approve,) = [b for b in vikram.button if b.key and b.key.startswith("approve_")]
    assert approve.label == "Approve the change"
    approve.click().run()
    assert not vikram.exception, vikram.exception
    q3 = people.ledger.programme("Q3")
    assert q3.debit_threshold == Decimal(5000) and q3.monthly_operator_limit is None
    assert q3.budget == Decimal(50_000)  # not asked, not touched
    assert (
        "Approved the change to Q3: the debit approval limit is now 5,000.00 and the monthly "
        "limit per operator is now no limit." in page_text(vikram)
    )
    decided = vikram.dataframe[0].value
    assert decided["What"].tolist() == ["change to Q3"] and decided["Points"].tolist() == ["—"]


def test_a_rejected_change_leaves_the_programme_as_it_was(people):
    from tests.auth_support import signed_in_app

    _programme(people.ledger, debit_threshold=Decimal(50))
    programmes.save(
        people.ledger, people.settings, "Q3", {"debit_threshold": Decimal(5000)}, actor="asha"
    )
    vikram = signed_in_app("vikram")
    vikram.switch_page(APPROVALS).run()
    assert ("Programme change", "5,000.00") in [(m.label, m.value) for m in vikram.metric]
    assert "New debit approval limit" in [c.value for c in vikram.caption]
    (reject,) = [b for b in vikram.button if b.key and b.key.startswith("reject_")]
    vikram.text_input(key=f"approval_comment_{reject.key.split('_')[1]}").input("Not now")
    reject.click().run()
    assert not vikram.exception, vikram.exception
    assert people.ledger.programme("Q3").debit_threshold == Decimal(50)
    assert "Rejected the change to Q3: the programme stays as it was." in page_text(vikram)


def test_a_bulk_debit_above_its_programmes_own_threshold_queues_for_approval(app, app_desk):
    """60 points is far below the global 10,000, but above Q3's own 50: the service holds the
    batch, so the dialog says so before it is confirmed."""
    _programme(app_desk.ledger, debit_threshold=Decimal(50))
    card = _card(app_desk)
    app.switch_page(BULK).run()
    app.selectbox(key="bulk_programme").select("Q3").run()
    upload(app, "recover.csv", content(f"debit,,,,,,{card},60,Recovery"))
    app.button(key="bulk_send").click().run()
    assert not app.exception, app.exception
    assert app.button(key="bulk_confirm").label == "Queue for approval"
    (said,) = [i.value for i in app.info if i.value.startswith("This batch")]
    assert "holds a debit of 60 points (row 2), above the 50 debit limit of PNAME" in said
    assert "waits for a second person's approval" in said
    _clean(app)
    app.button(key="bulk_confirm").click().run()
    assert not app.exception, app.exception
    record = app_desk.ledger.list_batches()[0]
    assert record.state == "queued"  # held, as the dialog said
    assert app_desk.sandbox.store.card_balance(card) == Decimal("5000.00")


def test_a_bulk_file_past_the_operators_monthly_limit_queues_for_approval(app, app_desk):
    _programme(app_desk.ledger, monthly_operator_limit=Decimal(100))
    card = _card(app_desk)
    app.switch_page(BULK).run()
    app.selectbox(key="bulk_programme").select("Q3").run()
    upload(app, "bonus.csv", content(f"credit,,,,,,{card},150,Bonus"))
    app.button(key="bulk_send").click().run()
    assert not app.exception, app.exception
    assert app.button(key="bulk_confirm").label == "Queue for approval"
    (said,) = [i.value for i in app.info if i.value.startswith("This batch")]
    assert "credits 150 points in PNAME" in said and "monthly limit of 100 points" in said
    _clean(app)
    app.button(key="bulk_confirm").click().run()
    assert app_desk.ledger.list_batches()[0].state == "queued"


def test_a_small_bulk_file_still_sends_now(app, app_desk):
    _programme(app_desk.ledger, debit_threshold=Decimal(50), monthly_operator_limit=Decimal(100))
    card = _card(app_desk)
    app.switch_page(BULK).run()
    app.selectbox(key="bulk_programme").select("Q3").run()
    upload(app, "small.csv", content(f"debit,,,,,,{card},40,Fix", f"credit,,,,,,{card},90,Fix"))
    app.button(key="bulk_send").click().run()
    assert app.button(key="bulk_confirm").label == "Send now"
    assert not [i for i in app.info if i.value.startswith("This batch")]


def test_a_held_credit_of_a_closed_programme_says_approving_sends_nothing(app, app_desk):
    _programme(app_desk.ledger, monthly_operator_limit=Decimal(10))
    card = _card(app_desk, "100")
    credit = Allocation.model_validate(
        {
            "reference": new_reference(),
            "kind": "credit",
            "amount": "500",
            "card_id": card,
            "programme": "Q3",
            "reason": "Bonus",
        }
    )
    with app_desk.client() as client:
        held = movements.request(
            app_desk.ledger, client, credit, app_desk.settings, operator="asha"
        )
    assert held.status is Status.QUEUED
    programmes.close(app_desk.ledger, "Q3", actor="boss")
    sent = app_desk.sandbox.store.allocate_requests()

    app.switch_page(APPROVALS).run()
    assert not app.exception, app.exception
    (warned,) = [w.value for w in app.warning if "approving sends nothing" in w.value]
    assert warned.startswith("PNAME") and warned.endswith(
        " is closed: it takes no new credits: approving sends nothing and closes the request."
    )
    _clean(app)
    (approve,) = [b for b in app.button if b.key and b.key.startswith("approve_")]
    approve.click().run()
    assert not app.exception, app.exception
    assert any(
        "Not sent:" in w.value and "Nothing was sent and the request is closed" in w.value
        for w in app.warning
    )
    assert app_desk.sandbox.store.allocate_requests() == sent
    assert app_desk.ledger.get(held.row.reference).status is Status.FAILED
    assert approvals.pending(app_desk.ledger) == []


def test_a_new_programme_with_a_high_debit_threshold_takes_credits_but_waits_for_the_threshold(
    app, app_desk
):
    from tests.test_pages_programmes import fill_new

    app.switch_page(PROGRAMMES).run()
    fill_new(app, code="q4", budget="50,000", debit_threshold="25,000")
    q4 = app_desk.ledger.programme("Q4")
    assert q4.budget == Decimal(50_000) and q4.debit_threshold is None  # the global one for now
    (notice,) = [w.value for w in app.warning if "Created" in w.value]
    assert notice.startswith("Created Q3 sales incentive (Q4); waiting for approval by a second")
    assert "raise Q4's debit approval limit from the global 10,000 to 25,000 points" in notice
    assert notice.endswith("Until then the global debit approval threshold applies to it.")
