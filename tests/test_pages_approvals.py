"""The approval words under AppTest: whose card a held debit is, and where a missing comment
is said."""

from __future__ import annotations

from services import approvals
from services.allocations import new_reference
from services.models import Allocation, Status
from tests.test_approvals import EMPLOYEE, open_card
from tests.test_pages_money import CREATE, DEBIT, fill_create, page_text

APPROVALS = "pages/approvals.py"


def held_debit(card_id: str, amount: str = "12000", employee: dict | None = None) -> Allocation:
    """A debit as a card-id-only caller makes it (no employee details with it)."""
    return Allocation.model_validate(
        {
            "reference": new_reference(),
            "kind": "debit",
            "amount": amount,
            "card_id": card_id,
            "employee": employee,
            "reason": "Reversal of duplicate award",
        }
    )


def walk(node):
    """Every element under ``node`` in page order (blocks opened)."""
    children = getattr(node, "children", None)
    if children is None:
        yield node
        return
    for key in sorted(children):
        yield from walk(children[key])


def test_the_waiting_card_names_the_amount_and_the_employee(app, app_desk):
    app.switch_page(CREATE).run()
    fill_create(app, new_amount="50000")
    app.button(key="create_submit").click().run()
    card = app_desk.ledger.rows()[0].card_id
    app.switch_page(DEBIT).run()
    app.text_input(key="debit_query").input("ravi").run()
    app.text_input(key="debit_amount").input("15000")
    app.button(key="debit_submit").click().run()
    app.button(key="debit_confirm").click().run()
    assert not app.exception, app.exception
    text = page_text(app)
    assert "Waiting for approval by a second person" in text
    assert "15,000.00 points to debit from Mr Ravi" in text
    assert f"(card {card})" in text
    assert "**Points**  \n15,000.00" in text  # the facts say what is asked, not EnKash's reply
    assert app_desk.ledger.rows(order="-created_at")[0].status is Status.QUEUED


def test_a_held_debit_sent_with_the_card_id_only_is_named_from_the_ledger(app_desk):
    card = open_card(app_desk)
    held = approvals.request_debit(app_desk.ledger, held_debit(card), maker="asha")
    assert held.row.first_name is None  # nothing but the card id came with it
    assert f"12,000.00 points to debit from Mr Ravi · ravi@example.com (card {card})" in (
        held.explanation
    )


def test_the_queue_names_the_employee_even_when_the_request_holds_only_the_card(app, app_desk):
    card = open_card(app_desk)
    approvals.request_debit(app_desk.ledger, held_debit(card), maker="asha")
    approvals.request_debit(
        app_desk.ledger, held_debit(card, "13000", EMPLOYEE), maker="asha"
    )  # one with the details
    app.switch_page(APPROVALS).run()
    cards = [m.value for m in app.markdown if str(m.value).startswith("Debit from")]
    assert len(cards) == 2
    for shown in cards:
        assert shown.startswith("Debit from **Mr Ravi**"), shown
        assert f"Card `{card}`" in shown
    first = approvals.pending(app_desk.ledger)[0]
    approvals.reject(app_desk.ledger, first.id, approver="vikram", comment="Not agreed")
    app.run()
    decided = app.dataframe[0].value
    assert decided["What"][0] == f"debit from Mr Ravi ({first.subject})"


def test_a_reject_without_a_comment_is_said_under_that_comment_box(app, app_desk):
    card = open_card(app_desk)
    person = app.session_state["_person"]
    for amount in ("12000", "13000"):
        approvals.request_debit(app_desk.ledger, held_debit(card, amount), maker=person.id)
    app.switch_page(APPROVALS).run()
    app.button(key="reject_2").click().run()
    assert not app.exception, app.exception
    said = "Say why you reject it"
    errors = [e for e in app.error if said in str(e.value)]
    assert len(errors) == 1
    # Right under the second request's comment box, inside its card; not at the top of the page.
    order = [
        getattr(element, "key", None) or ("comment error" if element in errors else None)
        for element in walk(app.main)
    ]
    order = [name for name in order if name]
    at = order.index("approval_comment_2")
    assert order[at + 1] == "comment error", order
    assert approvals.get(app_desk.ledger, 2).pending  # nothing decided
    app.run()  # said once: the next run has it no more
    assert not [e for e in app.error if said in str(e.value)]


def test_the_approvals_page_points_to_schedules_waiting_for_a_decision(app, app_desk):
    from tests.test_pages_schedules import SCHEDULES, a_card, fill

    app.switch_page("pages/approvals.py").run()
    assert "on the Schedules page" not in page_text(app)
    card = a_card(app_desk)
    app.switch_page(SCHEDULES).run()
    fill(app, rows=f"{card}, 500")
    assert app_desk.ledger.list_schedules()[0].state == "pending_approval"
    app.switch_page("pages/approvals.py").run()
    assert not app.exception, app.exception
    assert "1 schedule decision (a new schedule" in page_text(app)
    assert "a late run) waits on the Schedules page." in page_text(app)
