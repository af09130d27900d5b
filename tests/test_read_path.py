"""The Overview's and History's reads at scale (v10_read_path): ``card_days`` keeps no zero rows,
so a period's distinct employees read ``pk_card_days`` alone; "UNKNOWN since" reads
``ix_transactions_status_updated`` alone. Same figures as the rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from benchmarks.seed import bulk_insert, generate
from services import history
from services.history import HistoryFilter, ist_today
from services.models import Allocation, AllocationResult, Kind, Status
from services.store import Ledger, card_days, transactions
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


def _paid(ledger: Ledger, card: str, cents: int = 1000) -> str:
    reference = f"RP{next(_serial):08d}"
    ledger.record_intent(
        Allocation(
            kind=Kind.CREDIT, reference=reference, amount=Decimal(cents) / 100, card_id=card
        ),
        operator="asha",
    )
    ledger.transition(
        reference,
        Status.SUCCEEDED,
        actor="w1",
        from_statuses=(Status.SENDING,),
        result=AllocationResult(
            reference=reference, card_id=card, transaction_id="TX1", balance_after=Decimal(10)
        ),
    )
    return reference


def _card_days(ledger: Ledger) -> list[tuple]:
    with ledger.reading() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.select(card_days.c.day, card_days.c.card_id, card_days.c.rows).order_by(
                    card_days.c.day, card_days.c.card_id
                )
            )
        ]


def test_a_card_day_its_rows_all_left_is_deleted_not_kept_as_zero(ledger: Ledger):
    today = ist_today()
    moved = _paid(ledger, "EKC0000001")
    _paid(ledger, "EKC0000002")
    when = datetime.now(UTC) - timedelta(days=3)
    ledger.redate({moved: when})
    earlier = history.ist_today(when)
    assert _card_days(ledger) == [(earlier, "EKC0000001", 1), (today, "EKC0000002", 1)]
    assert history.totals(ledger, HistoryFilter(start=today, end=today)).employees == 1
    assert history.totals(ledger, HistoryFilter(start=earlier, end=earlier)).employees == 1
    assert ledger.summary_differences() == []


def test_the_check_reports_a_zero_card_day_and_the_rebuild_removes_it(ledger: Ledger):
    _paid(ledger, "EKC0000001")
    with ledger.writing() as conn:  # as a ledger from before v10 may hold
        conn.execute(card_days.insert().values(day=ist_today(), card_id="EKC0000009", rows=0))
    found = ledger.summary_differences()
    assert [(key[0], key[2], kept, raw) for key, kept, raw in found] == [
        ("card day", "EKC0000009", 0, 0)
    ]
    ledger.rebuild_summaries()
    assert ledger.summary_differences() == []
    assert [card for _, card, _ in _card_days(ledger)] == ["EKC0000001"]


def test_distinct_employees_from_card_days_equal_those_from_the_rows(ledger: Ledger):
    """Seeded rows (a year, 300 cards), some then redated a few days back: every period's
    distinct employees read from ``card_days`` equal a count of the rows themselves."""
    bulk_insert(ledger, generate(3000, cards=300, seed=11))
    with ledger.reading() as conn:
        latest = conn.execute(
            sa.select(transactions.c.reference, transactions.c.created_at)
            .where(transactions.c.status == Status.SUCCEEDED.value)
            .order_by(transactions.c.id.desc())
            .limit(40)
        ).all()
    ledger.redate({ref: created - timedelta(days=2) for ref, created in latest})
    assert ledger.summary_differences() == []
    with ledger.reading() as conn:
        zero = conn.execute(sa.select(sa.func.count()).where(card_days.c.rows <= 0)).scalar()
    assert zero == 0
    today = ist_today()
    periods = [HistoryFilter.last_days(n, today) for n in (1, 3, 7, 30, 90, 400)]
    periods.append(HistoryFilter(start=today - timedelta(days=60), end=today - timedelta(days=2)))
    from_summary = [history.totals(ledger, f).employees for f in periods]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(history, "summarised", lambda f: False)
        from_rows = [history.totals(ledger, f).employees for f in periods]
    assert from_summary == from_rows
    assert from_summary[-2] > 0


def test_unknown_since_counts_from_the_status_index_alone(tmp_path: Path):
    opened = Ledger(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        before = datetime(2025, 3, 1, tzinfo=UTC)
        t = transactions
        query = sa.select(sa.func.count(), sa.func.min(t.c.updated_at)).where(
            t.c.status == Status.UNKNOWN.value, t.c.updated_at < before
        )
        sql = str(query.compile(opened.engine, compile_kwargs={"literal_binds": True}))
        with opened.engine.connect() as conn:
            plan = " ".join(r[3] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
        assert "COVERING INDEX ix_transactions_status_updated" in plan, plan
    finally:
        opened.dispose()


def test_v10_deletes_zero_card_days_and_indexes_status_with_the_last_change(ledger: Ledger):
    from alembic import command

    from services.store.migrate import alembic_config

    _paid(ledger, "EKC0000001")
    with ledger.writing() as conn:
        command.downgrade(alembic_config(conn), "v9_programme_sums")
    with ledger.writing() as conn:  # a zero row, as v9's summaries left them
        conn.execute(card_days.insert().values(day=ist_today(), card_id="EKC0000009", rows=0))
    with ledger.writing() as conn:
        command.upgrade(alembic_config(conn), "head")
    names = {ix["name"] for ix in sa.inspect(ledger.engine).get_indexes("transactions")}
    assert "ix_transactions_status_updated" in names
    assert "ix_transactions_status" not in names
    assert [card for _, card, _ in _card_days(ledger)] == ["EKC0000001"]
    assert ledger.summary_differences() == []
