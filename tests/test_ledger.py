"""The ledger, on both stores it runs on: a SQLite file and PostgreSQL (one fresh schema per test).

PostgreSQL is ``postgresql+psycopg://postgres@127.0.0.1:5432/test`` unless
``POINTS_DESK_TEST_PG_URL`` says otherwise; when it cannot be reached its tests are skipped with
the reason, and the SQLite half still runs.
"""

from __future__ import annotations

import importlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.models import Allocation, AllocationResult, Employee, Kind, Status
from services.store import (
    ALLOWED_TRANSITIONS,
    SCHEMA_HEAD,
    DuplicateReference,
    Ledger,
    SchemaTooNew,
    StatusConflict,
    UnknownReference,
    UTCDateTime,
    to_cents,
)
from tests.pg_support import PG_URL, postgres_schema

# --- fixtures -----------------------------------------------------------------------------------


@dataclass
class Store:
    """Where this test's ledger lives; ``open()`` gives another instance on the same data."""

    backend: str
    url: str
    schema: str | None
    opened: list[Ledger]

    def open(self, **kwargs) -> Ledger:
        ledger = Ledger(self.url, schema=self.schema, **kwargs)
        self.opened.append(ledger)
        return ledger


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        # A subdirectory that does not exist yet: the ledger creates it.
        store = Store("sqlite", f"sqlite:///{tmp_path / 'data' / 'ledger.db'}", None, [])
        yield store
        for ledger in store.opened:
            ledger.dispose()
        return
    with postgres_schema() as schema:
        store = Store("postgresql", PG_URL, schema, [])
        yield store
        for ledger in store.opened:
            ledger.dispose()


@pytest.fixture
def ledger(store: Store) -> Ledger:
    return store.open()


# --- helpers ------------------------------------------------------------------------------------

_serial = itertools.count(1)


def new_ref(prefix: str = "T") -> str:
    return f"{prefix}{next(_serial):08d}"


def person(
    email: str = "ravi@example.com",
    mobile: str = "9600098867",
    first_name: str = "Ravi",
    title: str = "Mr",
    gender: str = "M",
) -> Employee:
    return Employee(email=email, mobile=mobile, title=title, first_name=first_name, gender=gender)


def create(reference: str, amount: str = "100", employee: Employee | None = None) -> Allocation:
    return Allocation(
        reference=reference, kind=Kind.CREATE, amount=amount, employee=employee or person()
    )


def move(
    reference: str, card_id: str, amount: str, kind: Kind = Kind.CREDIT, **extra
) -> Allocation:
    return Allocation(reference=reference, kind=kind, amount=amount, card_id=card_id, **extra)


def result(
    reference: str, card_id: str, balance: str | None, txn: str = "ECTR1"
) -> AllocationResult:
    return AllocationResult(
        reference=reference,
        card_id=card_id,
        transaction_id=txn,
        balance_after=Decimal(balance) if balance is not None else None,
    )


def succeed(ledger: Ledger, allocation: Allocation, card_id: str, balance: str | None):
    """Record an allocation and confirm it, as a successful EnKash call would."""
    ledger.record_intent(allocation, operator="asha")
    return ledger.transition(
        allocation.reference,
        Status.SUCCEEDED,
        actor="asha",
        from_statuses=(Status.SENDING,),
        result=result(allocation.reference, card_id, balance),
    )


def in_status(ledger: Ledger, status: Status) -> str:
    """A fresh row in ``status``, reached by allowed moves only."""
    reference = new_ref("S")
    allocation = move(reference, "EKC0001", "10")
    if status is Status.QUEUED:
        ledger.record_intent(allocation, operator="asha", status=Status.QUEUED)
        return reference
    ledger.record_intent(allocation, operator="asha")
    if status is not Status.SENDING:
        ledger.transition(
            reference,
            status,
            actor="asha",
            from_statuses=(Status.SENDING,),
            result=result(reference, "EKC0001", "10") if status is Status.SUCCEEDED else None,
        )
    return reference


def race(workers: int, attempt: Callable[[int], bool]) -> list[bool]:
    """Run ``attempt(i)`` in ``workers`` threads released together; their answers."""
    gate = threading.Barrier(workers)
    answers: list[bool | BaseException] = [False] * workers

    def run(i: int) -> None:
        gate.wait()
        try:
            answers[i] = attempt(i)
        except BaseException as error:  # surfaced below, not lost in the thread
            answers[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    errors = [a for a in answers if isinstance(a, BaseException)]
    assert not errors, errors
    return answers  # type: ignore[return-value]


def count(ledger: Ledger, table: str) -> int:
    with ledger.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608


# --- schema -------------------------------------------------------------------------------------


def test_schema_is_created_on_first_use_and_reopens_with_its_data(store: Store):
    first = store.open()
    tables = set(sa.inspect(first.engine).get_table_names())
    assert {"transactions", "audit_events", "alembic_version"} <= tables
    assert first.schema_revision() == SCHEMA_HEAD
    first.record_intent(create("KEEP0001"), operator="asha")
    first.dispose()

    again = store.open()
    assert again.get("KEEP0001") is not None
    assert count(again, "alembic_version") == 1
    assert again.schema_revision() == SCHEMA_HEAD
    if store.backend == "sqlite":
        with again.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


# Migrations from older schemas: tests/test_store_migrations.py.


def test_long_enkash_transaction_ids_and_codes_are_stored_whole(ledger: Ledger):
    long_id = "ECTR" + "9" * 196
    long_code = "E" * 150
    ok = new_ref("LONG")
    succeed_row = ledger.record_intent(move(ok, "EKC0001", "10"), operator="asha")
    assert succeed_row.transaction_id is None
    row = ledger.transition(
        ok,
        Status.SUCCEEDED,
        actor="asha",
        from_statuses=(Status.SENDING,),
        result=result(ok, "EKC0001", "10", txn=long_id),
    )
    assert ledger.get(ok).transaction_id == row.transaction_id == long_id
    refused = new_ref("LONG")
    ledger.record_intent(move(refused, "EKC0001", "10"), operator="asha")
    ledger.transition(
        refused,
        Status.FAILED,
        actor="asha",
        from_statuses=(Status.SENDING,),
        enkash_code=long_code,
        enkash_message="refused " * 200,
    )
    assert ledger.get(refused).enkash_code == long_code


def test_a_schema_newer_than_the_code_is_refused(ledger: Ledger, store: Store):
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'v99'"))
    with pytest.raises(SchemaTooNew, match="v99"):
        store.open()


# --- intents ------------------------------------------------------------------------------------


def test_an_intent_is_stored_with_its_first_audit_event(ledger: Ledger):
    before = datetime.now(UTC)
    row = ledger.record_intent(create("INTENT0001", "1500.50"), operator="asha", session_id="tab-1")
    assert row == ledger.get("INTENT0001")
    assert (row.status, row.kind, row.transaction_type) == (Status.SENDING, Kind.CREATE, "CR")
    assert (row.amount, row.email, row.mobile, row.first_name) == (
        Decimal("1500.50"),
        "ravi@example.com",
        "9600098867",
        "Ravi",
    )
    assert (row.operator, row.session_id, row.attempts) == ("asha", "tab-1", 1)
    (event,) = ledger.audit_trail("INTENT0001")
    assert (event.from_status, event.to_status, event.actor) == (None, Status.SENDING, "asha")
    assert before <= event.at == row.created_at


def test_intent_and_audit_event_commit_together_or_not_at_all(ledger: Ledger, monkeypatch):
    ledger.record_intent(create("ATOMIC0001"), operator="asha")

    def broken_audit(conn, events):
        raise RuntimeError("disk full while writing the audit event")

    # The module, not the ``transactions`` table that services.store exports under that name.
    store_transactions = importlib.import_module("services.store.transactions")
    monkeypatch.setattr(store_transactions, "_audit", broken_audit)
    with pytest.raises(RuntimeError):
        ledger.record_intent(create("ATOMIC0002"), operator="asha")
    assert ledger.get("ATOMIC0002") is None
    with pytest.raises(RuntimeError):
        ledger.transition(
            "ATOMIC0001", Status.FAILED, actor="asha", from_statuses=(Status.SENDING,)
        )
    assert ledger.get("ATOMIC0001").status is Status.SENDING
    with pytest.raises(RuntimeError):
        ledger.record_intents([(move("ATOMIC0003", "EKC0001", "5"), 1)], operator="a", batch_id="B")
    assert ledger.get("ATOMIC0003") is None


def test_a_duplicate_reference_is_refused_and_changes_nothing(ledger: Ledger):
    ledger.record_intent(create("DUPL0001", "100"), operator="asha")
    with pytest.raises(DuplicateReference) as refused:
        ledger.record_intent(create("DUPL0001", "999"), operator="mallory")
    assert refused.value.reference == "DUPL0001"
    row = ledger.get("DUPL0001")
    assert (row.amount, row.operator) == (Decimal("100.00"), "asha")
    assert len(ledger.audit_trail("DUPL0001")) == 1


def test_amount_with_more_than_two_places_or_a_float_is_refused():
    assert to_cents(Decimal("1.10")) == 110
    with pytest.raises(ValueError, match="2 decimal places"):
        to_cents(Decimal("1.005"))
    with pytest.raises(ValueError):
        to_cents(1.1)  # type: ignore[arg-type]


_amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(10**9), places=2)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(amount=_amounts, balance=_amounts)
def test_amounts_round_trip_exactly_as_integer_cents(ledger: Ledger, amount, balance):
    reference = new_ref("AMT")
    allocation = Allocation.model_validate(
        {"reference": reference, "kind": "credit", "amount": amount, "card_id": "EKC0001"},
        context={"max_points": 10**9},
    )
    ledger.record_intent(allocation, operator="asha")
    row = ledger.transition(
        reference,
        Status.SUCCEEDED,
        actor="asha",
        from_statuses=(Status.SENDING,),
        result=result(reference, "EKC0001", str(balance)),
    )
    assert row.amount == amount and row.amount.as_tuple().exponent == -2
    assert row.balance_after == balance
    with ledger.engine.connect() as conn:
        stored = conn.execute(
            sa.text(
                "SELECT amount_cents, balance_after_cents FROM transactions WHERE reference=:r"
            ),
            {"r": reference},
        ).one()
    assert stored == (int(amount * 100), int(balance * 100))
    assert all(type(value) is int for value in stored)


# --- compare-and-set ----------------------------------------------------------------------------


def test_eight_threads_claiming_the_same_row_exactly_one_wins(ledger: Ledger):
    references = [new_ref("RACE") for _ in range(10)]
    for reference in references:
        ledger.record_intent(move(reference, "EKC0001", "1"), operator="asha", status=Status.QUEUED)
    for reference in references:
        answers = race(8, lambda i, ref=reference: ledger.claim(ref, actor=f"worker-{i}"))
        assert answers.count(True) == 1, (reference, answers)
        row = ledger.get(reference)
        assert (row.status, row.attempts) == (Status.SENDING, 1)
        claims = [e for e in ledger.audit_trail(reference) if e.to_status is Status.SENDING]
        assert len(claims) == 1


def test_two_ledgers_on_one_store_never_claim_the_same_row(store: Store):
    # Two Ledger instances = two engines and pools, as two processes or replicas would have.
    first, second = store.open(), store.open()
    references = [new_ref("PROC") for _ in range(40)]
    first.record_intents(
        [(move(ref, "EKC0001", "1"), n) for n, ref in enumerate(references, 1)],
        operator="asha",
        batch_id="TWO",
    )
    won: list[list[str]] = [[] for _ in range(4)]

    def worker(i: int) -> bool:
        mine = first if i % 2 else second
        for reference in references:
            if mine.claim(reference, actor=f"worker-{i}"):
                won[i].append(reference)
        return True

    race(4, worker)
    claimed = [ref for refs in won for ref in refs]
    assert sorted(claimed) == sorted(references)  # every row once, none twice
    assert second.batch_counts("TWO")[Status.SENDING] == 40


def test_claim_of_a_row_not_in_the_from_status_returns_false_and_changes_nothing(ledger):
    reference = in_status(ledger, Status.SENDING)
    before = ledger.get(reference)
    assert ledger.claim(reference, actor="worker") is False
    assert ledger.claim("NOSUCHREF", actor="worker") is False
    assert ledger.get(reference) == before
    assert len(ledger.audit_trail(reference)) == 1


FORBIDDEN = [
    (before, after)
    for before in Status
    for after in Status
    if (before, after) not in ALLOWED_TRANSITIONS
]


def test_every_forbidden_transition_raises_and_leaves_the_row_untouched(ledger: Ledger):
    assert len(FORBIDDEN) == 17
    for before, after in FORBIDDEN:
        reference = in_status(ledger, before)
        row, trail = ledger.get(reference), ledger.audit_trail(reference)
        with pytest.raises(StatusConflict):
            ledger.transition(reference, after, actor="mallory", from_statuses=(before,))
        with pytest.raises(StatusConflict):
            ledger.claim(reference, actor="mallory", from_statuses=(before,), to_status=after)
        assert ledger.get(reference) == row, (before, after)
        assert ledger.audit_trail(reference) == trail


def test_a_transition_from_the_wrong_status_raises_and_leaves_the_row_untouched(ledger):
    succeeded = in_status(ledger, Status.SUCCEEDED)
    row = ledger.get(succeeded)
    with pytest.raises(StatusConflict, match="SUCCEEDED"):
        # Allowed in the table (SENDING -> FAILED), but the row is not SENDING any more.
        ledger.transition(
            succeeded,
            Status.FAILED,
            actor="late-worker",
            from_statuses=(Status.SENDING,),
            enkash_code="E1",
        )
    assert ledger.get(succeeded) == row
    with pytest.raises(UnknownReference):
        ledger.transition("NOSUCHREF", Status.FAILED, actor="a", from_statuses=(Status.SENDING,))


def test_a_row_walks_forward_and_its_audit_trail_tells_the_story_in_order(ledger: Ledger):
    ledger.record_intent(move("WALK0001", "EKC0001", "250"), operator="asha", status=Status.QUEUED)
    assert ledger.claim("WALK0001", actor="worker-1")
    ledger.transition(
        "WALK0001",
        Status.UNKNOWN,
        actor="worker-1",
        from_statuses=(Status.SENDING,),
        detail="outcome unknown: read timeout",
        enkash_message="read timeout",
    )
    ledger.note("WALK0001", actor="asha", detail="lookup: EnKash has no such reference")
    assert ledger.claim("WALK0001", actor="asha", from_statuses=(Status.UNKNOWN,))
    with pytest.raises(ValueError, match="OTHER"):
        ledger.transition(
            "WALK0001",
            Status.SUCCEEDED,
            actor="asha",
            from_statuses=(Status.SENDING,),
            result=result("OTHERREF1", "EKC0001", "1"),
        )
    row = ledger.transition(
        "WALK0001",
        Status.SUCCEEDED,
        actor="asha",
        from_statuses=(Status.SENDING,),
        detail="EnKash confirmed",
        result=result("WALK0001", "EKC0001", "1250.75", txn="ECTR777"),
    )
    assert (row.status, row.attempts, row.transaction_id) == (Status.SUCCEEDED, 2, "ECTR777")
    assert (row.balance_after, row.enkash_message) == (Decimal("1250.75"), "read timeout")
    assert row.updated_at >= row.created_at
    trail = ledger.audit_trail("WALK0001")
    assert [(e.from_status, e.to_status) for e in trail] == [
        (None, Status.QUEUED),
        (Status.QUEUED, Status.SENDING),
        (Status.SENDING, Status.UNKNOWN),
        (Status.UNKNOWN, Status.UNKNOWN),
        (Status.UNKNOWN, Status.SENDING),
        (Status.SENDING, Status.SUCCEEDED),
    ]
    assert [e.actor for e in trail][1:3] == ["worker-1", "worker-1"]
    assert trail[3].detail == "lookup: EnKash has no such reference"
    assert trail[-1].detail == "EnKash confirmed"
    assert [e.at for e in trail] == sorted(e.at for e in trail)


def test_recover_interrupted_marks_only_sending_rows_unknown(ledger: Ledger):
    sending = [in_status(ledger, Status.SENDING) for _ in range(2)]
    others = {s: in_status(ledger, s) for s in (Status.QUEUED, Status.SUCCEEDED, Status.FAILED)}
    assert ledger.recover_interrupted(actor="startup", older_than=timedelta(hours=1)) == 0
    assert ledger.recover_interrupted(actor="startup") == 2
    for reference in sending:
        assert ledger.get(reference).status is Status.UNKNOWN
        last = ledger.audit_trail(reference)[-1]
        assert (last.from_status, last.to_status, last.actor) == (
            Status.SENDING,
            Status.UNKNOWN,
            "startup",
        )
        assert "interrupted" in last.detail
    for status, reference in others.items():
        assert ledger.get(reference).status is status
    assert ledger.recover_interrupted() == 0


# --- balances, employees, totals ----------------------------------------------------------------


def test_known_balance_is_the_balance_after_the_latest_succeeded_row(ledger: Ledger):
    assert ledger.known_balance("EKC0001") is None
    succeed(ledger, create("KB000001", "100"), "EKC0001", "100")
    assert ledger.known_balance("EKC0001") == Decimal("100.00")
    # Sent before the next credit but settled after it: settlement time decides.
    ledger.record_intent(move("KB000002", "EKC0001", "25"), operator="asha")
    succeed(ledger, move("KB000003", "EKC0001", "50"), "EKC0001", "150")
    assert ledger.known_balance("EKC0001") == Decimal("150.00")
    ledger.transition("KB000002", Status.UNKNOWN, actor="a", from_statuses=(Status.SENDING,))
    ledger.transition(
        "KB000002",
        Status.SUCCEEDED,
        actor="a",
        from_statuses=(Status.UNKNOWN,),
        result=result("KB000002", "EKC0001", "175"),
    )
    # A later failure and a row still in flight carry no balance and change nothing.
    ledger.record_intent(move("KB000004", "EKC0001", "1", Kind.DEBIT), operator="asha")
    ledger.transition("KB000004", Status.FAILED, actor="a", from_statuses=(Status.SENDING,))
    ledger.record_intent(move("KB000005", "EKC0001", "1"), operator="asha")
    assert ledger.known_balance("EKC0001") == Decimal("175.00")
    assert ledger.known_balance("EKC9999") is None


def test_find_employees_by_each_key_one_entry_per_card(ledger: Ledger):
    ravi = person()
    meera = person("Meera.S@Example.org", "9876543210", "Meera", "Ms", "F")
    succeed(ledger, create("FE000001", "100", ravi), "EKCRAVI01", "100")
    succeed(ledger, move("FE000002", "EKCRAVI01", "20", employee=ravi), "EKCRAVI01", "120")
    succeed(ledger, create("FE000003", "300", meera), "EKCMEERA1", "300")
    # Someone whose account was never opened is not a card.
    ledger.record_intent(
        create("FE000004", "5", person("ghost@example.com", "9123456789", "Gita")), operator="a"
    )
    ledger.transition("FE000004", Status.FAILED, actor="a", from_statuses=(Status.SENDING,))

    def cards(query: str) -> list[str]:
        return [summary.card_id for summary in ledger.find_employees(query)]

    assert cards("RAVI@EXAMPLE") == ["EKCRAVI01"]  # email, any case
    assert cards("meera.s@example.org") == ["EKCMEERA1"]
    assert cards("0098867") == ["EKCRAVI01"]  # mobile substring
    assert cards("+91 98765 43210") == ["EKCMEERA1"]  # mobile as people type it
    assert cards("ekcmeera") == ["EKCMEERA1"]  # card id
    assert cards("eer") == ["EKCMEERA1"]  # first name
    assert set(cards("example")) == {"EKCRAVI01", "EKCMEERA1"}
    assert cards("gita") == [] and cards("ghost") == []
    assert cards("%") == [] and cards("   ") == []
    assert len(ledger.find_employees("example", limit=1)) == 1

    (summary,) = ledger.find_employees("ravi")
    assert (summary.email, summary.mobile, summary.title, summary.gender) == (
        "ravi@example.com",
        "9600098867",
        "Mr",
        "M",
    )
    assert summary.balance == Decimal("120.00")
    assert summary.last_activity == ledger.get("FE000002").updated_at

    # A later row with new details wins; a later row without details does not erase them.
    renamed = person(first_name="Ravindra")
    succeed(ledger, move("FE000005", "EKCRAVI01", "1", employee=renamed), "EKCRAVI01", "121")
    succeed(ledger, move("FE000006", "EKCRAVI01", "1"), "EKCRAVI01", "122")
    found = ledger.employee_by_card("ekcravi01")
    assert (found.first_name, found.email, found.balance) == (
        "Ravindra",
        "ravi@example.com",
        Decimal("122.00"),
    )
    assert ledger.employee_by_card("EKCNOBODY") is None


def test_totals_and_card_totals_count_succeeded_rows_only(ledger: Ledger):
    assert ledger.totals() == {
        "credited": Decimal("0"),
        "debited": Decimal("0"),
        "net": Decimal("0"),
        "employees": 0,
        "transactions": 0,
    }
    succeed(ledger, create("TOT00001", "1000"), "EKCA0001", "1000")
    succeed(ledger, move("TOT00002", "EKCA0001", "250.25"), "EKCA0001", "1250.25")
    succeed(ledger, move("TOT00003", "EKCA0001", "100.10", Kind.DEBIT), "EKCA0001", "1150.15")
    succeed(ledger, create("TOT00004", "500", person("b@example.com")), "EKCB0001", "500")
    ledger.record_intent(move("TOT00005", "EKCB0001", "999"), operator="a")
    ledger.transition("TOT00005", Status.FAILED, actor="a", from_statuses=(Status.SENDING,))
    ledger.record_intent(move("TOT00006", "EKCB0001", "5"), operator="a")
    ledger.transition("TOT00006", Status.UNKNOWN, actor="a", from_statuses=(Status.SENDING,))
    ledger.record_intent(move("TOT00007", "EKCC0001", "7"), operator="a", status=Status.QUEUED)

    assert ledger.totals() == {
        "credited": Decimal("1750.25"),
        "debited": Decimal("100.10"),
        "net": Decimal("1650.15"),
        "employees": 2,
        "transactions": 7,
    }
    assert ledger.card_totals() == {"EKCA0001": Decimal("1150.15"), "EKCB0001": Decimal("500.00")}


# --- batches ------------------------------------------------------------------------------------


def test_bulk_record_intents_of_20000_rows(ledger: Ledger, store: Store):
    rows = [
        (
            Allocation(
                reference=f"BULK-{n:06d}", kind=Kind.CREDIT, amount="12.34", card_id="EKC0001"
            ),
            n,
        )
        for n in range(1, 20_001)
    ]
    started = time.perf_counter()
    assert ledger.record_intents(rows, operator="asha", batch_id="BULK", session_id="tab") == 20_000
    elapsed = time.perf_counter() - started
    print(f"\n[{store.backend}] record_intents of 20,000 rows: {elapsed:.2f} s")
    assert ledger.batch_counts("BULK")[Status.QUEUED] == 20_000
    assert count(ledger, "transactions") == count(ledger, "audit_events") == 20_000
    assert ledger.next_queued("BULK", 3) == ["BULK-000001", "BULK-000002", "BULK-000003"]
    row = ledger.get("BULK-019999")
    assert (row.row_number, row.status, row.attempts, row.amount) == (
        19_999,
        Status.QUEUED,
        0,
        Decimal("12.34"),
    )


def test_a_batch_with_any_duplicate_reference_writes_nothing(ledger: Ledger):
    ledger.record_intent(move("DUPB-000002", "EKC0001", "1"), operator="asha")
    batch = [(move(f"DUPB-{n:06d}", "EKC0001", "1"), n) for n in range(1, 6)]
    with pytest.raises(DuplicateReference) as refused:
        ledger.record_intents(batch, operator="asha", batch_id="DUPB")
    assert refused.value.references == ["DUPB-000002"]
    assert ledger.batch_counts("DUPB") == dict.fromkeys(Status, 0)
    assert count(ledger, "transactions") == 1
    repeated = [(move("REPT-000001", "EKC0001", "1"), 1), (move("REPT-000001", "EKC0001", "2"), 2)]
    with pytest.raises(DuplicateReference):
        ledger.record_intents(repeated, operator="asha", batch_id="REPT")
    assert ledger.get("REPT-000001") is None


def test_batch_progress_queries_follow_row_order_and_status(ledger: Ledger):
    batch = [(move(f"PROG-{n:06d}", "EKC0001", "1"), n) for n in (3, 1, 2, 5, 4)]
    ledger.record_intents(batch, operator="asha", batch_id="PROG")
    assert ledger.next_queued("PROG", 10) == [f"PROG-{n:06d}" for n in (1, 2, 3, 4, 5)]
    assert ledger.claim("PROG-000001", actor="w")
    ledger.transition("PROG-000001", Status.SUCCEEDED, actor="w", from_statuses=(Status.SENDING,))
    ledger.transition("PROG-000002", Status.FAILED, actor="asha", from_statuses=(Status.QUEUED,))
    assert ledger.next_queued("PROG", 2) == ["PROG-000003", "PROG-000004"]
    counts = ledger.batch_counts("PROG")
    assert (counts[Status.QUEUED], counts[Status.SUCCEEDED], counts[Status.FAILED]) == (3, 1, 1)
    queued = ledger.rows(statuses=[Status.QUEUED], batch_id="PROG", order="row_number")
    assert [r.row_number for r in queued] == [3, 4, 5]
    assert [r.row_number for r in ledger.rows(batch_id="PROG", limit=2)] == [3, 1]
    newest = ledger.rows(order="-created_at", limit=1)[0]
    assert newest.reference == "PROG-000004"
    with pytest.raises(ValueError):
        ledger.rows(order="amount; DROP TABLE transactions")


# --- time and housekeeping ----------------------------------------------------------------------


def test_times_come_back_timezone_aware_in_utc(store: Store):
    # On PostgreSQL the session speaks Indian time; the ledger must still hand back UTC.
    extra = {"connect_args": {"options": "-ctimezone=Asia/Kolkata"}} if store.schema else {}
    ledger = store.open(**extra)
    before = datetime.now(UTC)
    succeed(ledger, create("TZ000001"), "EKCTZ001", "100")
    after = datetime.now(UTC)
    row = ledger.get("TZ000001")
    stamps = [row.created_at, row.updated_at, *(e.at for e in ledger.audit_trail("TZ000001"))]
    stamps.append(ledger.employee_by_card("EKCTZ001").last_activity)
    for stamp in stamps:
        assert stamp.tzinfo is not None and stamp.utcoffset() == timedelta(0)
        assert before <= stamp <= after
    with pytest.raises(ValueError, match="naive"):
        UTCDateTime().process_bind_param(datetime(2026, 1, 1), ledger.engine.dialect)


def test_reset_empties_the_sandbox_ledger(ledger: Ledger):
    succeed(ledger, create("RESET001"), "EKCR0001", "100")
    ledger.reset()
    assert ledger.rows() == [] and ledger.audit_trail("RESET001") == []
    assert ledger.totals()["transactions"] == 0
    ledger.record_intent(create("RESET001"), operator="asha")  # the reference is free again
