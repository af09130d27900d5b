"""Pages under AppTest: the existing-card check on Create account, the picker, EnKash's holder."""

from __future__ import annotations

from decimal import Decimal

from services.employees import HolderCheck
from services.models import Status
from tests.test_pages_money import CREATE, CREDIT, DEBIT, fill_create, page_text

ZOYA = {
    "new_first_name": "Zoya",
    "new_email": "zoya@example.com",
    "new_mobile": "9600098867",
    "new_amount": "100",
}
# Rahul, typed with Zoya's mobile.
RAHUL = {
    "new_first_name": "Rahul",
    "new_email": "rahul@example.com",
    "new_mobile": "96000 98867",
    "new_amount": "10",
    "new_reason": "Referral bonus",
}


def create_account(app, title="Mr", gender="M", **fields):
    app.switch_page(CREATE).run()
    fill_create(app, **fields)
    app.selectbox(key="new_title").select(title)
    app.selectbox(key="new_gender").select(gender)
    app.button(key="create_submit").click().run()
    assert not app.exception, app.exception
    return app


def open_zoya(app, app_desk) -> str:
    create_account(app, title="Ms", gender="F", **ZOYA)
    (row,) = app_desk.ledger.rows()
    assert row.status is Status.SUCCEEDED
    app.button(key="create_new").click().run()
    return row.card_id


def test_a_create_for_a_mobile_with_a_card_names_the_holder_and_sends_nothing(app, app_desk):
    card = open_zoya(app, app_desk)
    create_account(app, **RAHUL)
    text = page_text(app)
    assert "This employee already has a card" in text
    assert "Ms Zoya" in text and "zoya@example.com" in text and card in text
    assert app_desk.sandbox.store.allocate_requests() == 1  # only Zoya's own create
    assert len(app_desk.ledger.rows()) == 1
    assert app.button(key=f"credit_instead_{card}").label == "Credit Zoya's card instead"
    assert not app.success  # no outcome card


def test_credit_instead_opens_the_credit_of_that_card_with_amount_and_reason(app, app_desk):
    card = open_zoya(app, app_desk)
    create_account(app, **RAHUL)
    app.button(key=f"credit_instead_{card}").click().run()
    assert not app.exception, app.exception
    assert app.text_input(key="credit_amount").value == "10"
    assert app.text_input(key="credit_reason").value == "Referral bonus"
    assert app.selectbox(key="credit_card").value == card
    assert app_desk.sandbox.store.allocate_requests() == 1  # still nothing sent
    # The script switched pages; AppTest's own notion of the page follows only its switch_page.
    app.switch_page(CREDIT)
    app.button(key="credit_submit").click().run()
    assert "10.00 points credited to Zoya" in app.success[0].value
    assert app_desk.sandbox.store.card_balance(card) == Decimal("110.00")
    rows = app_desk.ledger.rows()
    assert [r.kind.value for r in rows].count("credit") == 1 and len(rows) == 2
    # The create form was ended: it starts blank.
    app.switch_page(CREATE).run()
    assert app.text_input(key="new_first_name").value == ""
    assert "already has a card" not in page_text(app)


def test_stop_goes_back_to_the_form_with_the_values_and_sends_nothing(app, app_desk):
    open_zoya(app, app_desk)
    create_account(app, **RAHUL)
    app.button(key="create_stop").click().run()
    assert "already has a card" not in page_text(app)
    assert app.text_input(key="new_first_name").value == "Rahul"
    assert not app.button(key="create_submit").disabled
    assert app_desk.sandbox.store.allocate_requests() == 1


def test_a_create_is_held_when_enkash_search_cannot_be_asked(app, app_desk):
    app_desk.sandbox.knobs.fail_before_commit_rate = 1.0
    create_account(app)
    text = page_text(app)
    assert "did not answer" in text and "Nothing was sent" in text
    assert app_desk.sandbox.store.allocate_requests() == 0
    assert app_desk.ledger.rows() == []
    app_desk.sandbox.knobs.fail_before_commit_rate = 0
    app.button(key="create_check_again").click().run()
    assert "1,500.00 points credited to Ravi" in app.success[0].value


def test_the_outcome_warns_when_enkash_names_another_holder(app, app_desk, monkeypatch):
    card = open_zoya(app, app_desk)
    # The card appears between the check and the send (the sandbox cannot time that race).
    monkeypatch.setattr("ui.holders.existing_holders", lambda *args: HolderCheck())
    create_account(app, **RAHUL)
    assert app_desk.ledger.rows()[0].card_id == card
    assert "10.00 points credited to Zoya" in app.success[0].value
    text = page_text(app)
    assert "EnKash says this card belongs to Ms Zoya" in text and "not Rahul" in text
    assert "Card holder (as EnKash reports)" in text


def test_the_picker_chooses_only_when_one_card_matches(app, app_desk):
    create_account(app, new_first_name="Ravi", new_email="ravi@example.com")
    app.button(key="create_new").click().run()
    create_account(
        app, new_first_name="Ravindra", new_email="ravindra@example.com", new_mobile="9811122233"
    )
    app.switch_page(CREDIT).run()
    app.text_input(key="credit_query").input("ravi").run()
    picker = app.selectbox(key="credit_card")
    assert picker.value is None and picker.placeholder == "Choose the employee"
    assert "2 matches" in picker.label
    app.text_input(key="credit_query").input("ravi@example.com").run()
    (ravi,) = [r.card_id for r in app_desk.ledger.rows() if r.email == "ravi@example.com"]
    assert app.selectbox(key="credit_card").value == ravi


def test_the_debit_dialog_names_email_and_mobile(app, app_desk):
    create_account(app, new_amount="100")
    app.switch_page(DEBIT).run()
    app.text_input(key="debit_query").input("ravi").run()
    app.text_input(key="debit_amount").input("40")
    app.button(key="debit_submit").click().run()
    text = page_text(app)
    assert "ravi@example.com" in text and "96000 98867" in text
