"""The search box's service: what a query is, and what it opens (over the loopback sandbox)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services import search
from services.allocations import new_reference, submit
from services.models import Allocation, Kind, Status
from services.sandbox.store import SandboxStore
from services.search import Answer, QueryKind, classify
from tests.test_allocations import SETTINGS
from tests.test_employees import RAHUL, ZOYA, create_of, open_card, person


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("", QueryKind.EMPTY),
        ("   ", QueryKind.EMPTY),
        ("PD250101120000ABCDEF12", QueryKind.REFERENCE),
        ("  pd250101120000abcdef12 ", QueryKind.REFERENCE),
        ("B20250101ABCD-000012", QueryKind.REFERENCE),
        ("zoya@example.com", QueryKind.EMAIL),
        ("+91 96000 98867", QueryKind.MOBILE),
        ("9600098867", QueryKind.MOBILE),
        ("EKC1234567", QueryKind.CARD_ID),
        ("Zoya", QueryKind.TEXT),
        ("960", QueryKind.TEXT),
    ],
)
def test_a_query_is_classified_by_its_shape(query, kind):
    assert classify(query) is kind


def test_a_reference_opens_its_transaction(ledger, client):
    card = open_card(ledger, client, ZOYA)
    ref = new_reference()
    submit(
        ledger,
        client,
        Allocation(reference=ref, kind=Kind.CREDIT, card_id=card, amount="25"),
        operator="tester",
    )
    found = search.search(ledger, client, f"  {ref.lower()} ")
    assert found.answer is Answer.TRANSACTION and found.kind is QueryKind.REFERENCE
    assert found.transaction.reference == ref and found.transaction.amount == Decimal("25.00")


def test_an_unknown_reference_finds_nothing_and_lists_no_employee(ledger, client):
    open_card(ledger, client, ZOYA)
    found = search.search(ledger, client, new_reference())
    assert found.answer is Answer.NOTHING and found.employees == ()


def test_an_enkash_transaction_id_opens_its_transaction(ledger, client):
    open_card(ledger, client, ZOYA)
    (row,) = ledger.rows()
    found = search.search(ledger, client, row.transaction_id)
    assert found.answer is Answer.TRANSACTION and found.transaction.reference == row.reference


@pytest.mark.parametrize("how", ["card", "email", "mobile"])
def test_an_exact_card_email_or_mobile_opens_the_employee(ledger, client, how):
    card = open_card(ledger, client, ZOYA)
    open_card(ledger, client, RAHUL)
    query = {"card": card.lower(), "email": "ZOYA@Example.com", "mobile": "+91 96000-98867"}[how]
    found = search.search(ledger, client, query)
    assert found.answer is Answer.EMPLOYEE, found
    assert found.employee.card_id == card and found.employee.first_name == "Zoya"


@pytest.mark.parametrize("card_id", ["EKC04AZHXP", "EKCTMOWZAQ"])  # with digits, and without
def test_a_card_made_outside_points_desk_is_found_at_enkash(ledger, client, monkeypatch, card_id):
    unused_id = SandboxStore._unused_id

    def chosen(db, table, column, prefix, *args):
        return card_id if prefix == "EKC" else unused_id(db, table, column, prefix, *args)

    monkeypatch.setattr(SandboxStore, "_unused_id", staticmethod(chosen))
    made = client.allocate(create_of(ZOYA))  # straight at EnKash: the ledger never saw it
    assert made.card_id == card_id
    found = search.search(ledger, client, made.card_id)
    assert found.answer is Answer.EMPLOYEE and found.employee.card_id == made.card_id
    assert found.employee.balance == Decimal("100.00")


def test_a_name_or_part_of_a_number_lists_the_matches(ledger, client):
    zoya = open_card(ledger, client, ZOYA)
    rahul = open_card(ledger, client, RAHUL)
    found = search.search(ledger, client, "zoy")
    assert found.answer is Answer.MATCHES and [e.card_id for e in found.employees] == [zoya]
    both = search.search(ledger, client, "example.com")
    assert both.answer is Answer.MATCHES
    assert {e.card_id for e in both.employees} == {zoya, rahul}
    assert search.search(ledger, client, "nobody here").answer is Answer.NOTHING


def test_when_enkash_does_not_answer_the_ledger_still_does(ledger, client, sandbox):
    zoya = card = open_card(ledger, client, ZOYA)
    n = 0
    while not any(ch.isdigit() for ch in card):  # a card id without a digit reads as a name
        n += 1
        card = open_card(ledger, client, person("Zoya", f"zoya{n}@example.com", f"96000988{n:02d}"))
    sandbox.stop()
    # A card id is always asked at EnKash: the ledger answers, and says EnKash did not.
    found = search.search(ledger, client, card)
    assert found.answer is Answer.EMPLOYEE and found.employee.card_id == card
    assert "did not answer" in found.note
    # An email the ledger knows is the ledger's to answer: EnKash is not asked at all.
    found = search.search(ledger, client, "zoya@example.com")
    assert found.answer is Answer.EMPLOYEE and found.employee.card_id == zoya
    assert found.note is None


def test_the_employee_record_has_enkash_balance_and_every_movement_newest_first(ledger, client):
    card = open_card(ledger, client, ZOYA)
    for amount in ("10", "20", "30"):
        submit(
            ledger,
            client,
            Allocation(reference=new_reference(), kind=Kind.CREDIT, card_id=card, amount=amount),
            operator="tester",
        )
    refused = Allocation(reference=new_reference(), kind=Kind.DEBIT, card_id=card, amount="999")
    outcome = submit(ledger, client, refused, operator="tester", settings=SETTINGS)
    assert outcome.status is Status.FAILED  # more than the card holds
    record = search.employee(ledger, client, card.lower())
    assert record.found and record.at_enkash
    assert record.summary.first_name == "Zoya"
    assert record.enkash_balance == Decimal("160.00") == record.summary.balance
    first = search.movements(ledger, card, 1, size=3)
    assert first.total == 5 and first.pages == 2
    assert [r.amount for r in first.rows] == [Decimal("999.00"), Decimal("30.00"), Decimal("20")]
    second = search.movements(ledger, card, 2, size=3)
    assert [r.kind for r in second.rows] == [Kind.CREDIT, Kind.CREATE]
    assert not search.employee(ledger, client, "EKC0000000000").found
