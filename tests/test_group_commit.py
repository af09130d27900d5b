"""Group commit: several threads' status moves committed in one transaction, on SQLite and
PostgreSQL. A caller is answered only once its move is committed; a group that fails writes
nothing, and each move is then committed (or refused) on its own."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator

import pytest

from services.bulk import GroupCommit
from services.models import AllocationResult, Status
from services.store import Ledger, Move, StatusConflict, UnknownReference
from tests.pg_support import PG_URL, postgres_schema
from tests.test_ledger import Store, create, new_ref

# The module (not the table the package exports under the same name): its audit helper.
ledger_module = importlib.import_module("services.store.transactions")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened = Store("sqlite", f"sqlite:///{tmp_path / 'ledger.db'}", None, [])
        yield opened
        for ledger in opened.opened:
            ledger.dispose()
        return
    with postgres_schema() as schema:
        opened = Store("postgresql", PG_URL, schema, [])
        yield opened
        for ledger in opened.opened:
            ledger.dispose()


@pytest.fixture
def ledger(store: Store) -> Ledger:
    return store.open()


def _sending(ledger: Ledger, count: int) -> list[str]:
    references = [new_ref("G") for _ in range(count)]
    for reference in references:
        ledger.record_intent(create(reference), operator="tester")  # SENDING, as before a call
    return references


def _succeeded(reference: str, n: int) -> Move:
    return Move(
        reference,
        Status.SUCCEEDED,
        actor="worker",
        from_statuses=(Status.SENDING,),
        detail="EnKash confirmed; reference matched",
        result=AllocationResult(
            reference=reference, card_id=f"EKC{n:05d}", transaction_id=f"TX{n}", balance_after=None
        ),
    )


def test_transition_many_commits_every_move_with_its_audit_event_and_reports_conflicts(
    ledger: Ledger,
):
    moving = _sending(ledger, 3)
    settled = _sending(ledger, 1)[0]
    ledger.transition(settled, Status.FAILED, actor="x", from_statuses=(Status.SENDING,))
    moves = [_succeeded(ref, n) for n, ref in enumerate(moving)]
    moves.insert(1, _succeeded(settled, 9))
    moves.append(_succeeded("NO-SUCH-ROW", 10))

    results = ledger.transition_many(moves)

    assert [type(r).__name__ for r in results] == [
        "LedgerRow",
        "StatusConflict",
        "LedgerRow",
        "LedgerRow",
        "UnknownReference",
    ]
    assert isinstance(results[1], StatusConflict) and isinstance(results[4], UnknownReference)
    for n, reference in enumerate(moving):
        row = ledger.get(reference)
        assert row.status is Status.SUCCEEDED and row.card_id == f"EKC{n:05d}"
        trail = ledger.audit_trail(reference)
        assert (trail[-1].from_status, trail[-1].to_status) == (Status.SENDING, Status.SUCCEEDED)
    assert ledger.get(settled).status is Status.FAILED  # the conflicting move changed nothing
    assert len(ledger.audit_trail(settled)) == 2


def test_a_group_that_fails_writes_nothing(ledger: Ledger, monkeypatch):
    references = _sending(ledger, 4)
    # the module, not the table of the same name that services.store exports
    ledger_module = importlib.import_module("services.store.transactions")
    real = ledger_module._audit

    def refuse(conn, events):
        if len(events) > 1:  # the group's audit events: the transaction fails after the updates
            raise RuntimeError("disk full")
        return real(conn, events)

    monkeypatch.setattr(ledger_module, "_audit", refuse)
    with pytest.raises(RuntimeError):
        ledger.transition_many([_succeeded(ref, n) for n, ref in enumerate(references)])
    for reference in references:  # still SENDING: recovered as UNKNOWN and settled by lookup
        assert ledger.get(reference).status is Status.SENDING
        assert len(ledger.audit_trail(reference)) == 1


def test_each_caller_is_answered_only_once_its_outcome_is_committed(store: Store):
    ledger = store.open()
    other = store.open()  # another connection (another process's view)
    references = _sending(ledger, 24)
    group = GroupCommit(ledger)
    seen: dict[str, Status] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(references))

    def send(n: int, reference: str) -> None:
        try:
            start.wait()
            move = _succeeded(reference, n)
            row = group.transition(
                reference,
                move.to_status,
                actor=move.actor,
                from_statuses=move.from_statuses,
                detail=move.detail,
                result=move.result,
            )
            assert row.status is Status.SUCCEEDED
            seen[reference] = other.get(reference).status  # durable before we were told
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=send, args=item) for item in enumerate(references)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert seen == dict.fromkeys(references, Status.SUCCEEDED)
    assert 1 <= group.groups <= len(references)


def test_a_failed_group_is_retried_move_by_move_and_only_the_bad_one_fails(
    ledger: Ledger, monkeypatch
):
    good, bad = _sending(ledger, 2)
    real = ledger.transition

    def group_fails(moves):
        raise RuntimeError("value too long")

    def bad_fails(reference, to_status, **kwargs):
        if reference == bad:
            raise RuntimeError("value too long")
        return real(reference, to_status, **kwargs)

    monkeypatch.setattr(ledger, "transition_many", group_fails)
    monkeypatch.setattr(ledger, "transition", bad_fails)
    group = GroupCommit(ledger)
    move = _succeeded(good, 1)
    row = group.transition(
        good, Status.SUCCEEDED, actor="w", from_statuses=(Status.SENDING,), result=move.result
    )
    assert row.status is Status.SUCCEEDED
    with pytest.raises(RuntimeError):
        group.transition(bad, Status.SUCCEEDED, actor="w", from_statuses=(Status.SENDING,))
    # The bad row's outcome is not written: it stays SENDING, as after a crash mid-call, and the
    # batch job or a worker's recovery makes it UNKNOWN to be settled by lookup.
    assert ledger.get(bad).status is Status.SENDING
    with pytest.raises(StatusConflict):
        group.transition(good, Status.FAILED, actor="w", from_statuses=(Status.SENDING,))


def test_one_group_commits_at_a_time_while_each_thread_moves_row_after_row(
    ledger: Ledger, monkeypatch
):
    # As in a batch: every thread waits for its move, then makes its next one at once. Whoever
    # is woken because its move was committed just returns; only the caller whose turn it is
    # commits the next group, so two groups are never committed side by side.
    threads_count, per_thread = 8, 4
    references = _sending(ledger, threads_count * per_thread)
    group = GroupCommit(ledger)
    real_many = ledger.transition_many
    lock = threading.Lock()
    inside, overlaps = [0], [0]

    def one_at_a_time(moves):
        with lock:
            inside[0] += 1
            overlaps[0] += inside[0] > 1
        try:
            return real_many(moves)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(ledger, "transition_many", one_at_a_time)
    errors: list[BaseException] = []
    start = threading.Barrier(threads_count)

    def send(mine: list[str]) -> None:
        try:
            start.wait()
            for n, reference in enumerate(mine):
                move = _succeeded(reference, n)
                row = group.transition(
                    reference,
                    move.to_status,
                    actor=move.actor,
                    from_statuses=move.from_statuses,
                    detail=move.detail,
                    result=move.result,
                )
                assert row.status is Status.SUCCEEDED and row.reference == reference
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=send, args=(references[i::threads_count],))
        for i in range(threads_count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors
    assert overlaps == [0]
    assert {ledger.get(r).status for r in references} == {Status.SUCCEEDED}
