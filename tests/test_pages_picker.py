"""The employee picker under AppTest: its labels lead with the card id."""

from __future__ import annotations

from tests.test_pages_money import CREDIT
from tests.test_pages_person import create_account


def test_each_match_starts_with_its_card_id(app, app_desk):
    create_account(
        app, new_first_name="Ravi", new_email="ravi.subramanian.long-team-name@example.com"
    )
    app.button(key="create_new").click().run()
    create_account(
        app, new_first_name="Ravindra", new_email="ravindra@example.com", new_mobile="9811122233"
    )
    app.switch_page(CREDIT).run()
    app.text_input(key="credit_query").input("ravi").run()
    picker = app.selectbox(key="credit_card")
    cards = {r.card_id: r for r in app_desk.ledger.rows()}
    assert len(picker.options) == 2
    for label in picker.options:
        card, name, email, _mobile = label.split(" · ")
        assert card in cards, label  # first, so a phone's narrow box never cuts it off
        assert name == f"Mr {cards[card].first_name}" and email == cards[card].email
