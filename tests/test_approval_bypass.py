"""Maker-checker cannot be stepped round: one person cannot loosen a programme's money rules
alone, a file follows the rules a single debit or credit follows on its form, and a held credit
is not sent from a programme that closed while it waited. A real SQLite file ledger and the
sandbox over loopback."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services import approvals, bulk, movements, preflight, programmes
from services.models import Allocation, Kind, Status
from services.store import BudgetExceeded
from tests.fault_support import SETTINGS, create, reference
from tests.test_bulk import desk  # noqa: F401  (fixture)

LAKH = Decimal(100000)
HEADER = "kind,card_id,amount,reason,programme"


def open_card(ledger, client, amount: str = "900000") -> str:
    outcome = movements.request(ledger, client, create(amount), SETTINGS, operator="asha")
    assert outcome.status is Status.SUCCEEDED
    return outcome.row.card_id


def move(kind: str, card: str, amount: str, programme: str | None = "P") -> Allocation:
    return Allocation(
        reference=reference(), kind=kind, amount=amount, card_id=card, programme=programme
    )


def edit(ledger, **values):
    """Asha saves the programme form with ``values`` typed over its current ones."""
    current = ledger.programme("P")
    typed = {
        "name": current.name,
        "budget": "" if current.budget is None else str(current.budget),
        "debit_threshold": "" if current.debit_threshold is None else str(current.debit_threshold),
        "monthly_operator_limit": ""
        if current.monthly_operator_limit is None
        else str(current.monthly_operator_limit),
        **values,
    }
    fields, errors = programmes.read_form(typed)
    assert errors == {}
    return programmes.save(ledger, SETTINGS, "P", fields, actor="asha")


# --- A. a programme's money rules ---------------------------------------------------------------


def test_an_operator_cannot_lift_a_programmes_debit_threshold_or_operator_limit_alone(
    ledger, client, sandbox
):
    card = open_card(ledger, client)
    ledger.create_programme(
        code="P", name="Promo", budget=LAKH, actor="boss", monthly_operator_limit=Decimal(1000)
    )
    held = movements.request(
        ledger, client, move("debit", card, "500000"), SETTINGS, operator="asha"
    )
    assert held.status is Status.QUEUED

    saved = edit(ledger, debit_threshold="100000000000", monthly_operator_limit="", owner="Asha")
    # Nothing loosened: the owner (not a money rule) changed, the rest waits for a second person.
    promo = ledger.programme("P")
    assert promo.debit_threshold is None and promo.monthly_operator_limit == Decimal(1000)
    assert promo.owner == "Asha"
    request = saved.raise_request
    assert request is not None and request.pending and request.subject_kind == "budget"
    assert saved.held == [
        "raise P's debit approval limit from the global 10,000 to 1,00,00,00,00,000 points",
        "remove P's monthly limit per operator of 1,000 points",
    ]
    sent_before = sandbox.store.allocate_requests()
    again = movements.request(
        ledger, client, move("debit", card, "500000"), SETTINGS, operator="asha"
    )
    assert again.status is Status.QUEUED and again.row.approved_by is None
    over = movements.request(
        ledger, client, move("credit", card, "5000"), SETTINGS, operator="asha"
    )
    assert over.status is Status.QUEUED  # still past her monthly limit of 1,000
    assert sandbox.store.allocate_requests() == sent_before

    with pytest.raises(approvals.SelfApproval):
        approvals.approve(ledger, request.id, approver="asha")
    approvals.approve(ledger, request.id, approver="vikram")
    promo = ledger.programme("P")
    assert promo.debit_threshold == Decimal("100000000000") and promo.monthly_operator_limit is None
    assert [e.action for e in ledger.programme_events("P")] == [
        "created",
        "change asked",
        "edited",  # the owner, at once
        "edited",  # the rules, once approved
    ]
    assert ledger.programme_events("P")[-1].actor == "vikram (approving asha)"


def test_tightening_a_programmes_rules_applies_at_once(ledger):
    ledger.create_programme(
        code="P",
        name="Promo",
        budget=LAKH,
        actor="boss",
        monthly_operator_limit=Decimal(1000),
        debit_threshold=Decimal(50000),
    )
    saved = edit(ledger, budget="90000", debit_threshold="500", monthly_operator_limit="800")
    assert saved.raise_request is None and approvals.pending(ledger) == []
    promo = ledger.programme("P")
    assert (promo.budget, promo.debit_threshold, promo.monthly_operator_limit) == (
        Decimal(90000),
        Decimal(500),
        Decimal(800),
    )
    # Removing an own threshold above the global one tightens too (the global 10,000 applies).
    ledger.update_programme("P", actor="boss", debit_threshold=Decimal(50000))
    assert edit(ledger, debit_threshold="").raise_request is None
    assert ledger.programme("P").debit_threshold is None
    # Removing one below the global one loosens: it waits.
    ledger.update_programme("P", actor="boss", debit_threshold=Decimal(100))
    saved = edit(ledger, debit_threshold="")
    assert ledger.programme("P").debit_threshold == Decimal(100)
    assert saved.held == [
        "remove P's own debit approval limit of 100 points (the global 10,000 would apply)"
    ]


def test_small_budget_raises_add_up_to_a_raise_that_waits(ledger):
    # A budget no second person approved: raised at once only up to 1,00,000 in all.
    ledger.create_programme(code="P", name="Promo", budget=LAKH, actor="boss")
    for _ in range(9):
        saved = edit(ledger, budget=str(ledger.programme("P").budget + Decimal(99999)))
        assert saved.raise_request is not None
    assert ledger.programme("P").budget == LAKH  # nine raises asked, none applied alone
    assert len(approvals.pending(ledger)) == 9


def test_raises_count_from_the_budget_a_second_person_last_approved(ledger):
    ledger.create_programme(code="P", name="Promo", budget=Decimal(50000), actor="asha")
    assert edit(ledger, budget="99999").raise_request is None  # 99,999 in all: within 1,00,000
    saved = edit(ledger, budget="149998")  # 1,49,998 in all: past it, though this raise is small
    assert ledger.programme("P").budget == Decimal(99999)
    assert saved.held == ["raise P from 99,999 to 1,49,998 points"]
    approvals.approve(ledger, saved.raise_request.id, approver="vikram")
    assert ledger.programme("P").budget == Decimal(149998)
    assert approvals.approved_budget(ledger, "P") == Decimal(149998)
    # From what was approved: 1,00,000 more at once, not a point past it.
    assert edit(ledger, budget="249998").raise_request is None
    assert edit(ledger, budget="249999").raise_request is not None
    # A cut applies at once, and raising back to what was allowed needs nobody.
    assert edit(ledger, budget="150000").raise_request is None
    assert edit(ledger, budget="249998").raise_request is None
    assert ledger.programme("P").budget == Decimal(249998)


def test_a_new_programme_with_no_limit_or_a_large_budget_waits_for_a_second_person(
    ledger, client, sandbox
):
    card = open_card(ledger, client)
    # Without settings nothing can be judged: every budget waits, and no limit at all.
    programmes.create(ledger, {"code": "T", "name": "Try", "budget": None}, actor="asha")
    assert ledger.programme("T").budget == Decimal(0)
    assert [a.changes for a in approvals.pending(ledger)] == [{"budget": None}]
    open_ended = programmes.create(
        ledger, {"code": "Q", "name": "Open", "budget": None}, actor="asha", settings=SETTINGS
    )
    assert open_ended.programme.budget == Decimal(0)  # takes no credits until approved
    assert open_ended.held == ["give new programme Q no budget limit"]
    with pytest.raises(BudgetExceeded):
        movements.request(
            ledger, client, move("credit", card, "10", "Q"), SETTINGS, operator="asha"
        )
    approvals.approve(ledger, open_ended.raise_request.id, approver="vikram")
    assert ledger.programme("Q").budget is None

    large = programmes.create(
        ledger,
        {"code": "R", "name": "Big", "budget": Decimal(500000), "debit_threshold": Decimal(10**6)},
        actor="asha",
        settings=SETTINGS,
    )
    big = ledger.programme("R")
    assert big.budget == Decimal(0) and big.debit_threshold is None  # the global one applies
    assert large.held == [
        "give new programme R a budget of 5,00,000 points",
        "raise R's debit approval limit from the global 10,000 to 10,00,000 points",
    ]
    approvals.approve(ledger, large.raise_request.id, approver="vikram")
    big = ledger.programme("R")
    assert big.budget == Decimal(500000) and big.debit_threshold == Decimal(10**6)
    # Within the threshold, and tighter than the global rules: made as asked, at once.
    small = programmes.create(
        ledger,
        {
            "code": "S",
            "name": "Small",
            "budget": Decimal(20000),
            "debit_threshold": Decimal(100),
            "monthly_operator_limit": Decimal(500),
        },
        actor="asha",
        settings=SETTINGS,
    )
    assert small.raise_request is None and small.programme.budget == Decimal(20000)


def test_a_rejected_programme_change_leaves_the_programme_as_it_was(ledger):
    ledger.create_programme(
        code="P", name="Promo", budget=Decimal(1000), actor="boss", debit_threshold=Decimal(100)
    )
    raised = edit(ledger, budget="500000")
    loosened = edit(ledger, debit_threshold="900000")
    approvals.reject(ledger, raised.raise_request.id, approver="vikram", comment="not this quarter")
    approvals.reject(ledger, loosened.raise_request.id, approver="vikram", comment="keep it")
    promo = ledger.programme("P")
    assert promo.budget == Decimal(1000) and promo.debit_threshold == Decimal(100)
    events = [(e.action, e.detail) for e in ledger.programme_events("P")][-2:]
    assert events == [
        ("raise rejected", "budget raise to 5,00,000 rejected: not this quarter"),
        (
            "change rejected",
            "raise P's debit approval limit from 100 to 9,00,000 points rejected: keep it",
        ),
    ]


# --- B. a file follows each programme's debit threshold ------------------------------------------


def file_of(*lines: str) -> bytes:
    return ("\n".join([HEADER, *lines]) + "\n").encode()


def queue(desk, content: bytes, operator: str = "asha", name: str = "run.csv"):  # noqa: F811
    preview = bulk.preview_upload(desk.ledger, desk.client, desk.settings, name, content)
    assert preview.rejected == []
    return preview, bulk.queue_batch(desk.ledger, preview, operator=operator)


def desk_card(desk, amount: str = "20000") -> str:  # noqa: F811
    with desk.client() as client:
        return open_card(desk.ledger, client, amount)


def test_a_file_debit_above_its_programmes_own_threshold_waits(desk):  # noqa: F811
    card = desk_card(desk)
    desk.ledger.create_programme(
        code="STRICT", name="Strict", budget=None, actor="boss", debit_threshold=Decimal(100)
    )
    _, record = queue(desk, file_of(f"debit,{card},5000,oops,STRICT"))
    rows = [preflight.PlannedRow(2, Kind.DEBIT, Decimal(5000), "STRICT")]
    planned = preflight.preflight(
        desk.ledger, desk.settings, rows, pool_balance=None, concurrency=1
    )
    why = "holds a debit of 5,000 points (row 2), above the 100 debit limit of Strict"
    assert planned.batch_reasons == [why] and planned.approval_rows == [2]
    assert bulk.approval_reasons(desk.ledger, desk.settings, record) == [why]
    sent = desk.sandbox.store.allocate_requests()
    assert bulk.start_or_ask_approval(
        desk.ledger, desk.settings, record.batch_id, actor="asha", wake=desk.pick_up
    )
    request = approvals.for_subject(desk.ledger, "batch", record.batch_id)
    assert request.pending and request.reasons == [why]
    assert desk.ledger.rows(batch_id=record.batch_id)[0].status is Status.QUEUED
    assert desk.sandbox.store.allocate_requests() == sent
    assert desk.sandbox.store.card_balance(card) == Decimal(20000)


def test_a_file_debit_under_its_programmes_higher_threshold_goes_as_on_the_debit_page(desk):  # noqa: F811
    card = desk_card(desk, "30000")
    desk.ledger.create_programme(
        code="LOOSE", name="Loose", budget=None, actor="boss", debit_threshold=Decimal(50000)
    )
    # 20,000 is above the global 10,000 but within Loose's own 50,000; a row with no programme
    # (General) is held to the global one.
    _, loose = queue(desk, file_of(f"debit,{card},20000,fix,LOOSE"), name="loose.csv")
    assert bulk.approval_reasons(desk.ledger, desk.settings, loose) == []
    _, general = queue(desk, file_of(f"debit,{card},10001,fix,"), name="general.csv")
    assert bulk.approval_reasons(desk.ledger, desk.settings, general) == [
        "holds a debit of 10,001 points (row 2), above the 10,000 debit limit"
    ]


# --- C. a file follows the operator's monthly limit ---------------------------------------------


def test_a_file_of_credits_past_the_operators_monthly_limit_waits(desk):  # noqa: F811
    card = desk_card(desk, "10")
    desk.ledger.create_programme(
        code="LIM",
        name="Limited",
        budget=None,
        actor="boss",
        monthly_operator_limit=Decimal(1000),
    )
    lines = [f"credit,{card},{1000 + n},bonus {n},LIM" for n in range(5)]
    rows = [preflight.PlannedRow(n + 2, Kind.CREDIT, Decimal(1000 + n), "LIM") for n in range(5)]
    why = "credits 5,010 points in Limited, past asha's monthly limit of 1,000 points there"
    _, record = queue(desk, file_of(*lines))
    assert bulk.approval_reasons(desk.ledger, desk.settings, record) == [
        f"{why} (1,000 left this month)"
    ]
    # The pre-flight says so before a file is queued (Ravi has queued nothing this month).
    planned = preflight.preflight(
        desk.ledger, desk.settings, rows, pool_balance=None, concurrency=1, operator="ravi"
    )
    assert planned.batch_reasons == [
        "credits 5,010 points in Limited, past ravi's monthly limit of 1,000 points there "
        "(1,000 left this month)"
    ]
    sent = desk.sandbox.store.allocate_requests()
    assert bulk.start_or_ask_approval(
        desk.ledger, desk.settings, record.batch_id, actor="asha", wake=desk.pick_up
    )
    assert desk.sandbox.store.allocate_requests() == sent
    request = approvals.for_subject(desk.ledger, "batch", record.batch_id)
    approvals.approve(desk.ledger, request.id, approver="vikram")
    bulk.start_batch(desk.ledger, desk.settings, record.batch_id, actor="vikram", wake=desk.pick_up)
    assert desk.runner.wait(record.batch_id, timeout=60)
    statuses = [r.status for r in desk.ledger.rows(batch_id=record.batch_id)]
    assert statuses == [Status.SUCCEEDED] * 5


def test_files_within_the_limit_go_and_the_one_that_passes_it_waits(desk):  # noqa: F811
    card = desk_card(desk, "10")
    desk.ledger.create_programme(
        code="LIM", name="Limited", budget=None, actor="boss", monthly_operator_limit=Decimal(1000)
    )
    _, first = queue(desk, file_of(f"credit,{card},600,a,LIM"), name="a.csv")
    assert not bulk.start_or_ask_approval(
        desk.ledger, desk.settings, first.batch_id, actor="asha", wake=desk.pick_up
    )
    assert desk.runner.wait(first.batch_id, timeout=60)
    # Another operator's month is their own.
    _, ravis = queue(desk, file_of(f"credit,{card},900,b,LIM"), operator="ravi", name="b.csv")
    assert bulk.approval_reasons(desk.ledger, desk.settings, ravis) == []
    # Asha's second file takes her month to 1,000.01: past the limit by a paisa.
    _, second = queue(desk, file_of(f"credit,{card},400.01,c,LIM"), name="c.csv")
    assert bulk.approval_reasons(desk.ledger, desk.settings, second) == [
        "credits 400.01 points in Limited, past asha's monthly limit of 1,000 points there "
        "(400 left this month)"
    ]
    with pytest.raises(bulk.AwaitingApproval):
        bulk.start_batch(desk.ledger, desk.settings, second.batch_id, actor="asha")


# --- D. a held credit from a programme that closed ---------------------------------------------


def test_a_held_credit_is_not_sent_once_its_programme_closed(ledger, client, sandbox):
    card = open_card(ledger, client, "100")
    ledger.create_programme(
        code="P", name="Promo", budget=LAKH, actor="boss", monthly_operator_limit=Decimal(10)
    )
    held = movements.request(
        ledger, client, move("credit", card, "5000"), SETTINGS, operator="asha"
    )
    assert held.status is Status.QUEUED and held.headline.startswith("Waiting for approval")
    request = approvals.for_subject(ledger, "credit", held.row.reference)
    programmes.close(ledger, "P", actor="boss")
    closed = "Promo is closed: it takes no new credits"
    sent = sandbox.store.allocate_requests()

    with pytest.raises(approvals.SelfApproval):
        approvals.approve(ledger, request.id, approver="asha", client=client)
    assert approvals.get(ledger, request.id).pending
    with pytest.raises(approvals.ApprovalError) as refused:
        approvals.approve(ledger, request.id, approver="vikram", client=client)
    assert sandbox.store.allocate_requests() == sent
    assert isinstance(refused.value, approvals.ProgrammeNotOpen)
    assert str(refused.value).startswith(f"Not sent: {closed}. Nothing was sent")
    assert sandbox.store.allocate_requests() == sent
    assert sandbox.store.card_balance(card) == Decimal(100)
    row = ledger.get(held.row.reference)
    assert row.status is Status.FAILED and row.enkash_message == f"Not sent: {closed}."
    decided = approvals.get(ledger, request.id)
    assert decided.status == approvals.REJECTED_STATUS and decided.decided_by == "vikram"
    assert decided.comment == f"not sent: {closed}"
    promo = ledger.programme("P")
    assert promo.reserved == 0  # its points are no longer held
    assert ledger.stored_counts() == ledger.recount()


def test_a_held_credit_says_credit_and_its_card_can_say_the_programme_closed(ledger, client):
    card = open_card(ledger, client, "100")
    ledger.create_programme(
        code="P", name="Promo", budget=LAKH, actor="boss", monthly_operator_limit=Decimal(10)
    )
    held = movements.request(
        ledger, client, move("credit", card, "5000"), SETTINGS, operator="asha"
    )
    assert "5,000.00 points to credit to Ms Asha" in held.explanation
    request = approvals.for_subject(ledger, "credit", held.row.reference)
    assert approvals.programme_not_open(ledger, request) is None
    programmes.close(ledger, "P", actor="boss")
    closed = "Promo is closed: it takes no new credits"
    assert approvals.programme_not_open(ledger, request) == closed


def test_an_approved_credit_left_unsent_is_not_sent_after_its_programme_closed(
    ledger, client, sandbox
):
    card = open_card(ledger, client, "100")
    ledger.create_programme(
        code="P", name="Promo", budget=LAKH, actor="boss", monthly_operator_limit=Decimal(10)
    )
    held = movements.request(
        ledger, client, move("credit", card, "5000"), SETTINGS, operator="asha"
    )
    request = approvals.for_subject(ledger, "credit", held.row.reference)
    # Approved, then the process stopped before sending it; meanwhile the programme closed.
    ledger.decide_approval(
        request.id, approvals.APPROVED, decider="vikram", comment="", not_makers=["vikram"]
    )
    programmes.close(ledger, "P", actor="boss")
    sent = sandbox.store.allocate_requests()
    outcome = approvals.send_approved(ledger, client, approvals.get(ledger, request.id))
    assert outcome.row.status is Status.FAILED
    assert outcome.explanation == "Not sent: Promo is closed: it takes no new credits."
    assert sandbox.store.allocate_requests() == sent
    assert ledger.programme("P").reserved == 0


def test_a_reversal_that_credits_a_closed_programme_is_not_sent_either(ledger, client, sandbox):
    from services import corrections

    card = open_card(ledger, client, "1000")
    ledger.create_programme(code="P", name="Promo", budget=LAKH, actor="boss")
    taken = movements.request(ledger, client, move("debit", card, "300"), SETTINGS, operator="asha")
    assert taken.status is Status.SUCCEEDED
    reversal = corrections.request_reversal(
        ledger, taken.row.reference, "300", maker="asha", reason="debited by mistake"
    )
    request = approvals.for_subject(ledger, "reversal", reversal.reference)
    programmes.close(ledger, "P", actor="boss")
    sent = sandbox.store.allocate_requests()
    with pytest.raises(approvals.ApprovalError, match="Promo is closed"):
        approvals.approve(ledger, request.id, approver="vikram", client=client)
    assert sandbox.store.allocate_requests() == sent
    assert ledger.get(reversal.reference).status is Status.FAILED
    assert sandbox.store.card_balance(card) == Decimal(700)
