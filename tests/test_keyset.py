"""History's table pages by key: walking the pages with each page's cursor shows every row once,
even while new rows arrive (and many rows share one creation time), on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from services import history
from services.history import HistoryFilter
from services.models import Allocation, Kind, Status
from services.store import Ledger
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


def add(ledger: Ledger, count: int, when: datetime | None = None) -> list[str]:
    made = [
        Allocation(
            kind=Kind.CREDIT,
            reference=f"KEY{next(_serial):07d}",
            amount=Decimal("1.50"),
            card_id="EKC0000001",
        )
        for _ in range(count)
    ]
    batch = f"KB{next(_serial):06d}"
    ledger.record_intents([(a, n) for n, a in enumerate(made, 1)], operator="asha", batch_id=batch)
    if when is not None:  # every row of the batch at the very same instant: ties broken by id
        ledger.redate(dict.fromkeys((a.reference for a in made), when))
    return [a.reference for a in made]


def test_walking_the_pages_by_cursor_shows_every_row_once_while_rows_are_added(ledger: Ledger):
    now = datetime.now(UTC)
    existing = add(ledger, 37, now - timedelta(days=1))  # 37 rows created at one instant
    existing += add(ledger, 40)
    f = HistoryFilter.last_days(7, statuses=(Status.QUEUED,))
    seen: list[str] = []
    page = history.page(ledger, f, 1, size=10)
    while True:
        seen += [r.reference for r in page.rows]
        add(ledger, 3)  # newer rows arrive between two clicks
        if page.next_cursor is None:
            break
        page = history.page(ledger, f, page.number + 1, size=10, cursor=page.next_cursor)
    assert len(seen) == len(set(seen))
    assert set(existing) <= set(seen)


def test_a_page_jumped_to_without_a_cursor_is_the_same_page(ledger: Ledger):
    add(ledger, 25, datetime.now(UTC) - timedelta(hours=2))
    add(ledger, 25)
    f = HistoryFilter.last_days(7)
    walked = history.page(ledger, f, 1, size=7)
    while walked.number < 4:
        walked = history.page(ledger, f, walked.number + 1, size=7, cursor=walked.next_cursor)
    jumped = history.page(ledger, f, 4, size=7)
    assert [r.reference for r in jumped.rows] == [r.reference for r in walked.rows]
    offset = history.rows_after(ledger, f, None, 50)[21:28]
    assert [r.reference for r in jumped.rows] == [r.reference for r in offset]


def test_an_export_streams_in_key_ranges_and_holds_each_row_once(ledger: Ledger, monkeypatch):
    from services import export

    monkeypatch.setattr(export, "_CHUNK", 4)
    existing = add(ledger, 9, datetime.now(UTC) - timedelta(hours=1)) + add(ledger, 6)
    exported = []
    for row in export.rows(ledger, HistoryFilter.last_days(7)):
        exported.append(row.reference)
        if len(exported) % 4 == 1:
            add(ledger, 2)  # rows arriving while the file is written
    assert sorted(exported) == sorted(existing)
    assert len(list(export.rows(ledger, HistoryFilter.last_days(7), max_rows=1000))) > 15
