"""Programmes in the pages: the forms pick one, a budget refusal shows how much is left."""

from __future__ import annotations

from decimal import Decimal

from services.models import Status
from tests.test_pages_money import CREATE, CREDIT, fill_create, page_text


def make_programme(app_desk, code="Q3", name="Q3 sales incentive", budget="1000", **extra):
    return app_desk.ledger.create_programme(
        code=code, name=name, budget=Decimal(budget), actor="test", **extra
    )


def test_create_account_counts_against_the_chosen_programme(app, app_desk):
    make_programme(app_desk)
    app.switch_page(CREATE).run()
    assert app.selectbox(key="new_programme").value == "GENERAL"
    fill_create(app, new_amount="600")
    app.selectbox(key="new_programme").select("Q3")
    app.button(key="create_submit").click().run()
    assert not app.exception, app.exception
    row = app_desk.ledger.rows()[0]
    assert row.status is Status.SUCCEEDED
    q3 = app_desk.ledger.programme("Q3")
    assert q3.remaining == Decimal("400.00")
    # The next form opens on the programme this person used last.
    app.switch_page(CREDIT).run()
    app.text_input(key="credit_query").input("ravi").run()
    assert app.selectbox(key="credit_programme").value == "Q3"


def test_a_credit_past_the_budget_is_refused_next_to_the_programme(app, app_desk):
    make_programme(app_desk)
    app.switch_page(CREATE).run()
    fill_create(app, new_amount="600")
    app.selectbox(key="new_programme").select("Q3")
    app.button(key="create_submit").click().run()
    app.switch_page(CREDIT).run()
    app.text_input(key="credit_query").input("ravi").run()
    app.text_input(key="credit_amount").input("500")
    app.selectbox(key="credit_programme").select("Q3")
    app.button(key="credit_submit").click().run()
    assert not app.exception, app.exception
    text = page_text(app)
    assert "Q3 sales incentive has 400.00 points left, not enough for 500.00" in text
    assert len(app_desk.ledger.rows()) == 1  # nothing recorded
    assert app_desk.sandbox.store.allocate_requests() == 1  # nothing sent
    # The form is open again with what was typed: a smaller credit fits.
    assert not app.button(key="credit_submit").disabled
    app.text_input(key="credit_amount").input("400")
    app.button(key="credit_submit").click().run()
    assert "400.00 points credited to Ravi" in app.success[0].value
    assert app_desk.ledger.programme("Q3").remaining == Decimal("0.00")
