"""Programmes and budgets: a credit reserves its points atomically with its intent, on SQLite and
PostgreSQL, against the sandbox over real loopback HTTP."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from alembic import command

from services import allocations, approvals, movements
from services.models import Allocation, Status
from services.store import (
    GENERAL_CODE,
    SCHEMA_HEAD,
    BudgetExceeded,
    Ledger,
    ProgrammeClosed,
)
from services.store.migrate import alembic_config
from services.store.programmes import today_ist
from tests import v3_schema
from tests.fault_support import (
    NO_GRACE,
    SETTINGS,
    client_for,
    create,
    debit,
    reference,
    reset_knobs,
)
from tests.pg_support import postgres_ledger


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger(request, tmp_path):
    """A real SQLite file, or a fresh schema on the PostgreSQL test server (skipped if absent)."""
    if request.param == "sqlite":
        the_ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        yield the_ledger
        the_ledger.dispose()
        return
    with postgres_ledger() as the_ledger:
        yield the_ledger


def credit(card: str, amount: str, programme: str | None = "Q3") -> Allocation:
    return Allocation(
        reference=reference(), kind="credit", amount=amount, card_id=card, programme=programme
    )


def open_card(ledger, client) -> str:
    outcome = movements.request(ledger, client, create("1000"), SETTINGS, operator="asha")
    assert outcome.status is Status.SUCCEEDED
    return outcome.row.card_id


def q3(ledger, budget: str = "5000", **extra):
    return ledger.create_programme(
        code="Q3", name="Q3 incentive", budget=Decimal(budget), actor="meera", **extra
    )


def consistent(ledger) -> None:
    """The maintained counters equal the ones recomputed from the rows."""
    assert ledger.stored_counts() == ledger.recount()


def test_overspend_is_impossible_under_concurrency(ledger, client, sandbox):
    card = open_card(ledger, client)
    q3(ledger, "5000")  # exactly 50 credits of 100
    before = sandbox.store.allocate_requests()
    results: list[str] = []
    lock = threading.Lock()

    def one_thread() -> None:
        with client_for(sandbox, timeout=5) as own:
            for _ in range(10):
                try:
                    outcome = movements.request(
                        ledger, own, credit(card, "100"), SETTINGS, operator="asha"
                    )
                    word = outcome.status.value
                except BudgetExceeded:
                    word = "refused"
                with lock:
                    results.append(word)

    threads = [threading.Thread(target=one_thread) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results.count("SUCCEEDED") == 50
    assert results.count("refused") == 150
    assert sandbox.store.allocate_requests() - before == 50  # refused before sending
    programme = ledger.programme("Q3")
    assert programme.remaining == 0 and programme.credited == Decimal(5000)
    assert programme.reserved == 0
    assert len([r for r in ledger.rows() if r.kind.value == "credit"]) == 50  # nothing recorded
    consistent(ledger)


def test_one_operators_monthly_limit_holds_under_concurrency(ledger, client, sandbox):
    """20 credits at once by one operator against a limit that fits exactly 7: 7 are sent and
    13 wait for approval, on both databases (the check and the count are one statement)."""
    card = open_card(ledger, client)
    q3(ledger, "100000", monthly_operator_limit=Decimal(700))
    before = sandbox.store.allocate_requests()
    results: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def one_thread() -> None:
        with client_for(sandbox, timeout=5) as own:
            start.wait()
            outcome = movements.request(ledger, own, credit(card, "100"), SETTINGS, operator="asha")
            with lock:
                results.append(outcome.status.value)

    threads = [threading.Thread(target=one_thread) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == ["QUEUED"] * 13 + ["SUCCEEDED"] * 7
    assert sandbox.store.allocate_requests() - before == 7
    held = [a for a in approvals.pending(ledger) if a.subject_kind == "credit"]
    assert len(held) == 13
    assert all("past asha's monthly limit of 700.00 points" in a.reasons[0] for a in held)
    consistent(ledger)
    assert ledger.summary_differences() == []  # the operator's month counter included
    # A rejected held credit gives its points back to the month; the counter follows the rows.
    approvals.reject(ledger, held[0].id, approver="meera", comment="not this month")
    consistent(ledger)
    assert ledger.summary_differences() == []


def test_the_operator_month_counter_follows_a_limit_set_later(ledger, client, sandbox):
    card = open_card(ledger, client)
    q3(ledger, "5000")
    for _ in range(2):
        movements.request(ledger, client, credit(card, "100"), SETTINGS, operator="asha")
    ledger.update_programme("Q3", actor="meera", monthly_operator_limit=Decimal(250))
    assert ledger.summary_differences() == []
    held = movements.request(ledger, client, credit(card, "100"), SETTINGS, operator="asha")
    assert held.status is Status.QUEUED  # 200 already this month + 100 > 250
    assert (
        movements.request(ledger, client, credit(card, "50"), SETTINGS, operator="ravi").status
        is Status.SUCCEEDED
    )
    assert ledger.summary_differences() == []


def test_a_refusal_says_how_much_is_left_and_records_nothing(ledger, client, sandbox):
    card = open_card(ledger, client)
    q3(ledger, "1300")
    assert (
        movements.request(ledger, client, credit(card, "50"), SETTINGS, operator="asha").status
        is Status.SUCCEEDED
    )
    refused = credit(card, "1250.50")
    with pytest.raises(BudgetExceeded) as error:
        movements.request(ledger, client, refused, SETTINGS, operator="asha")
    assert "Q3 incentive has 1,250.00 points left" in str(error.value)
    assert ledger.get(refused.reference) is None
    assert sandbox.store.allocate_requests() == 2  # the card and the first credit


def test_a_refusal_releases_an_unknown_holds_and_a_debit_returns(ledger, client, sandbox):
    card = open_card(ledger, client)
    q3(ledger, "1000")
    # A credit EnKash refuses (a card it does not know): FAILED, its reservation released.
    refused = movements.request(
        ledger, client, credit("EKC0000000000", "300"), SETTINGS, operator="asha"
    )
    assert refused.status is Status.FAILED
    assert ledger.programme("Q3").remaining == Decimal(1000)
    # An unknown outcome holds its points until a lookup settles it.
    sandbox.knobs.error_after_commit_rate = 1
    unknown = credit(card, "400")
    assert (
        movements.request(ledger, client, unknown, SETTINGS, operator="asha").status
        is Status.UNKNOWN
    )
    reset_knobs(sandbox)
    held = ledger.programme("Q3")
    assert held.reserved == Decimal(400) and held.remaining == Decimal(600)
    consistent(ledger)
    settled = allocations.settle(ledger, client, unknown.reference, actor="asha")
    assert settled.row.status is Status.SUCCEEDED
    spent = ledger.programme("Q3")
    assert spent.reserved == 0 and spent.credited == Decimal(400) and spent.remaining == 600
    # A debit gives its points back to its programme when it succeeds.
    back = debit(card, "150").model_copy(update={"programme": "Q3"})
    assert (
        movements.request(ledger, client, back, SETTINGS, operator="asha").status
        is Status.SUCCEEDED
    )
    returned = ledger.programme("Q3")
    assert returned.returned == Decimal(150) and returned.remaining == Decimal(750)
    assert returned.used == Decimal(250)
    consistent(ledger)


def test_a_closed_or_ended_programme_refuses_credits_and_keeps_its_history(ledger, client, sandbox):
    card = open_card(ledger, client)
    q3(ledger, "1000")
    assert (
        movements.request(ledger, client, credit(card, "100"), SETTINGS, operator="asha").status
        is Status.SUCCEEDED
    )
    ledger.close_programme("Q3", actor="meera", reason="quarter over")
    with pytest.raises(ProgrammeClosed, match="Q3 incentive is closed"):
        movements.request(ledger, client, credit(card, "100"), SETTINGS, operator="asha")
    ledger.create_programme(
        code="DIWALI",
        name="Diwali bonus",
        budget=Decimal(1000),
        actor="meera",
        ends_on=today_ist() - timedelta(days=1),
    )
    late = credit(card, "10", "diwali")
    with pytest.raises(ProgrammeClosed, match="Diwali bonus ended on"):
        movements.request(ledger, client, late, SETTINGS, operator="asha")
    # The store refuses too, whoever calls it (the check is in the reservation's WHERE).
    with pytest.raises(ProgrammeClosed):
        ledger.record_intent(late, operator="asha")
    assert ledger.get(late.reference) is None
    assert ledger.programme("Q3").credited == Decimal(100)
    actions = [e.action for e in ledger.programme_events("Q3")]
    assert actions == ["created", "closed"]


def test_past_the_operator_monthly_limit_a_credit_waits_for_approval(ledger, client, sandbox):
    card = open_card(ledger, client)
    q3(ledger, "5000", monthly_operator_limit=Decimal(250))
    assert (
        movements.request(ledger, client, credit(card, "200"), SETTINGS, operator="asha").status
        is Status.SUCCEEDED
    )
    sent = sandbox.store.allocate_requests()
    over = credit(card, "100")
    held = movements.request(ledger, client, over, SETTINGS, operator="asha")
    assert held.status is Status.QUEUED and "Waiting for approval" in held.headline
    assert sandbox.store.allocate_requests() == sent  # nothing sent
    request = approvals.for_subject(ledger, "credit", over.reference)
    assert request is not None and request.pending
    assert request.reasons == [
        "past asha's monthly limit of 250.00 points in Q3 incentive (50.00 left this month)"
    ]
    assert ledger.programme("Q3").reserved == Decimal(100)  # held points are reserved
    # Another operator's own limit is untouched.
    assert (
        movements.request(ledger, client, credit(card, "200"), SETTINGS, operator="ravi").status
        is Status.SUCCEEDED
    )
    decision = approvals.approve(ledger, request.id, approver="meera", client=client)
    assert decision.outcome.status is Status.SUCCEEDED
    assert ledger.get(over.reference).approved_by == "meera"
    assert ledger.programme("Q3").credited == Decimal(500)
    consistent(ledger)


def test_a_rejected_held_credit_releases_its_reservation(ledger, client, sandbox):
    card = open_card(ledger, client)
    q3(ledger, "5000", monthly_operator_limit=Decimal(10))
    over = credit(card, "100")
    movements.request(ledger, client, over, SETTINGS, operator="asha")
    request = approvals.for_subject(ledger, "credit", over.reference)
    approvals.reject(ledger, request.id, approver="meera", comment="not this month")
    assert ledger.get(over.reference).status is Status.FAILED
    assert ledger.programme("Q3").reserved == 0
    consistent(ledger)


def test_a_programme_debit_threshold_overrides_the_global_one(ledger, client, sandbox):
    card = open_card(ledger, client)
    q3(ledger, "5000", debit_threshold=Decimal(10))
    small = debit(card, "50").model_copy(update={"programme": "Q3"})
    held = movements.request(ledger, client, small, SETTINGS, operator="asha")
    assert held.status is Status.QUEUED  # under the global limit, above the programme's
    general = debit(card, "50")
    assert (
        movements.request(ledger, client, general, SETTINGS, operator="asha").status
        is Status.SUCCEEDED
    )


def test_a_batch_reserves_all_its_credits_or_queues_nothing(ledger, client, sandbox):
    card = open_card(ledger, client)
    q3(ledger, "250")
    rows = [(credit(card, "100"), n) for n in (1, 2, 3)]
    with pytest.raises(BudgetExceeded):
        ledger.record_intents(rows, operator="asha", batch_id="B1")
    assert ledger.rows(batch_id="B1") == []
    assert ledger.record_intents(rows[:2], operator="asha", batch_id="B1") == 2
    assert ledger.programme("Q3").reserved == Decimal(200)
    ledger.create_batch(
        batch_id="B2",
        file_name="f.csv",
        file_digest="d" * 64,
        operator="asha",
        allocations=[(credit(card, "50"), 1)],
        concurrency=1,
    )
    assert ledger.programme("Q3").remaining == 0
    ledger.cancel_queued("B2", actor="asha", code="CANCELLED", message="cancelled")
    assert ledger.programme("Q3").remaining == Decimal(50)
    consistent(ledger)


def test_a_budget_raise_waits_for_a_second_person(ledger):
    q3(ledger, "1000")
    request = approvals.request_budget_raise(
        ledger, "Q3", Decimal(9000), maker="meera", current=Decimal(1000)
    )
    assert ledger.programme("Q3").budget == Decimal(1000)
    with pytest.raises(approvals.SelfApproval):
        approvals.approve(ledger, request.id, approver="meera")
    approvals.approve(ledger, request.id, approver="ravi")
    assert ledger.programme("Q3").budget == Decimal(9000)
    assert [e.action for e in ledger.programme_events("Q3")] == [
        "created",
        "raise asked",
        "edited",
    ]


def test_a_version_3_ledger_migrates_every_row_to_general_with_its_totals(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        v3_schema.build(conn)
        totals = conn.exec_driver_sql(
            "SELECT transaction_type, status, COUNT(*), SUM(amount_cents) FROM transactions "
            "GROUP BY transaction_type, status ORDER BY 1, 2"
        ).all()
    engine.dispose()
    ledger = Ledger(url)
    try:
        with ledger.reading() as conn:
            after = conn.exec_driver_sql(
                "SELECT transaction_type, status, COUNT(*), SUM(amount_cents) FROM transactions "
                "GROUP BY transaction_type, status ORDER BY 1, 2"
            ).all()
            orphans = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM transactions WHERE programme_id IS NULL"
            ).scalar()
        assert after == totals and orphans == 0
        general = ledger.programme(GENERAL_CODE)
        assert general.budget is None and general.remaining is None
        consistent(ledger)
        assert general.credited == sum(
            (Decimal(c) / 100 for t, s, _, c in totals if t == "CR" and s == "SUCCEEDED"),
            Decimal(0),
        )
        assert ledger.pending_approval_count() == 1  # the approvals table was rebuilt whole
    finally:
        ledger.dispose()


def test_a_ledger_at_the_revision_before_programmes_migrates(tmp_path, client, sandbox):
    """From v6 (Alembic head before programmes), with rows written by v6-shaped SQL."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        v3_schema.build(conn)
        conn.exec_driver_sql("DELETE FROM schema_version")
        command.stamp(alembic_config(conn), "v3")
        command.upgrade(alembic_config(conn), "v6")
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "v6"
        rows = conn.exec_driver_sql("SELECT COUNT(*) FROM transactions").scalar()
        events = conn.exec_driver_sql("SELECT COUNT(*) FROM audit_events").scalar()
    engine.dispose()
    ledger = Ledger(url)
    try:
        assert ledger.schema_revision() == SCHEMA_HEAD
        assert len(ledger.rows()) == rows
        with ledger.reading() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM audit_events").scalar() == events
        consistent(ledger)
        # And it works: a new programme takes credits next to General's history.
        card = open_card(ledger, client)
        q3(ledger, "100")
        assert (
            movements.request(ledger, client, credit(card, "100"), SETTINGS, operator="a").status
            is Status.SUCCEEDED
        )
        consistent(ledger)
    finally:
        ledger.dispose()


_ = NO_GRACE


def test_a_queued_batch_is_judged_by_its_programmes_own_rules_on_both_databases(ledger):
    """The queries behind a batch's approval (``approvals.stored_batch_reasons``) and the
    budget last approved (``approvals.approved_budget``), on SQLite and PostgreSQL."""
    ledger.create_programme(
        code="LIM", name="Limited", budget=None, actor="meera", monthly_operator_limit=Decimal(1000)
    )
    ledger.create_programme(
        code="STRICT", name="Strict", budget=None, actor="meera", debit_threshold=Decimal(100)
    )
    card = "EKC0000000000"
    rows = [
        (credit(card, "600", "LIM"), 1),
        (credit(card, "500", "LIM"), 2),
        (debit(card, "5000").model_copy(update={"programme": "STRICT"}), 3),
        (debit(card, "9000"), 4),  # General: within the global 10,000
    ]
    ledger.create_batch(
        batch_id="B1",
        file_name="f.csv",
        file_digest="e" * 64,
        operator="asha",
        allocations=rows,
        concurrency=1,
    )
    record = ledger.get_batch("B1")
    assert approvals.stored_batch_reasons(ledger, SETTINGS, record, Decimal(15100)) == [
        "holds a debit of 5,000 points (row 3), above the 100 debit limit of Strict",
        "credits 1,100 points in Limited, past asha's monthly limit of 1,000 points there "
        "(1,000 left this month)",
    ]
    # A code with an underscore is not a pattern: QX3's approved raise is not Q_3's.
    for code in ("Q_3", "QX3"):
        ledger.create_programme(code=code, name=code, budget=Decimal(10), actor="meera")
    raised = approvals.request_budget_raise(
        ledger, "QX3", Decimal(500000), maker="meera", current=Decimal(10)
    )
    approvals.approve(ledger, raised.id, approver="ravi")
    assert approvals.approved_budget(ledger, "QX3") == Decimal(500000)
    assert approvals.approved_budget(ledger, "Q_3") == Decimal(0)


def test_general_is_there_for_a_movement_when_a_programme_was_made_first_after_a_reset(ledger):
    """A sandbox reset removes every programme; one made before anything lists them used to
    leave no General, and a credit with no programme was refused as 'no programme GENERAL'."""
    ledger.reset()
    ledger.create_programme(code="Q3", name="Q3", budget=Decimal("1000"), actor="finance")
    credit = Allocation(kind="credit", reference="PDGEN0001", amount=Decimal("5"), card_id="EKC1")
    assert movements.programme_of(ledger, credit).code == GENERAL_CODE
    assert [p.code for p in ledger.list_programmes()] == [GENERAL_CODE, "Q3"]
