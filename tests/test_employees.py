"""Whose card is it: the existing-card check before a create, exact-key search, EnKash's holder.

Over the sandbox on real loopback HTTP and a real SQLite ledger. The sandbox models EnKash's
matching: a create whose email or mobile already has a card credits that card.
"""

from __future__ import annotations

from decimal import Decimal

from services.allocations import submit
from services.employees import existing_holders, find_employees
from services.models import Allocation, AllocationResult, Employee, Kind, Status
from services.store import Ledger
from tests.fault_support import reference


def person(first_name: str, email: str, mobile: str, title: str = "Ms", gender: str = "F"):
    return Employee(email=email, mobile=mobile, title=title, first_name=first_name, gender=gender)


ZOYA = person("Zoya", "zoya@example.com", "9600098867")
RAHUL_WITH_ZOYAS_MOBILE = person("Rahul", "rahul@example.com", "9600098867", "Mr", "M")
RAHUL = person("Rahul", "rahul@example.com", "9811122233", "Mr", "M")


def create_of(employee: Employee, amount: str = "100") -> Allocation:
    return Allocation(reference=reference(), kind=Kind.CREATE, amount=amount, employee=employee)


def open_card(ledger: Ledger, client, employee: Employee, amount: str = "100") -> str:
    outcome = submit(ledger, client, create_of(employee, amount), operator="tester")
    assert outcome.status is Status.SUCCEEDED
    return outcome.row.card_id


# --- the check before a create ------------------------------------------------------------------


def test_a_mobile_with_a_card_in_the_ledger_names_that_card_and_its_holder(ledger, client):
    card = open_card(ledger, client, ZOYA)
    found = existing_holders(ledger, client, RAHUL_WITH_ZOYAS_MOBILE)
    assert not found.clear and found.unchecked is None
    assert [(h.card_id, h.first_name, h.email) for h in found.holders] == [
        (card, "Zoya", "zoya@example.com")
    ]
    assert existing_holders(ledger, client, RAHUL).clear


def test_an_email_with_a_card_made_outside_points_desk_is_found_at_enkash(ledger, client, sandbox):
    # Created straight at EnKash: the ledger has never heard of this card.
    result = client.allocate(create_of(ZOYA))
    assert ledger.rows() == []
    someone = person("Rahul", "ZOYA@example.com", "9811122233", "Mr", "M")
    found = existing_holders(ledger, client, someone)
    assert [(h.card_id, h.first_name) for h in found.holders] == [(result.card_id, "Zoya")]
    assert found.holders[0].balance == Decimal("100.00")


def test_when_enkash_search_cannot_be_asked_the_create_is_not_clear(ledger, client, sandbox):
    sandbox.knobs.fail_before_commit_rate = 1.0  # every API call answers 503
    found = existing_holders(ledger, client, RAHUL)
    assert found.holders == () and found.unchecked
    assert not found.clear
    assert "Nothing was sent" in found.unchecked


def test_a_ledger_holder_is_still_named_when_enkash_cannot_be_asked(ledger, client, sandbox):
    card = open_card(ledger, client, ZOYA)
    sandbox.knobs.fail_before_commit_rate = 1.0
    found = existing_holders(ledger, client, RAHUL_WITH_ZOYAS_MOBILE)
    assert [h.card_id for h in found.holders] == [card] and found.unchecked


# --- the holder EnKash's success reply names ------------------------------------------------------


def test_the_outcome_names_the_holder_enkash_reports_and_warns_when_it_is_someone_else(
    ledger, client, sandbox
):
    card = open_card(ledger, client, ZOYA)
    # A create that skipped the check: EnKash matches Zoya's card by mobile and credits it.
    outcome = submit(ledger, client, create_of(RAHUL_WITH_ZOYAS_MOBILE, "10"), operator="t")
    assert outcome.status is Status.SUCCEEDED and outcome.row.card_id == card
    assert outcome.headline == "10.00 points credited to Zoya"
    assert outcome.reported is not None and outcome.reported.email == "zoya@example.com"
    assert "EnKash says this card belongs to Ms Zoya" in outcome.holder_warning
    assert "not Rahul" in outcome.holder_warning


def test_no_warning_when_enkash_names_the_person_whose_details_were_sent(ledger, client):
    outcome = submit(ledger, client, create_of(ZOYA), operator="t")
    assert outcome.headline == "100.00 points credited to Zoya"
    assert outcome.reported is not None and outcome.reported.first_name == "Zoya"
    assert outcome.holder_warning == ""


# --- employee search ------------------------------------------------------------------------------


def _card_in_ledger(
    ledger: Ledger, card_id: str, employee: Employee, balance: Decimal | None = Decimal("100")
) -> None:
    allocation = create_of(employee)
    ledger.record_intent(allocation, operator="t")
    ledger.transition(
        allocation.reference,
        Status.SUCCEEDED,
        actor="t",
        from_statuses=(Status.SENDING,),
        detail="test",
        result=AllocationResult(
            reference=allocation.reference,
            card_id=card_id,
            transaction_id=f"T{card_id}",
            balance_after=balance,
        ),
    )


def test_an_exact_card_id_finds_that_card_alone(ledger, client):
    _card_in_ledger(ledger, "EKC1234567", ZOYA)
    # Another person whose mobile holds the card id's digits.
    _card_in_ledger(ledger, "EKCABCDEFG", person("Asha", "asha@example.com", "9812345670"))
    matches, note = find_employees(ledger, client, "EKC1234567")
    assert [m.card_id for m in matches] == ["EKC1234567"] and note is None
    assert [m.card_id for m in find_employees(ledger, client, "ekc1234567")[0]] == ["EKC1234567"]


def test_an_exact_email_or_mobile_finds_only_its_card(ledger, client):
    _card_in_ledger(ledger, "EKCZOYA001", ZOYA)
    _card_in_ledger(ledger, "EKCZOYA002", person("Zoyan", "azoya@example.com", "9600098860"))
    assert [m.card_id for m in find_employees(ledger, client, "zoya@example.com")[0]] == [
        "EKCZOYA001"
    ]
    assert [m.card_id for m in find_employees(ledger, client, "+91 96000 98867")[0]] == [
        "EKCZOYA001"
    ]
    # Not an exact key: a name still finds both by substring.
    assert len(find_employees(ledger, client, "zoya")[0]) == 2


def _spy_on_search(client, monkeypatch) -> list[dict]:
    """Every ``search_users`` call's filters; the real call still goes to the sandbox."""
    calls: list[dict] = []
    real = client.search_users

    def search_users(**filters):
        calls.append(filters)
        return real(**filters)

    monkeypatch.setattr(client, "search_users", search_users)
    return calls


def test_an_email_the_ledger_knows_asks_enkash_for_no_listing(ledger, client, monkeypatch):
    # EnKash's search has no email filter: asking it means fetching every card of the account.
    _card_in_ledger(ledger, "EKCZOYA001", ZOYA)
    calls = _spy_on_search(client, monkeypatch)
    matches, note = find_employees(ledger, client, "Zoya@Example.com")
    assert [(m.card_id, m.balance) for m in matches] == [("EKCZOYA001", Decimal("100"))]
    assert note is None and calls == []
    assert [m.card_id for m in find_employees(ledger, client, "96000 98867")[0]] == ["EKCZOYA001"]
    assert calls == []


def test_an_email_the_ledger_does_not_know_is_looked_for_at_enkash(ledger, client, monkeypatch):
    made_outside = client.allocate(create_of(RAHUL)).card_id  # straight at EnKash
    calls = _spy_on_search(client, monkeypatch)
    matches, _ = find_employees(ledger, client, "rahul@example.com")
    assert [(m.card_id, m.first_name) for m in matches] == [(made_outside, "Rahul")]
    assert calls == [{"email": "rahul@example.com"}]


def test_a_ledger_card_without_a_known_balance_gets_it_from_enkash_by_card_id(
    ledger, client, monkeypatch
):
    card = client.allocate(create_of(ZOYA, "250")).card_id
    _card_in_ledger(ledger, card, ZOYA, balance=None)  # a balance the ledger does not know
    calls = _spy_on_search(client, monkeypatch)
    matches, _ = find_employees(ledger, client, "zoya@example.com")
    assert [(m.card_id, m.balance) for m in matches] == [(card, Decimal("250.00"))]
    assert calls == [{"card_id": card}]


def test_a_card_id_without_a_digit_made_outside_points_desk_is_found_by_the_picker(
    ledger, client, monkeypatch
):
    # EnKash's card ids are letters and digits; one with no digit ("EKCKCGJCFU") reads like a
    # name. When the ledger has nobody by that name, EnKash is asked for it as a card id.
    card, n = "EKC0", 0
    while any(ch.isdigit() for ch in card):
        n += 1
        card = client.allocate(
            create_of(person("Zoya", f"zoya{n}@example.com", f"96000988{n:02d}"))
        ).card_id
    calls = _spy_on_search(client, monkeypatch)
    matches, note = find_employees(ledger, client, card.lower())
    assert [(m.card_id, m.first_name) for m in matches] == [(card, "Zoya")] and note is None
    assert calls == [{"card_id": card}]
    # A name the ledger knows is answered by the ledger alone: no call to EnKash.
    _card_in_ledger(ledger, "EKCRAHUL01", RAHUL)
    calls.clear()
    assert [m.card_id for m in find_employees(ledger, client, "Rahul")[0]] == ["EKCRAHUL01"]
    assert calls == []
