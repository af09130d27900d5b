"""Races on the ledger's locks (services/store/transactions.py, "The lock order"): every write
takes its locks in one order, so writers at the same moment wait for each other and never
deadlock, and what one decides under its locks the next one sees.

Real threads, a real SQLite file and PostgreSQL (skipped, with the reason, when no server is
reachable), the sandbox over loopback. Where the timing matters, a hook holds one writer inside
its transaction at the exact point of the race, so the race happens every run, not now and then.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from services import allocations, corrections, movements
from services.corrections import ReversalRefused
from services.models import Allocation, AllocationResult, Kind, Status
from services.store import DuplicateReference, Ledger, Move
from services.store.corrections import CorrectionStore
from tests.fault_support import SETTINGS, client_for, create, credit, debit
from tests.pg_support import PG_URL, postgres_schema

# The module itself (``services.store.transactions`` as an attribute is the table of that name).
transactions_module = importlib.import_module("services.store.transactions")

RETRY_WORDS = "writing it again"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """A ledger in a SQLite file or a fresh PostgreSQL schema; its summaries and programme
    counters must agree with its rows afterwards, whatever the race did."""
    if request.param == "sqlite":
        opened = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        try:
            yield opened
            _assert_consistent(opened)
        finally:
            opened.dispose()
        return
    with postgres_schema() as schema:
        opened = Ledger(PG_URL, schema=schema)
        try:
            yield opened
            _assert_consistent(opened)
        finally:
            opened.dispose()


@pytest.fixture
def pg_ledger(request: pytest.FixtureRequest) -> Iterator[tuple[Ledger, str]]:
    """A PostgreSQL ledger whose connections carry their own application name, so the test can
    see in ``pg_stat_activity`` when one of them waits for a lock. A test may set how long its
    connections wait before they look for a deadlock (``deadlock_timeout``, indirect param)."""
    with postgres_schema() as schema:
        name = f"pd-{schema}"
        args = {"application_name": name}
        if getattr(request, "param", None):
            args["options"] = f"-cdeadlock_timeout={request.param}"
        opened = Ledger(PG_URL, schema=schema, connect_args=args)
        try:
            yield opened, name
            _assert_consistent(opened)
        finally:
            opened.dispose()


def _assert_consistent(ledger: Ledger) -> None:
    assert ledger.summary_differences() == []
    assert ledger.stored_counts() == ledger.recount()


def _no_retries(caplog: pytest.LogCaptureFixture) -> None:
    """No write was rolled back by a deadlock and written again: the retry would hide one from
    the callers, so the lock order is checked here."""
    retried = [r.getMessage() for r in caplog.records if RETRY_WORDS in r.getMessage()]
    assert retried == []


def _wait_until_waiting_for_a_lock(application: str, timeout: float = 10.0) -> None:
    """Until a connection of ``application`` waits for a lock held by another transaction."""
    admin = sa.create_engine(PG_URL, poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                waiting = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE application_name = :name AND wait_event_type = 'Lock'"
                    ),
                    {"name": application},
                ).scalar_one()
                conn.rollback()  # the next look is a new snapshot of pg_stat_activity
                if waiting:
                    return
                time.sleep(0.01)
        raise AssertionError("the second writer never waited for a lock")
    finally:
        admin.dispose()


def _run(target: Callable[[], Any], name: str) -> tuple[threading.Thread, dict[str, Any]]:
    """``target`` in a started thread called ``name``; its result or error lands in the dict."""
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            out["result"] = target()
        except BaseException as error:  # the test looks at what each writer met
            out["error"] = error

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread, out


def _pause_in(
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    thread_name: str,
    *,
    static: bool,
    after: bool,
) -> tuple[threading.Event, threading.Event]:
    """Replace ``owner.name`` so that, in the thread called ``thread_name`` only, its first call
    waits until ``go`` is set (``reached`` is set then), before it runs (``after`` False) or
    after it ran: that writer holds every lock it took so far, inside its transaction."""
    real = getattr(owner, name)
    reached, go = threading.Event(), threading.Event()

    def pause() -> None:
        if threading.current_thread().name == thread_name and not reached.is_set():
            reached.set()
            assert go.wait(30), "the test never let the paused writer go"

    def paused(*args: Any, **kwargs: Any) -> Any:
        if not after:
            pause()
        found = real(*args, **kwargs)
        if after:
            pause()
        return found

    monkeypatch.setattr(owner, name, staticmethod(paused) if static else paused)
    return reached, go


# --- one credit submitted twice at once ----------------------------------------------------------


def test_a_repeat_of_an_intent_waits_for_its_outcome_then_replays_instead_of_deadlocking(
    pg_ledger: tuple[Ledger, str], monkeypatch: pytest.MonkeyPatch, caplog
):
    """The outcome of a credit is being written (its row is locked, its programme's counters
    are next) when the same intent is recorded again (a double click, a second caller of
    ``movements.request``). The repeat waits for the outcome holding nothing, then is told the
    reference is taken; the outcome is written whole, EnKash's transaction id and balance with
    it. (Before, the repeat took the programme's lock first and the two deadlocked.)"""
    caplog.set_level(logging.WARNING)
    ledger, application = pg_ledger
    allocation = Allocation(
        reference="RACE-INTENT-1", kind=Kind.CREDIT, amount="100", card_id="EKC0RACE01"
    )
    ledger.record_intent(allocation, operator="asha")
    # The outcome's writer stops right after its row's UPDATE, before the programme's counters.
    held, go = _pause_in(
        monkeypatch, transactions_module, "apply_move", "outcome", static=False, after=False
    )
    confirmed = AllocationResult(
        reference=allocation.reference,
        card_id="EKC0RACE01",
        transaction_id="ECT-RACE-1",
        balance_after=Decimal("600"),
    )
    outcome, written = _run(
        lambda: ledger.transition(
            allocation.reference,
            Status.SUCCEEDED,
            actor="w1",
            from_statuses=(Status.SENDING,),
            result=confirmed,
        ),
        "outcome",
    )
    assert held.wait(10)
    repeat, repeated = _run(lambda: ledger.record_intent(allocation, operator="asha"), "repeat")
    _wait_until_waiting_for_a_lock(application)  # the repeat is waiting for the outcome's row
    go.set()
    outcome.join(30)
    repeat.join(30)

    assert "error" not in written, written
    assert isinstance(repeated.get("error"), DuplicateReference), repeated
    row = ledger.get(allocation.reference)
    assert row is not None and row.status is Status.SUCCEEDED
    assert (row.transaction_id, row.balance_after) == ("ECT-RACE-1", Decimal("600.00"))
    _no_retries(caplog)


def test_the_same_credit_sent_six_times_at_once_is_sent_once_and_recorded_whole(
    ledger: Ledger, sandbox, caplog
):
    """Six callers of ``movements.request`` with one reference at the same moment, round after
    round: each gets an outcome (the first its own, the others a replay), EnKash is asked once,
    and the success is recorded with its EnKash transaction id and balance."""
    caplog.set_level(logging.WARNING)
    with client_for(sandbox, timeout=5) as client:
        card = allocations.submit(
            ledger, client, create("50000"), operator="asha", settings=SETTINGS
        ).row
    for _ in range(12):
        allocation = credit(card.card_id, "100")
        sent_before = sandbox.store.allocate_requests()
        start = threading.Barrier(6)

        def send(
            allocation: Allocation = allocation, start: threading.Barrier = start
        ) -> movements.Outcome:
            with client_for(sandbox, timeout=5) as client:
                start.wait()
                return movements.request(ledger, client, allocation, SETTINGS, operator="asha")

        runs = [_run(send, f"caller-{n}") for n in range(6)]
        for thread, _ in runs:
            thread.join(60)
        errors = [out["error"] for _, out in runs if "error" in out]
        assert errors == []
        assert sandbox.store.allocate_requests() - sent_before == 1
        row = ledger.get(allocation.reference)
        assert row is not None and row.status is Status.SUCCEEDED
        assert row.transaction_id and row.balance_after is not None
    _no_retries(caplog)


# --- group commits of rows in several programmes -------------------------------------------------


def test_two_group_commits_moving_two_programmes_in_opposite_orders_do_not_deadlock(
    pg_ledger: tuple[Ledger, str], monkeypatch: pytest.MonkeyPatch, caplog
):
    """Two workers commit their batch rows' outcomes at once; each group holds a credit of
    programme A and one of programme B, listed in opposite orders. The counters are moved after
    all the rows, in programme order, so one group waits for the other. (Before, each moved its
    first row's programme, then waited for the other's: a deadlock.)"""
    caplog.set_level(logging.WARNING)
    ledger, _ = pg_ledger
    for code in ("PA", "PB"):
        ledger.create_programme(code=code, name=f"Programme {code}", budget=None, actor="boss")
    groups = {
        "group-1": [("GRP-1-FIRST", "PB"), ("GRP-1-SECOND", "PA")],
        "group-2": [("GRP-2-FIRST", "PA"), ("GRP-2-SECOND", "PB")],
    }
    for rows in groups.values():
        for reference, code in rows:
            ledger.record_intent(
                Allocation(
                    reference=reference,
                    kind=Kind.CREDIT,
                    amount="10",
                    card_id="EKC0GROUP1",
                    programme=code,
                ),
                operator="worker",
            )
    # Each group, once it moved its first programme counter, waits (up to 2 s) for the other
    # group to have moved one too: with counters moved in row order, each then holds the
    # programme the other needs next.
    arrived = {name: threading.Event() for name in groups}
    real = transactions_module.apply_move

    def meeting(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        me = threading.current_thread().name
        if me in arrived and not arrived[me].is_set():
            arrived[me].set()
            other = next(name for name in arrived if name != me)
            arrived[other].wait(2)

    monkeypatch.setattr(transactions_module, "apply_move", meeting)

    def commit(rows: list[tuple[str, str]]) -> list[Any]:
        return ledger.transition_many(
            [
                Move(
                    reference,
                    Status.SUCCEEDED,
                    actor="worker",
                    from_statuses=(Status.SENDING,),
                    result=AllocationResult(
                        reference=reference,
                        card_id="EKC0GROUP1",
                        transaction_id=f"ECT-{reference}",
                        balance_after=Decimal("10"),
                    ),
                )
                for reference, _ in rows
            ]
        )

    runs = [_run(lambda rows=rows: commit(rows), name) for name, rows in groups.items()]
    for thread, _ in runs:
        thread.join(60)
    assert [sorted(out) for _, out in runs] == [["result"], ["result"]], [o for _, o in runs]
    for rows in groups.values():
        for reference, _ in rows:
            assert ledger.get(reference).status is Status.SUCCEEDED  # type: ignore[union-attr]
    _no_retries(caplog)


# --- reversals of one card -----------------------------------------------------------------------


def test_reversals_of_two_credits_of_one_card_are_decided_one_after_the_other(
    ledger: Ledger, sandbox, monkeypatch: pytest.MonkeyPatch, caplog
):
    """A card got two credits of 1,000 and then spent 1,100: it holds 1,000. Two people reverse
    1,000 of each credit at once. Whoever decides second sees the first's reversal (a debit on
    its way) and is refused: together they never ask the card for more than it holds. (Before,
    on PostgreSQL only each credit's row was locked, and both were recorded.)"""
    caplog.set_level(logging.WARNING)
    with client_for(sandbox, timeout=5) as client:

        def send(allocation: Allocation) -> Any:
            return allocations.submit(
                ledger, client, allocation, operator="asha", settings=SETTINGS
            ).row

        card = send(create("100"))
        first, second = send(credit(card.card_id, "1000")), send(credit(card.card_id, "1000"))
        send(debit(card.card_id, "1100"))
    holds = sandbox.store.card_balance(card.card_id)
    assert holds == Decimal("1000")
    # The first reversal stops once it has read what the card holds, inside its transaction.
    read, go = _pause_in(
        monkeypatch, CorrectionStore, "_spendable", "first", static=True, after=True
    )

    def reverse(reference: str) -> Callable[[], Any]:
        return lambda: corrections.request_reversal(
            ledger, reference, "1000", maker="asha", reason="credited twice"
        )

    one, first_out = _run(reverse(first.reference), "first")
    assert read.wait(10)
    two, second_out = _run(reverse(second.reference), "second")
    two.join(1.5)  # long enough to finish, had it not waited for the first's card lock
    go.set()
    one.join(30)
    two.join(30)

    assert "error" not in first_out, first_out
    refused = second_out.get("error")
    assert isinstance(refused, ReversalRefused), second_out
    assert "holds 0.00 points" in str(refused)
    asked = sum(
        (r.amount for ref in (first.reference, second.reference) for r in ledger.reversed_by(ref)),
        Decimal("0"),
    )
    assert asked == Decimal("1000") <= holds
    _no_retries(caplog)


def test_many_reversals_of_one_cards_credits_at_once_never_ask_more_than_it_holds(
    ledger: Ledger, sandbox, caplog
):
    """Six credits of 500 to one card that then spent 2,000 (it holds 1,000); six people each
    reverse one credit in full at the same moment. At most 1,000 is asked back in all."""
    caplog.set_level(logging.WARNING)
    with client_for(sandbox, timeout=5) as client:

        def send(allocation: Allocation) -> Any:
            return allocations.submit(
                ledger, client, allocation, operator="asha", settings=SETTINGS
            ).row

        card = send(create("100"))
        credits = [send(credit(card.card_id, "500")) for _ in range(6)]
        send(debit(card.card_id, "2100"))
    start = threading.Barrier(len(credits))

    def reverse(reference: str) -> Callable[[], Any]:
        def run() -> Any:
            start.wait()
            return corrections.request_reversal(
                ledger, reference, "500", maker=f"maker-{uuid.uuid4().hex[:6]}", reason="dup"
            )

        return run

    runs = [_run(reverse(c.reference), f"reverser-{n}") for n, c in enumerate(credits)]
    for thread, _ in runs:
        thread.join(60)
    recorded = [out["result"] for _, out in runs if "result" in out]
    refused = [out["error"] for _, out in runs if "error" in out]
    assert all(isinstance(error, ReversalRefused) for error in refused), refused
    assert len(recorded) == 2 and len(refused) == 4
    assert sum((r.amount for r in recorded), Decimal("0")) == Decimal("1000")
    assert sandbox.store.card_balance(card.card_id) == Decimal("1000")
    _no_retries(caplog)


# --- a confirmed outcome is written whole, even when a deadlock rolls it back -------------------


@pytest.mark.parametrize("pg_ledger", ["4s"], indirect=True)
def test_an_outcome_rolled_back_by_a_deadlock_is_written_again_whole(
    pg_ledger: tuple[Ledger, str], caplog
):
    """Something outside the lock order (here a hand-made transaction: the programme's row,
    then the credit's) deadlocks with a confirmed outcome being written, and PostgreSQL picks
    the outcome's transaction to roll back. The outcome is written again, whole, with EnKash's
    transaction id and balance, and the retry is logged. (Before, the caller's fallback wrote
    the success without them.)"""
    caplog.set_level(logging.WARNING)
    ledger, application = pg_ledger
    assert ledger.schema is not None
    allocation = Allocation(
        reference="RACE-WHOLE-1", kind=Kind.CREDIT, amount="250", card_id="EKC0RACE02"
    )
    row = ledger.record_intent(allocation, operator="asha")
    programme_id = ledger.programme("GENERAL").id  # type: ignore[union-attr]
    assert row.status is Status.SENDING
    other = sa.create_engine(
        PG_URL,
        poolclass=sa.pool.NullPool,
        connect_args={"options": f"-csearch_path={ledger.schema}"},
    )
    try:
        with other.connect() as conn, conn.begin():
            # PostgreSQL rolls back the transaction that looks for the deadlock, once, after
            # its deadlock_timeout of waiting: the outcome's looks after 4 s (the cycle is
            # closed by then), this one only after 60 s.
            conn.execute(sa.text("SET LOCAL deadlock_timeout = '60s'"))
            conn.execute(
                sa.text("UPDATE programmes SET updated_at = updated_at WHERE id = :id"),
                {"id": programme_id},
            )
            outcome, written = _run(
                lambda: ledger.transition(
                    allocation.reference,
                    Status.SUCCEEDED,
                    actor="w1",
                    from_statuses=(Status.SENDING,),
                    result=AllocationResult(
                        reference=allocation.reference,
                        card_id="EKC0RACE02",
                        transaction_id="ECT-WHOLE-1",
                        balance_after=Decimal("750"),
                    ),
                ),
                "outcome",
            )
            _wait_until_waiting_for_a_lock(application)  # it holds the row, wants the programme
            conn.execute(
                sa.text("SELECT id FROM transactions WHERE reference = :ref FOR UPDATE"),
                {"ref": allocation.reference},
            )
        outcome.join(30)
    finally:
        other.dispose()
    assert "error" not in written, written
    row = ledger.get(allocation.reference)
    assert row is not None and row.status is Status.SUCCEEDED
    assert (row.transaction_id, row.balance_after) == ("ECT-WHOLE-1", Decimal("750.00"))
    retried = [r.getMessage() for r in caplog.records if RETRY_WORDS in r.getMessage()]
    assert len(retried) == 1 and "a deadlock" in retried[0]


def test_a_double_click_on_reverse_replays_the_first_request_even_when_both_arrive_at_once(
    ledger: Ledger, sandbox, monkeypatch: pytest.MonkeyPatch, caplog
):
    """Two requests for the same reversal (one form's reference, clicked twice) reach the
    ledger together; the first reverses the credit in full. The second is the same request:
    it gets the first's row, not "already reversed in full"."""
    caplog.set_level(logging.WARNING)
    with client_for(sandbox, timeout=5) as client:
        card = allocations.submit(
            ledger, client, create("100"), operator="asha", settings=SETTINGS
        ).row
        paid = allocations.submit(
            ledger, client, credit(card.card_id, "700"), operator="asha", settings=SETTINGS
        ).row
    read, go = _pause_in(
        monkeypatch, CorrectionStore, "_spendable", "click-1", static=True, after=True
    )

    def click() -> Any:
        return corrections.request_reversal(
            ledger,
            paid.reference,
            "700",
            maker="asha",
            reason="credited twice",
            reversal_reference="RV-DOUBLE-CLICK-1",
        )

    one, first = _run(click, "click-1")
    assert read.wait(10)
    two, second = _run(click, "click-2")
    two.join(1)  # it read the ledger before the first committed, then waits for its locks
    go.set()
    one.join(30)
    two.join(30)
    assert "error" not in first and "error" not in second, (first, second)
    assert first["result"].reference == second["result"].reference == "RV-DOUBLE-CLICK-1"
    assert [r.amount for r in ledger.reversed_by(paid.reference)] == [Decimal("700")]
    _no_retries(caplog)
