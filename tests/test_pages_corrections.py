"""Under AppTest: reverse a credit from its History detail; a second person approves it on the
Approvals page; History then shows "reversed by" on the original and "reverses" on the reversal,
and the exchanges with EnKash are in the detail with a support bundle to download."""

from __future__ import annotations

from decimal import Decimal

from services.models import Kind, Status
from tests.auth_support import new_app, sign_in, write_secrets
from tests.test_pages_search import _move

HISTORY = "pages/history.py"


def _history(at, reference: str):
    at.query_params["ref"] = reference
    at.switch_page(HISTORY).run()
    assert not at.exception, at.exception
    return at


def _text(at) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n".join(c.value for c in at.caption)


def test_reverse_a_credit_with_a_second_persons_approval_and_see_the_links(desk_env):
    write_secrets(desk_env)
    maker = new_app()
    maker.run()
    sign_in(maker, "asha")
    from ui.context import _desk

    desk = _desk()
    created = _move(desk, Kind.CREATE, "1000")
    credit = _move(desk, Kind.CREDIT, "500", card=created.card_id)
    _history(maker, credit.reference)
    assert "Exchanges with EnKash (1)" in [e.label for e in maker.expander]
    assert "/points/allocate" in _text(maker)
    maker.text_input(key=f"reverse_amount_{credit.reference}").input("200")
    maker.text_input(key=f"reverse_reason_{credit.reference}").input("Credited twice")
    maker.button(key=f"reverse_submit_{credit.reference}").click().run()
    assert not maker.exception, maker.exception
    assert "waits for a second person" in maker.success[0].value
    [reversal] = desk.ledger.reversed_by(credit.reference)
    assert reversal.status is Status.QUEUED and reversal.amount == Decimal("200")

    approver = new_app()
    approver.run()
    sign_in(approver, "vikram")
    approver.switch_page("pages/approvals.py").run()
    assert "Reversal of" in _text(approver)
    approver.button(key="approve_1").click().run()
    assert not approver.exception, approver.exception
    done = desk.ledger.get(reversal.reference)
    assert done.status is Status.SUCCEEDED and done.approved_by == "vikram"
    assert done.kind is Kind.DEBIT and done.balance_after == Decimal("1300.00")

    _history(maker, credit.reference)
    assert f"Reversed by [{reversal.reference}]" in _text(maker)
    _history(maker, reversal.reference)
    assert f"Reverses [{credit.reference}]" in _text(maker)


def test_a_reversal_above_what_is_left_is_refused_next_to_the_form(desk_env):
    write_secrets(desk_env)
    maker = new_app()
    maker.run()
    sign_in(maker, "asha")
    from ui.context import _desk

    created = _move(_desk(), Kind.CREATE, "300")
    _history(maker, created.reference)
    maker.text_input(key=f"reverse_amount_{created.reference}").input("301")
    maker.text_input(key=f"reverse_reason_{created.reference}").input("Too much")
    maker.button(key=f"reverse_submit_{created.reference}").click().run()
    assert not maker.exception, maker.exception
    assert "At most 300.00 points" in maker.error[0].value
    assert _desk().ledger.reversed_by(created.reference) == []
