"""The daily totals (services/store/summaries.py) always equal what the ledger rows say.

Random sequences of what the store does to rows (intents, batches, claims, outcomes, settlements,
recovery after a crash, cancellation, redating, a transaction that dies half way) on SQLite and
PostgreSQL, then: summary = raw. Also: the rebuild command puts back a corrupted summary.
(Reversals are played by the property test in tests/test_corrections.py, which checks the
programmes' counters and these summaries against a recount.)
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.models import Allocation, AllocationResult, Kind, Status
from services.store import Ledger, StatusConflict, daily_totals, summaries
from tests.pg_support import postgres_ledger

_serial = itertools.count(1)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        opened = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        yield opened
        opened.dispose()
        return
    with postgres_ledger() as opened:
        yield opened


def allocation(kind: Kind, cents: int) -> Allocation:
    return Allocation(
        kind=kind,
        reference=f"SUM{next(_serial):08d}",
        amount=Decimal(cents).scaleb(-2),
        card_id="EKC0000001",
    )


def result(reference: str) -> AllocationResult:
    serial = int(reference[-3:])  # a few cards, and balances that differ
    return AllocationResult(
        reference=reference,
        card_id=f"EKC000000{serial % 7}",
        transaction_id="TX1",
        balance_after=Decimal(serial * 7 % 100),
    )


_operators = st.sampled_from(["asha", "ravi", "ops-bot"])
_cents = st.integers(min_value=1, max_value=10_000_00)
_kinds = st.sampled_from([Kind.CREDIT, Kind.DEBIT])
_steps = st.one_of(
    st.tuples(st.just("intent"), _kinds, _cents, _operators, st.booleans()),
    st.tuples(st.just("paid"), _kinds, _cents, _operators),
    st.tuples(st.just("batch"), st.lists(st.tuples(_kinds, _cents), min_size=1, max_size=5)),
    st.tuples(st.just("claim"), st.integers(0, 50)),
    st.tuples(
        st.just("outcome"),
        st.integers(0, 50),
        st.sampled_from([Status.SUCCEEDED, Status.FAILED, Status.UNKNOWN]),
    ),
    st.tuples(
        st.just("settle"), st.integers(0, 50), st.sampled_from([Status.SUCCEEDED, Status.FAILED])
    ),
    st.tuples(st.just("group"), st.lists(st.integers(0, 50), min_size=1, max_size=4)),
    st.tuples(st.just("recover")),
    st.tuples(st.just("cancel")),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("cancel-batch")),
    st.tuples(st.just("redate"), st.integers(0, 50), st.integers(-400, 0), st.integers(0, 23)),
    st.tuples(st.just("crash"), st.integers(0, 50)),
)


class Crash(Exception):
    """The process dying in the middle of a write transaction."""


def play(ledger: Ledger, steps: list[tuple]) -> None:
    references: list[str] = []
    batches: list[str] = []

    def pick(index: int) -> str | None:
        return references[index % len(references)] if references else None

    for step in steps:
        what = step[0]
        if what == "intent":
            _, kind, cents, operator, queued = step
            row = ledger.record_intent(
                allocation(kind, cents),
                operator=operator,
                status=Status.QUEUED if queued else Status.SENDING,
            )
            references.append(row.reference)
        elif what == "paid":  # sent and confirmed: the common case
            _, kind, cents, operator = step
            row = ledger.record_intent(allocation(kind, cents), operator=operator)
            ledger.transition(
                row.reference,
                Status.SUCCEEDED,
                actor="w1",
                from_statuses=(Status.SENDING,),
                result=result(row.reference),
            )
            references.append(row.reference)
        elif what == "batch":
            batch = f"B{next(_serial):06d}"
            made = [(allocation(k, c), n) for n, (k, c) in enumerate(step[1], 1)]
            ledger.create_batch(
                batch_id=batch,
                file_name=f"{batch}.csv",
                file_digest=batch,
                operator="ops-bot",
                allocations=made,
                concurrency=4,
            )
            references.extend(a.reference for a, _ in made)
            batches.append(batch)
        elif what == "claim" and (reference := pick(step[1])):
            ledger.claim(reference, actor="w1")
        elif what == "outcome" and (reference := pick(step[1])):
            to = step[2]
            with contextlib.suppress(StatusConflict):
                ledger.transition(
                    reference,
                    to,
                    actor="w1",
                    from_statuses=(Status.SENDING,),
                    result=result(reference) if to is Status.SUCCEEDED else None,
                )
        elif what == "settle" and (reference := pick(step[1])):
            with contextlib.suppress(StatusConflict):
                ledger.transition(
                    reference, step[2], actor="settle", from_statuses=(Status.UNKNOWN,)
                )
        elif what == "group" and references:
            moves = [
                summaries_move(pick(i))  # type: ignore[arg-type]
                for i in dict.fromkeys(step[1])
            ]
            ledger.transition_many(moves)
        elif what == "recover":
            ledger.recover_interrupted(actor="startup", stale_after=timedelta(0))
        elif what == "cancel" and batches:
            ledger.cancel_queued(batches[-1], actor="asha", code="CANCELLED", message="stopped")
        elif what == "cancel-batch" and batches:  # a released row of it is then cancelled too
            ledger.update_batch(batches[-1], state="cancelled")
        elif what == "release" and (reference := pick(step[1])):  # claimed ahead, not sent
            ledger.release_unsent(
                reference,
                actor="w1",
                detail="claimed, not sent",
                cancelled_code="CANCELLED",
                cancelled_message="stopped",
            )
        elif what == "redate" and (reference := pick(step[1])):
            now = datetime.now(UTC)
            when = (now + timedelta(days=step[2])).replace(hour=step[3], minute=45)
            # Demo data is spread over the past: a row never has a creation time still to come
            # (day 0 at 23:45 is tomorrow in India for most of the day).
            ledger.redate({reference: min(when, now)})
        elif what == "crash" and (reference := pick(step[1])):
            with pytest.raises(Crash), ledger.writing() as conn:
                ledger._cas(conn, reference, (Status.QUEUED, Status.SENDING), Status.UNKNOWN)
                raise Crash()


def summaries_move(reference: str):
    from services.store import Move

    return Move(
        reference,
        Status.SUCCEEDED,
        actor="w1",
        from_statuses=(Status.SENDING,),
        result=result(reference),
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(_steps, min_size=1, max_size=25))
def test_the_daily_totals_equal_the_rows_after_any_sequence_of_writes(ledger: Ledger, steps):
    ledger.reset()
    play(ledger, steps)
    assert ledger.summary_differences() == []
    with ledger.reading() as conn:
        rows = conn.execute(sa.select(sa.func.sum(daily_totals.c.rows))).scalar()
        ledger_rows = conn.execute(sa.text("SELECT count(*) FROM transactions")).scalar()
    assert int(rows or 0) == ledger_rows


def test_a_crash_mid_transaction_leaves_the_totals_as_they_were(ledger: Ledger):
    ledger.reset()
    row = ledger.record_intent(allocation(Kind.CREDIT, 500), operator="asha")
    before = _totals(ledger)
    with pytest.raises(Crash), ledger.writing() as conn:
        ledger._cas(conn, row.reference, (Status.SENDING,), Status.SUCCEEDED)
        raise Crash()
    assert _totals(ledger) == before
    # and the next transaction on a pooled connection does not inherit the dead one's tally
    ledger.transition(row.reference, Status.FAILED, actor="w1", from_statuses=(Status.SENDING,))
    assert ledger.summary_differences() == []


def _totals(ledger: Ledger) -> list[tuple]:
    with ledger.reading() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.select(daily_totals).order_by(*daily_totals.primary_key.columns)
            )
        ]


def test_the_rebuild_command_restores_a_corrupted_summary(tmp_path: Path, capsys):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    try:
        for cents in (100, 250, 999):
            ledger.record_intent(allocation(Kind.CREDIT, cents), operator="asha")
        good = _totals(ledger)
        with ledger.writing() as conn:
            conn.execute(daily_totals.update().values(rows=daily_totals.c.rows + 7))
            conn.execute(
                daily_totals.insert().values(
                    day=datetime(2020, 1, 1).date(),
                    kind="credit",
                    status="FAILED",
                    operator="nobody",
                    rows=3,
                    amount_cents=300,
                )
            )
        assert summaries.main(["check", url]) == 1
        assert "keys disagree" in capsys.readouterr().out
        assert summaries.main(["rebuild", url]) == 0
        assert _totals(ledger) == good
        assert summaries.main(["check", url]) == 0
        assert "consistent" in capsys.readouterr().out
    finally:
        ledger.dispose()


def test_the_command_line_runs_as_a_module(tmp_path: Path):
    """``python -m services.store.summaries`` (the README's command), not only ``main()``."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    try:
        ledger.record_intent(allocation(Kind.CREDIT, 100), operator="asha")
    finally:
        ledger.dispose()
    done = subprocess.run(
        [sys.executable, "-m", "services.store.summaries", "check", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "consistent"), done.stderr


def test_a_new_ledger_and_an_upgraded_one_hold_the_same_totals(tmp_path: Path):
    from alembic import command

    from services.store.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    try:
        ledger.record_intent(allocation(Kind.DEBIT, 4200), operator="ravi")
        expected = _totals(ledger)
        # Back to before the summaries, then up again: the revision fills the tables.
        with ledger.writing() as conn:
            command.downgrade(alembic_config(conn), "v8_corr_rest")
        with ledger.writing() as conn:
            command.upgrade(alembic_config(conn), "head")
        assert _totals(ledger) == expected
    finally:
        ledger.dispose()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(_steps, min_size=1, max_size=25))
def test_history_reads_the_same_figures_from_the_totals_as_from_the_rows(
    ledger: Ledger, steps, monkeypatch_module
):
    from services import history
    from services.history import Granularity, HistoryFilter

    ledger.reset()
    play(ledger, steps)
    filters = [
        HistoryFilter.last_days(30),
        HistoryFilter.last_days(200, kinds=(Kind.DEBIT,), operators=("asha", "ops-bot")),
        HistoryFilter.last_days(400, statuses=(Status.SUCCEEDED, Status.QUEUED)),
    ]

    def figures() -> list:
        return [
            (
                history.compare_totals(ledger, f),
                history.series(ledger, f, Granularity.WEEK),
                history.opening_net(ledger, f),
                history.status_breakdown(ledger, f),
                history.count(ledger, f),
                history.balances(ledger, f, top=1),
            )
            for f in filters
        ]

    from_totals = figures()
    with monkeypatch_module.context() as patch:
        patch.setattr(history, "summarised", lambda f: False)
        patch.setattr(history, "balances_summarised", lambda f: False)
        assert figures() == from_totals


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch
