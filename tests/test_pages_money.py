"""Create, credit and debit pages under AppTest, against the embedded sandbox."""

from __future__ import annotations

from decimal import Decimal

from services.models import Status

CREATE = "pages/create_account.py"
CREDIT = "pages/credit.py"
DEBIT = "pages/debit.py"


def fill_create(at, **overrides):
    values = {
        "new_first_name": "Ravi",
        "new_email": "ravi@example.com",
        "new_mobile": "+91 96000 98867",
        "new_amount": "1500",
        "new_reason": "Q3 incentive",
        **overrides,
    }
    for key, value in values.items():
        if key not in ("title", "gender"):
            at.text_input(key=key).input(value)
    at.selectbox(key="new_title").select(overrides.get("title", "Mr"))
    at.selectbox(key="new_gender").select(overrides.get("gender", "M"))
    return at


def create_account(at, **overrides):
    at.switch_page(CREATE).run()
    fill_create(at, **overrides)
    at.button(key="create_submit").click().run()
    assert not at.exception, at.exception
    return at


def page_text(at) -> str:
    parts = []
    for kind in ("markdown", "success", "error", "warning", "info", "caption", "text"):
        parts.extend(element.value for element in getattr(at, kind))
    return "\n".join(str(part) for part in parts)


def test_create_account_opens_a_card_and_shows_the_outcome(app, app_desk):
    create_account(app)
    rows = app_desk.ledger.rows()
    assert len(rows) == 1
    row = rows[0]
    assert row.status is Status.SUCCEEDED
    assert row.amount == Decimal("1500.00")
    assert row.mobile == "9600098867" and row.email == "ravi@example.com"
    assert app_desk.sandbox.store.card_balance(row.card_id) == Decimal("1500.00")
    assert "1,500.00 points credited to Ravi" in app.success[0].value
    text = page_text(app)
    assert row.card_id in text and row.transaction_id in text
    assert "EnKash echoed this reference" in text


def test_every_invalid_field_gets_its_own_message_and_nothing_is_sent(app, app_desk):
    app.switch_page(CREATE).run()
    for key, value in {
        "new_first_name": "R2D2",
        "new_email": "not-an-email",
        "new_mobile": "12345",
        "new_amount": "1e3",
    }.items():
        app.text_input(key=key).input(value)
    app.button(key="create_submit").click().run()
    text = page_text(app)
    assert "First name can hold letters" in text
    assert "Not a valid email address" in text
    assert "10-digit Indian mobile number" in text
    assert "Enter the points as a number" in text
    assert "Title must be one of Mr, Mrs, Ms" in text
    assert "Gender must be one of M, F" in text
    assert app_desk.ledger.rows() == []
    assert app_desk.sandbox.store.allocate_requests() == 0


def click_in_flight(at, key):
    """A click the browser sent before the page disabled the button: it still reaches the app."""
    button = at.button(key=key)
    button.proto.disabled = False
    return button.click().run()


def test_a_double_click_makes_exactly_one_enkash_transaction(app, app_desk):
    app.switch_page(CREATE).run()
    fill_create(app)
    app.button(key="create_submit").click().run()
    assert app.button(key="create_submit").disabled
    click_in_flight(app, "create_submit")
    app.run()
    assert app_desk.sandbox.store.commit_count() == 1
    assert app_desk.sandbox.store.allocate_requests() == 1
    assert len(app_desk.ledger.rows()) == 1


def test_a_second_tab_on_the_same_form_replays_instead_of_sending(app, app_desk):
    from streamlit.testing.v1 import AppTest

    create_account(app)
    reference = app_desk.ledger.rows()[0].reference
    assert app.query_params["create_ref"] == reference
    # A duplicated tab carries the same URL, hence the same reference.
    second = AppTest.from_file(app._script_path, default_timeout=30)
    second.query_params["create_ref"] = reference
    second.run()
    second.switch_page(CREATE).run()
    second.query_params["create_ref"] = reference
    text = page_text(second)
    assert "already submitted" in text or reference in text
    assert app_desk.sandbox.store.commit_count() == 1


def test_a_twin_tab_asking_for_another_transaction_under_a_used_reference_sends_nothing(
    app, app_desk
):
    """Two tabs of one form share its reference until one sends. The other, filled in with
    something else, is not shown the first one's outcome as its own: it is told, sends nothing,
    and gets a new reference with what was typed kept."""
    from streamlit.testing.v1 import AppTest

    app.switch_page(CREATE).run()
    reference = app.query_params["create_ref"]
    twin = AppTest.from_file(app._script_path, default_timeout=30)
    twin.query_params["create_ref"] = reference
    twin.run()
    twin.query_params["create_ref"] = reference
    twin.switch_page(CREATE).run()
    fill_create(app)
    app.button(key="create_submit").click().run()
    asha = {"new_first_name": "Asha", "new_email": "asha@example.com", "new_amount": "5000"}
    fill_create(twin, **asha, new_mobile="9600098868", title="Ms", gender="F")
    twin.button(key="create_submit").click().run()
    assert not twin.exception, twin.exception
    assert not twin.success
    assert "was already used, in another tab or window of this form" in twin.error[0].value
    assert app_desk.sandbox.store.commit_count() == 1
    renewed = twin.query_params["create_ref"]
    assert renewed != reference and twin.text_input(key="new_amount").value == "5000"
    twin.button(key="create_submit").click().run()
    assert "5,000.00 points credited to Asha" in twin.success[0].value
    assert sorted(row.amount for row in app_desk.ledger.rows()) == [1500, 5000]
    assert app_desk.ledger.get(renewed).first_name == "Asha"


def test_credit_beyond_the_pool_is_refused_in_words(app, app_desk):
    create_account(app)
    app_desk.sandbox.store.set_pool_balance(Decimal("100"))
    app.switch_page(CREDIT).run()
    app.text_input(key="credit_query").input("ravi").run()
    app.text_input(key="credit_amount").input("500")
    app.button(key="credit_submit").click().run()
    assert "EnKash refused this transaction" in app.error[0].value
    assert "Insufficient balance" in app.error[0].value
    credit = next(row for row in app_desk.ledger.rows() if row.kind.value == "credit")
    assert credit.status is Status.FAILED


def test_credit_tops_up_the_card_and_the_picker_shows_the_new_balance(app, app_desk):
    create_account(app)
    app.switch_page(CREDIT).run()
    app.text_input(key="credit_query").input("96000 98867").run()
    app.text_input(key="credit_amount").input("250.50")
    app.button(key="credit_submit").click().run()
    assert "250.50 points credited to Ravi" in app.success[0].value
    card_id = app_desk.ledger.rows()[0].card_id
    assert app_desk.sandbox.store.card_balance(card_id) == Decimal("1750.50")
    assert app_desk.ledger.known_balance(card_id) == Decimal("1750.50")


def test_debit_above_the_known_balance_is_refused_locally(app, app_desk):
    create_account(app, new_amount="100")
    app.switch_page(DEBIT).run()
    app.text_input(key="debit_query").input("ravi@example.com").run()
    app.text_input(key="debit_amount").input("100.01")
    app.button(key="debit_submit").click().run()
    assert "The card holds 100.00 points" in page_text(app)
    assert app_desk.sandbox.store.allocate_requests() == 1  # only the create


def test_debit_asks_for_confirmation_then_takes_points_back(app, app_desk):
    create_account(app, new_amount="100")
    pool_before = app_desk.sandbox.store.pool_balance()
    app.switch_page(DEBIT).run()
    app.text_input(key="debit_query").input("ravi").run()
    app.text_input(key="debit_amount").input("40")
    app.button(key="debit_submit").click().run()
    assert app_desk.sandbox.store.allocate_requests() == 1  # nothing sent before confirming
    text = page_text(app)
    assert "Debit **40.00 points** from this card?" in text
    # The dialog names the person by name, email and mobile, not only the name.
    assert "Mr Ravi" in text and "ravi@example.com" in text and "96000 98867" in text
    app.button(key="debit_confirm").click().run()
    assert "40.00 points debited from Ravi" in app.success[0].value
    card_id = app_desk.ledger.rows()[0].card_id
    assert app_desk.sandbox.store.card_balance(card_id) == Decimal("60.00")
    assert app_desk.sandbox.store.pool_balance() == pool_before + Decimal("40.00")


def test_cancelling_the_debit_dialog_sends_nothing(app, app_desk):
    create_account(app, new_amount="100")
    app.switch_page(DEBIT).run()
    app.text_input(key="debit_query").input("ravi").run()
    app.text_input(key="debit_amount").input("40")
    app.button(key="debit_submit").click().run()
    app.button(key="debit_cancel").click().run()
    assert app_desk.sandbox.store.allocate_requests() == 1
    assert len(app_desk.ledger.rows()) == 1


def test_an_unknown_outcome_is_explained_and_not_resent(app, app_desk):
    app_desk.sandbox.knobs.error_after_commit_rate = 1.0
    create_account(app)
    row = app_desk.ledger.rows()[0]
    assert row.status is Status.UNKNOWN
    assert "Outcome unknown" in app.warning[0].value
    assert "will not be sent again" in app.warning[0].value
    app_desk.sandbox.knobs.error_after_commit_rate = 0
    click_in_flight(app, "create_submit")
    assert app_desk.sandbox.store.allocate_requests() == 1


def test_sandbox_badge_shows_on_every_page_and_the_sidebar_shows_the_pool(app, app_desk):
    # AppTest drops the sidebar after switch_page (a test-harness limit); the browser test
    # checks the sidebar on every page, so here it is read on the first page.
    labels = [metric.label for metric in app.sidebar.metric]
    assert "Pool balance" in labels
    assert app.sidebar.metric[labels.index("Pool balance")].value == "1,00,00,000.00"
    for page in ("pages/overview.py", CREATE, CREDIT, DEBIT):
        app.switch_page(page).run()
        assert not app.exception
        assert "Sandbox — no real points move" in page_text(app)


def test_the_sent_form_keeps_showing_what_was_sent(app, app_desk):
    create_account(app)
    assert app.text_input(key="new_first_name").value == "Ravi"
    assert app.text_input(key="new_first_name").disabled
    assert app.text_input(key="new_amount").value == "1500"
    app.button(key="create_new").click().run()
    assert app.text_input(key="new_first_name").value == ""
    assert not app.button(key="create_submit").disabled


def test_edit_and_try_again_keeps_the_values_under_a_new_reference(app, app_desk):
    create_account(app)
    app_desk.sandbox.store.set_pool_balance(Decimal("100"))
    app.switch_page(CREDIT).run()
    app.text_input(key="credit_query").input("ravi").run()
    app.text_input(key="credit_amount").input("500")
    app.button(key="credit_submit").click().run()
    refused = app.query_params["credit_ref"]
    app.button(key="credit_retry").click().run()
    assert app.text_input(key="credit_amount").value == "500"
    assert app.query_params["credit_ref"] != refused
    app.text_input(key="credit_amount").input("50")
    app.button(key="credit_submit").click().run()
    assert "50.00 points credited to Ravi" in app.success[0].value


def test_the_debit_page_says_the_approval_limit_before_any_dialog(app):
    app.switch_page(DEBIT).run()
    assert not app.exception
    captions = [c.value for c in app.caption]
    assert (
        "Debits above 10,000 points wait for a second person's approval before anything is sent."
        in captions
    )
