"""Under AppTest: the sidebar search opens a transaction (History with its details) or an
employee (their page: card, balances, every movement, credit and debit)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services import movements
from services.allocations import new_reference
from services.models import Allocation, Kind
from tests.conftest import app_with_search, run_app
from tests.test_employees import ZOYA as ZOYA_EMPLOYEE
from tests.test_pages_money import CREDIT, page_text
from tests.test_pages_person import ZOYA, open_zoya

EMPLOYEE = "pages/employee.py"


def _move(app_desk, kind: Kind, amount: str, card: str | None = None):
    """A transaction made through the one use case (as a page would), not through a page: an
    AppTest that switched pages runs that page alone, without app.py's sidebar."""
    allocation = Allocation(
        reference=new_reference(),
        kind=kind,
        amount=amount,
        card_id=card,
        employee=ZOYA_EMPLOYEE if kind is Kind.CREATE else None,
    )
    with app_desk.client() as client:
        outcome = movements.request(
            app_desk.ledger, client, allocation, app_desk.settings, operator="asha"
        )
    return outcome.row


@pytest.fixture
def app(desk_env):
    """The app with the sidebar's search box (it comes with the Overview's charts)."""
    return app_with_search()


def _search(app, query: str):
    app.sidebar.text_input(key="sidebar_search").input(query).run()
    assert not app.exception, app.exception
    return app


def _credit(app, card: str, amount: str) -> str:
    app.switch_page(CREDIT).run()
    app.text_input(key="credit_query").input(card).run()
    app.text_input(key="credit_amount").input(amount)
    app.text_input(key="credit_reason").input("Festive bonus")
    app.button(key="credit_submit").click().run()
    assert not app.exception, app.exception
    return app.query_params["credit_ref"][0] if "credit_ref" in app.query_params else ""


def test_a_reference_in_the_sidebar_search_opens_history_on_that_transaction(app, app_desk):
    card = _move(app_desk, Kind.CREATE, "100").card_id
    credit = _move(app_desk, Kind.CREDIT, "25", card)
    _search(app, f" {credit.reference.lower()} ")
    assert app.title[0].value == "History"
    assert app.selectbox(key="history_detail").value == credit.reference
    text = page_text(app)
    assert f"`{credit.reference}`" in text and "Credit of 25.00 points" in text
    audit = app.dataframe[0].value  # the focused transaction comes first, with its trail
    assert "At (IST)" in audit.columns and len(audit) >= 2  # recorded, then succeeded


def test_a_card_id_in_the_sidebar_search_opens_the_employee(app, app_desk):
    card = _move(app_desk, Kind.CREATE, "100").card_id
    _move(app_desk, Kind.CREDIT, "25", card)
    _search(app, card.lower())
    assert app.title[0].value == "Ms Zoya"
    text = page_text(app)
    assert card in text and ZOYA["new_email"] in text and "96000 98867" in text
    balances = {m.label: m.value for m in app.metric}
    assert balances["Known balance"] == balances["Balance at EnKash"] == "125.00"
    table = app.dataframe[0].value
    assert list(table["Kind"]) == ["Credit", "Create"]  # newest first
    assert list(table["Points"]) == ["25.00", "100.00"]


def test_a_name_lists_the_matches_each_opening_its_employee(app, app_desk):
    card = _move(app_desk, Kind.CREATE, "100").card_id
    _search(app, "zoy")
    assert app.title[0].value == "Overview"  # a list to choose from, not a guess
    # (AppTest drops the sidebar after the first run; the browser test clicks the list.)
    found = app.session_state["_search_result"]
    assert [e.card_id for e in found.employees] == [card]


def test_the_employee_page_credit_button_opens_the_credit_form_with_the_card(app, app_desk):
    card = open_zoya(app, app_desk)
    app.switch_page(EMPLOYEE)
    app.query_params["card"] = card
    app.run()
    assert not app.exception, app.exception
    app.button(key="employee_credit").click().run()
    assert not app.exception, app.exception
    app.switch_page(CREDIT)  # the script switched; AppTest follows only its own switch_page
    assert app.selectbox(key="credit_card").value == card
    app.text_input(key="credit_amount").input("40")
    app.button(key="credit_submit").click().run()
    assert "40.00 points credited to Zoya" in app.success[0].value
    assert app_desk.sandbox.store.card_balance(card) == Decimal("140.00")


def test_an_unknown_card_says_so(app, app_desk):
    app.switch_page(EMPLOYEE)
    app.query_params["card"] = "EKC0000000000"
    app.run()
    assert not app.exception, app.exception
    assert "No card `EKC0000000000` in Points Desk or at EnKash" in page_text(app)


def test_an_outcome_card_links_to_its_history_row(app, app_desk):
    card = open_zoya(app, app_desk)
    _credit(app, card, "25")
    credit = next(r for r in app_desk.ledger.rows() if r.kind.value == "credit")
    links = [p for p in app.get("page_link") if p.proto.label == "See it in History"]
    assert len(links) == 1 and f"ref={credit.reference}" in links[0].proto.query_string


def test_the_search_box_comes_with_the_overviews_charts_in_a_sessions_first_look(desk_env):
    """A fresh browser fetches the scripts of every kind of element before drawing them: the
    first drawing leaves the box out (its place kept), and the timer's run 2 s later draws it."""
    first = run_app()
    assert [box.key for box in first.sidebar.text_input] == []
    assert "Pool balance" in [m.label for m in first.metric]  # the figures are not held back
    assert [box.key for box in app_with_search().sidebar.text_input] == ["sidebar_search"]
