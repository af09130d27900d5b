"""History: the SQL aggregations (SQLite and PostgreSQL) and the History page under AppTest.

Service tests put known rows straight into the ledger's table (times chosen around IST midnight)
and check what the queries say. Page tests drive the real app on the isolated sandbox Desk and
read what a manager would see: metric values, the plotly figures' data, the table, the detail
view with its audit trail, and the exported files.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import count
from pathlib import Path

import pytest
import sqlalchemy as sa

import services.store as ledger_module
from services import allocations, history
from services.history import Granularity, HistoryFilter
from services.models import Allocation, Employee, Kind, Status
from services.store import Ledger, transactions
from tests import v3_schema
from tests.pg_support import postgres_ledger
from ui import charts

HISTORY = "pages/history.py"
_serial = count(1)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        opened = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        yield opened
        opened.dispose()
        return
    with postgres_ledger() as opened:
        yield opened


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def put(
    ledger: Ledger,
    when: datetime,
    amount: str,
    *,
    kind: str = "credit",
    status: str = "SUCCEEDED",
    card: str | None = "EKC0001",
    balance: str | None = None,
    name: str = "Asha",
    operator: str = "priya",
    batch_id: str | None = None,
    session_id: str | None = None,
    reason: str = "Monthly incentive",
    updated: datetime | None = None,
) -> str:
    """One row as the ledger would hold it, at a chosen time (the daily totals rebuilt)."""
    serial = next(_serial)
    reference = f"T{serial:08d}"
    with ledger.engine.begin() as conn:
        conn.execute(
            transactions.insert().values(
                reference=reference,
                kind=kind,
                transaction_type="DR" if kind == "debit" else "CR",
                status=status,
                amount_cents=int(Decimal(amount) * 100),
                email=f"{name.lower()}@partner.example",
                mobile="9600098867",
                title="Ms",
                first_name=name,
                gender="F",
                card_id=card,
                balance_after_cents=int(Decimal(balance) * 100) if balance else None,
                operator=operator,
                reason=reason,
                batch_id=batch_id,
                row_number=serial if batch_id else None,
                session_id=session_id,
                attempts=1,
                created_at=when,
                updated_at=updated or when,
            )
        )
    ledger.rebuild_summaries()  # written around the store, as a bulk seed would be
    return reference


# --- IST bucketing ------------------------------------------------------------------------------


def test_a_day_is_an_ist_day_on_both_databases(ledger: Ledger):
    put(ledger, utc("2025-03-01 18:29:59"), "100")  # 23:59:59 IST, 1 March
    put(ledger, utc("2025-03-01 18:30:00"), "200")  # 00:00 IST, 2 March
    put(ledger, utc("2025-02-28 19:00:00"), "400")  # 00:30 IST, 1 March
    days = history.series(ledger, HistoryFilter(date(2025, 3, 1), date(2025, 3, 2)))
    assert [(p.bucket, p.credited) for p in days] == [
        (date(2025, 3, 1), Decimal("500.00")),
        (date(2025, 3, 2), Decimal("200.00")),
    ]
    only_second = HistoryFilter(date(2025, 3, 2), date(2025, 3, 2))
    assert history.totals(ledger, only_second).credited == Decimal("200.00")


def test_weeks_start_on_monday_and_months_on_the_first_in_ist(ledger: Ledger):
    put(ledger, utc("2025-03-09 18:29:00"), "10")  # Sunday 9 March 23:59 IST -> week of 3 March
    put(ledger, utc("2025-03-09 18:31:00"), "20")  # Monday 10 March 00:01 IST -> week of 10
    put(ledger, utc("2025-03-31 18:31:00"), "40")  # 1 April 00:01 IST -> April
    whole = HistoryFilter(date(2025, 3, 1), date(2025, 4, 30))
    weeks = {p.bucket: p.credited for p in history.series(ledger, whole, Granularity.WEEK)}
    assert weeks[date(2025, 3, 3)] == Decimal("10.00")
    assert weeks[date(2025, 3, 10)] == Decimal("20.00")
    assert all(day.weekday() == 0 for day in weeks)
    months = {p.bucket: p.credited for p in history.series(ledger, whole, Granularity.MONTH)}
    assert months == {date(2025, 3, 1): Decimal("30.00"), date(2025, 4, 1): Decimal("40.00")}


def test_gaps_in_a_series_are_zero_buckets(ledger: Ledger):
    put(ledger, utc("2025-05-01 06:00:00"), "100")
    put(ledger, utc("2025-05-04 06:00:00"), "50", kind="debit")
    days = history.series(ledger, HistoryFilter(date(2025, 5, 1), date(2025, 5, 5)))
    assert [p.bucket.day for p in days] == [1, 2, 3, 4, 5]
    assert [p.net for p in days] == [Decimal(x) for x in ("100", "0", "0", "-50", "0")]


# --- totals, balances, statuses ---------------------------------------------------------------


def test_totals_count_money_of_succeeded_rows_and_compare_with_the_previous_period(ledger):
    put(ledger, utc("2025-06-10 06:00:00"), "1000", kind="create", card="EKCA")
    put(ledger, utc("2025-06-11 06:00:00"), "250.50", card="EKCB", name="Ravi")
    put(ledger, utc("2025-06-12 06:00:00"), "300", kind="debit", card="EKCA")
    put(ledger, utc("2025-06-12 07:00:00"), "999", status="FAILED", card="EKCC")
    put(ledger, utc("2025-06-03 06:00:00"), "70", card="EKCA")  # the week before
    period = HistoryFilter(date(2025, 6, 9), date(2025, 6, 15))
    now, before = history.compare_totals(ledger, period)
    assert now.credited == Decimal("1250.50")
    assert now.debited == Decimal("300.00")
    assert now.net == Decimal("950.50")
    assert now.employees == 2  # the failed row's card does not count
    assert now.transactions == 4
    assert before is not None and before.credited == Decimal("70.00")
    assert before.transactions == 1
    assert history.opening_net(ledger, period) == Decimal("70.00")
    running = history.cumulative(history.series(ledger, period), Decimal("70.00"))
    assert running[-1][1] == Decimal("1020.50")


def test_filters_narrow_every_figure(ledger: Ledger):
    day = utc("2025-07-01 06:00:00")
    put(ledger, day, "100", operator="priya", session_id="mine", name="Asha", card="EKCA")
    put(ledger, day, "200", operator="arjun", batch_id="B1", name="Ravi", card="EKCB")
    put(ledger, day, "40", kind="debit", operator="arjun", name="Asha", card="EKCA")
    put(ledger, day, "500", status="UNKNOWN", operator="priya", name="Meera", card="EKCC")
    base = {"start": date(2025, 7, 1), "end": date(2025, 7, 1)}

    def credited(**extra) -> Decimal:
        return history.totals(ledger, HistoryFilter(**base, **extra)).credited

    def rows(**extra) -> int:
        return history.count(ledger, HistoryFilter(**base, **extra))

    assert credited() == Decimal("300.00")
    assert credited(operators=("arjun",)) == Decimal("200.00")
    assert credited(batch_id="B1") == Decimal("200.00")
    assert credited(session_id="mine") == Decimal("100.00")
    assert credited(employee="ASHA") == Decimal("100.00")
    assert credited(employee="ekcb") == Decimal("200.00")
    assert rows(kinds=(Kind.DEBIT,)) == 1
    assert rows(statuses=(Status.UNKNOWN,)) == 1
    assert rows(employee="100%") == 0  # LIKE wildcards are literal
    assert history.operators(ledger) == ["arjun", "priya"]
    assert history.batch_ids(ledger) == ["B1"]
    breakdown = {
        s.status: s.transactions for s in history.status_breakdown(ledger, HistoryFilter(**base))
    }
    assert breakdown[Status.SUCCEEDED] == 3 and breakdown[Status.UNKNOWN] == 1
    assert breakdown[Status.FAILED] == 0


def test_balances_are_each_cards_latest_known_balance_with_the_rest_as_others(ledger: Ledger):
    t0 = utc("2025-08-01 06:00:00")
    for index in range(12):  # 12 cards, balances 100, 200, ... 1200
        put(
            ledger,
            t0,
            "1",
            card=f"EKC{index:04d}",
            balance=str(100 * (index + 1)),
            name=f"Person{index}",
        )
    # Card 0 later goes to 5000, then a failed debit does not change what is known.
    put(ledger, t0 + timedelta(days=2), "4900", card="EKC0000", balance="5000", name="Person0")
    put(ledger, t0 + timedelta(days=3), "10", kind="debit", status="FAILED", card="EKC0000")
    found = history.balances(ledger, HistoryFilter(), top=3)
    assert [c.card_id for c in found.top] == ["EKC0000", "EKC0011", "EKC0010"]
    assert found.top[0].balance == Decimal("5000.00")
    assert found.top[0].name == "Person0"
    assert found.others_count == 9
    assert found.others_total == Decimal(sum(range(200, 1001, 100)))  # cards 1..9
    assert found.total == Decimal(5000 + sum(range(200, 1300, 100)))
    assert ledger.known_balance("EKC0000") == found.top[0].balance
    as_of = history.balances(ledger, HistoryFilter(end=date(2025, 8, 2)), top=1)
    assert as_of.top[0].card_id == "EKC0011"  # before card 0's top-up
    searched = history.balances(ledger, HistoryFilter(employee="person1"), top=5)
    assert {c.card_id for c in searched.top} == {"EKC0001", "EKC0010", "EKC0011"}


def test_a_page_is_newest_first_with_the_total_count(ledger: Ledger):
    t0 = utc("2025-09-01 06:00:00")
    made = [put(ledger, t0 + timedelta(minutes=i), "1") for i in range(7)]
    f = HistoryFilter()
    first = history.page(ledger, f, 1, size=3)
    assert first.total == 7 and first.pages == 3
    assert [r.reference for r in first.rows] == made[::-1][:3]
    last = history.page(ledger, f, 99, size=3)  # clamped to the last page
    assert last.number == 3 and [r.reference for r in last.rows] == [made[0]]


def test_the_change_marker_moves_with_every_write(ledger: Ledger):
    before = history.change_marker(ledger)
    ledger.record_intent(
        Allocation(reference="MARK0001", kind=Kind.CREDIT, amount=Decimal(5), card_id="EKCA"),
        operator="priya",
    )
    middle = history.change_marker(ledger)
    ledger.transition("MARK0001", Status.FAILED, actor="priya", from_statuses=(Status.SENDING,))
    assert len({before, middle, history.change_marker(ledger)}) == 3


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_ledger_gets_the_balance_and_history_indexes_on_open(tmp_path: Path, version):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # as a version 1 or 2 ledger was: without these indexes
        v3_schema.build(conn)
        conn.exec_driver_sql("DROP INDEX ix_transactions_history")
        if version == 1:
            conn.exec_driver_sql("DROP INDEX ix_transactions_card_latest")
        conn.execute(sa.text("UPDATE schema_version SET version = :v"), {"v": version})
    engine.dispose()
    upgraded = Ledger(url)
    try:
        names = {ix["name"] for ix in sa.inspect(upgraded.engine).get_indexes("transactions")}
        assert {"ix_transactions_card_latest", "ix_transactions_history"} <= names
        assert upgraded.schema_revision() == ledger_module.SCHEMA_HEAD
        found = history.totals(upgraded, HistoryFilter(date(2025, 11, 3), date(2025, 11, 3)))
        assert found.credited == Decimal("1543.50")
    finally:
        upgraded.dispose()


def test_the_period_aggregates_read_the_covering_index_not_the_table(tmp_path: Path):
    opened = Ledger(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        low = utc("2025-03-01 00:00:00")
        query = (
            sa.select(
                transactions.c.status, sa.func.count(), sa.func.sum(transactions.c.amount_cents)
            )
            .where(
                transactions.c.created_at >= low,
                transactions.c.created_at < low + timedelta(days=90),
            )
            .group_by(transactions.c.status)
        )
        sql = str(query.compile(opened.engine, compile_kwargs={"literal_binds": True}))
        with opened.engine.connect() as conn:
            plan = " ".join(r[3] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
        assert "COVERING INDEX ix_transactions_history" in plan, plan
    finally:
        opened.dispose()


def test_each_cards_balance_is_a_seek_of_its_own_rows_on_a_ledger_without_statistics(
    tmp_path: Path,
):
    """A new ledger has no ANALYZE statistics. SQLite then answered each card's latest balance
    by walking every succeeded row through the (status, updated_at) index: 1.1 s for the
    balances of 1,000 cards among 10,000 rows, on every History filter by employee."""
    opened = Ledger(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        put(opened, utc("2025-03-02 10:00:00"), "100", balance="100", name="Asha")
        statements: list[tuple[str, object]] = []

        def keep(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().upper().startswith("SELECT"):
                statements.append((statement, parameters))

        sa.event.listen(opened.engine, "before_cursor_execute", keep)
        found = history.balances(
            opened, HistoryFilter(date(2025, 3, 1), date(2025, 3, 31), employee="ash"), top=10
        )
        sa.event.remove(opened.engine, "before_cursor_execute", keep)
        assert [card.name for card in found.top] == ["Asha"]
        with opened.engine.connect() as conn:
            no_statistics = "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"
            assert conn.exec_driver_sql(no_statistics).scalar() == 0
            statement, parameters = statements[0]
            explain = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan = [row[3] for row in explain]
    finally:
        opened.dispose()
    latest = [line for line in plan if "latest" in line]
    assert latest, plan
    assert all("ix_transactions_card_latest (card_id=?)" in line for line in latest), plan


def test_a_start_after_the_end_is_refused_in_words():
    with pytest.raises(ValueError, match="start date is after the end date"):
        HistoryFilter(date(2025, 2, 1), date(2025, 1, 1))


# --- the page -----------------------------------------------------------------------------------


def figure(app, key: str) -> dict:
    for element in app.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        if element.proto.id.endswith(key) or key in element.proto.id:
            return spec
    raise AssertionError(f"no chart {key}")


def values(trace: dict, axis: str) -> list:
    data = trace[axis]
    if isinstance(data, dict) and "bdata" in data:  # plotly's typed-array encoding
        import numpy as np

        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)


def metric(app, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def recent(days_ago: float, hour: int = 6) -> datetime:
    moment = datetime.now(UTC) - timedelta(days=days_ago)
    return moment.replace(hour=hour, minute=0, second=0, microsecond=0)


@pytest.fixture
def seeded(app, app_desk):
    """Known rows in the app's ledger, inside the default 90-day window."""
    led = app_desk.ledger
    put(led, recent(20), "1000", kind="create", card="EKCA", balance="1000", name="Asha")
    put(led, recent(10), "250.50", card="EKCA", balance="1250.50", name="Asha")
    put(
        led,
        recent(5),
        "300",
        kind="debit",
        card="EKCA",
        balance="950.50",
        name="Asha",
        operator="arjun",
    )
    put(
        led,
        recent(4),
        "5000",
        kind="create",
        card="EKCB",
        balance="5000",
        name="Ravi",
        batch_id="BATCH-7",
        reason='=HYPERLINK("http://evil")',
    )
    put(led, recent(3), "800", status="FAILED", card="EKCB", name="Ravi")
    put(led, recent(200), "70", card="EKCA", name="Asha")  # long before the window
    return led


def test_history_shows_the_period_totals_and_charts_built_from_the_ledger(app, seeded):
    app.switch_page(HISTORY).run()
    assert not app.exception
    assert metric(app, "Credited") == "6,250.50"  # 1000 + 250.50 + 5000: no half point lost
    assert metric(app, "Debited") == "300.00"
    assert metric(app, "Net issued") == "5,950.50"
    assert metric(app, "Employees") == "2"
    assert metric(app, "Transactions") == "5"
    moved = figure(app, "chart_movement")["data"]
    credited = next(t for t in moved if t["name"] == "Credited")
    debited = next(t for t in moved if t["name"] == "Debited")
    assert sum(values(credited, "y")) == pytest.approx(6250.50)
    assert sum(values(debited, "y")) == pytest.approx(-300)
    assert len(values(credited, "x")) == 90  # one bar slot per IST day, no raw rows
    net = values(figure(app, "chart_cumulative")["data"][0], "y")
    assert net[0] >= 70 and net[-1] == pytest.approx(70 + 6250.50 - 300)
    held = figure(app, "chart_balances")["data"][0]
    assert values(held, "x") == [5000, 950.5]
    assert held["y"][0].startswith("Ravi")
    statuses = figure(app, "chart_statuses")["data"][0]
    assert dict(zip(statuses["y"], values(statuses, "x"), strict=True)) == {
        "Succeeded": 4,
        "Failed": 1,
    }


def test_filters_change_what_the_page_shows(app, seeded):
    app.switch_page(HISTORY).run()
    app.multiselect(key="history_kinds").select(Kind.DEBIT).run()
    assert metric(app, "Credited") == "0.00"
    assert metric(app, "Debited") == "300.00"
    app.multiselect(key="history_kinds").unselect(Kind.DEBIT).run()
    app.text_input(key="history_employee").input("ravi").run()
    assert metric(app, "Transactions") == "2"
    assert set(app.dataframe[0].value["Employee"]) == {"Ravi"}
    app.text_input(key="history_employee").input("").run()
    app.selectbox(key="history_batch").select("BATCH-7").run()
    assert metric(app, "Credited") == "5,000.00"
    app.selectbox(key="history_batch").select("All batches").run()
    app.multiselect(key="history_operators").select("arjun").run()
    assert metric(app, "Transactions") == "1"
    app.multiselect(key="history_operators").unselect("arjun").run()
    app.date_input(key="history_dates").set_value(
        (recent(6).date() + timedelta(days=0), recent(0).date())
    ).run()
    assert metric(app, "Transactions") == "3"  # the debit, the batch create, the failure


def test_this_session_only_shows_the_rows_this_session_made(app, seeded):
    app.switch_page(HISTORY).run()
    mine = app.session_state["session_id"]
    put(seeded, recent(1), "42", card="EKCA", name="Asha", session_id=mine)
    put(seeded, recent(1), "58", card="EKCB", name="Ravi", session_id="someone-else")
    app.toggle(key="history_mine").set_value(True).run()
    assert metric(app, "Transactions") == "1"
    assert metric(app, "Credited") == "42.00"
    app.toggle(key="history_mine").set_value(False).run()
    assert metric(app, "Transactions") == "7"


def test_a_new_transaction_shows_on_the_next_run_despite_the_cache(app, app_desk):
    app.switch_page(HISTORY).run()
    assert metric(app, "Transactions") == "0"
    with app_desk.client() as client:
        allocations.submit(app_desk.ledger, client, new_account("Kiran"), operator="priya")
    app.run()
    assert metric(app, "Transactions") == "1"
    assert metric(app, "Credited") == "1,500.00"


def new_account(name: str, amount: str = "1500") -> Allocation:
    return Allocation(
        reference=allocations.new_reference(),
        kind=Kind.CREATE,
        amount=Decimal(amount),
        employee=Employee(
            email=f"{name.lower()}@partner.example",
            mobile="9600098867" if name == "Kiran" else "9840012345",
            title="Mr",
            first_name=name,
            gender="M",
        ),
        reason="Welcome points",
    )


def test_pages_of_fifty_newest_first(app, app_desk):
    for minute in range(120):
        put(app_desk.ledger, recent(2) + timedelta(minutes=minute), "1", name=f"P{minute:03d}")
    app.switch_page(HISTORY).run()
    assert len(app.dataframe[0].value) == 50
    assert app.dataframe[0].value["Employee"].iloc[0] == "P119"
    app.number_input(key="history_page").set_value(3).run()
    table = app.dataframe[0].value
    assert len(table) == 20
    assert table["Employee"].iloc[-1] == "P000"
    assert any("Page 3 of 3" in c.value for c in app.caption)
    app.text_input(key="history_employee").input("P11").run()  # a new filter starts at page 1
    assert app.number_input(key="history_page").value == 1
    assert len(app.dataframe[0].value) == 10


def test_the_detail_view_shows_the_transaction_and_its_audit_trail(app, app_desk):
    with app_desk.client() as client:
        done = allocations.submit(app_desk.ledger, client, new_account("Kiran"), operator="priya")
    app.switch_page(HISTORY).run()
    app.selectbox(key="history_detail").select(done.row.reference).run()
    text = " ".join(m.value for m in app.markdown)
    assert "Create of 1,500.00 points" in text and done.row.card_id in text
    assert done.row.transaction_id in text
    trail = app.dataframe[1].value  # the page table first, then the audit trail
    assert list(trail["Change"]) == ["— → SENDING", "SENDING → SUCCEEDED"]
    assert set(trail["By"]) == {"priya"}
    assert all(at.endswith(tuple("0123456789")) for at in trail["At (IST)"])


@pytest.fixture
def exports(monkeypatch):
    """What the page offers for download: the callables registered for deferred downloads."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    offered: list = []
    original = MediaFileManager.add_deferred

    def spy(self, data_callable, *args, **kwargs):
        offered.append(data_callable)
        return original(self, data_callable, *args, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", spy)
    return offered


def test_export_files_hold_the_filtered_rows_with_formulas_neutralised(app, seeded, exports):
    app.switch_page(HISTORY).run()
    assert [b.label for b in app.download_button] == ["Export CSV", "Export XLSX"]
    exports.clear()
    app.multiselect(key="history_kinds").select(Kind.CREATE).run()
    csv_bytes, xlsx_bytes = exports[-2](), exports[-1]()
    lines = list(csv.DictReader(io.StringIO(csv_bytes.decode("utf-8-sig"))))
    assert {line["Kind"] for line in lines} == {"Create"}
    assert sorted(line["Points"] for line in lines) == ["1000.00", "5000.00"]
    evil = next(line for line in lines if line["First name"] == "Ravi")
    assert evil["Reason"] == '\'=HYPERLINK("http://evil")'
    assert b'"=HYPERLINK' not in csv_bytes and b",=HYPERLINK" not in csv_bytes

    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(xlsx_bytes)).active
    header = [c.value for c in sheet[1]]
    body = [dict(zip(header, [c.value for c in row], strict=True)) for row in sheet.iter_rows(2)]
    assert len(body) == 2
    assert all(isinstance(row["Points"], (int, float)) for row in body)
    assert sorted(row["Points"] for row in body) == [1000, 5000]
    assert next(r for r in body if r["First name"] == "Ravi")["Reason"].startswith("'=")
    assert isinstance(body[0]["Created (IST)"], datetime)


def test_too_many_rows_for_one_file_is_said_before_any_export(app, seeded, monkeypatch):
    from services import export

    monkeypatch.setattr(export, "MAX_ROWS", 3)
    app.switch_page(HISTORY).run()
    assert not app.download_button
    assert "one export holds at most 3" in app.warning[0].value


# --- charts and words ----------------------------------------------------------------------------


def test_no_change_shows_no_arrow_and_a_change_keeps_its_half_point(app, app_desk):
    put(app_desk.ledger, recent(100), "10.50", card="EKCA", name="Asha")  # previous period
    put(app_desk.ledger, recent(10), "10.50", card="EKCA", name="Asha")
    put(app_desk.ledger, recent(9), "1", kind="debit", card="EKCA", name="Asha")
    app.switch_page(HISTORY).run()
    deltas = {m.label: m.delta for m in app.metric}
    assert deltas["Credited"] in (None, "")  # 10.50 then, 10.50 now: no green "↑ +0"
    assert deltas["Transactions"] == "+1"
    assert deltas["Debited"] == "+1.00"


def test_an_empty_period_says_so_instead_of_drawing_an_empty_axis(app):
    app.switch_page(HISTORY).run()
    moved = figure(app, "chart_movement")
    texts = [a["text"] for a in moved["layout"].get("annotations", [])]
    assert texts == [charts.NO_MOVEMENTS]
    assert moved["data"] == []


def test_the_other_cards_are_a_note_not_a_bar(app, app_desk):
    for n in range(12):
        put(app_desk.ledger, recent(2), "100", card=f"EKC{n:04d}", balance="100", name=f"P{n}")
    app.switch_page(HISTORY).run()
    held = figure(app, "chart_balances")["data"][0]
    assert len(held["y"]) == 10 and not any(y.startswith("Other") for y in held["y"])
    notes = [c.value for c in app.caption]
    assert "Other 2 cards (not drawn) hold 200.00 points in total." in notes
    assert any(c.startswith("12 cards hold 1,200.00 points") for c in notes)


def test_names_on_the_balances_chart_are_text_and_a_long_one_is_shortened(app, app_desk):
    """Plotly reads a few HTML tags in labels (bold, a link): a name is shown as typed."""
    bold = "<b>Asha</b>"
    linked = '<a href="https://evil.example">Ravi Shankar Subramanian</a>'
    put(app_desk.ledger, recent(2), "300", card="EKCA0001", balance="300", name=bold)
    put(app_desk.ledger, recent(2), "200", card="EKCA0002", balance="200", name=linked)
    app.switch_page(HISTORY).run()
    held = figure(app, "chart_balances")["data"][0]
    assert held["y"][0] == "&lt;b&gt;Asha&lt;/b&gt; · 0001"
    assert held["y"][1] == "&lt;a href=&quot;https://evil… · 0002"  # 22 characters of the name
    assert [row[0] for row in held["customdata"]] == [
        held["y"][0],
        "&lt;a href=&quot;https://evil.example&quot;&gt;Ravi Shankar Subramanian&lt;/a&gt; · 0002",
    ]


def test_month_bars_span_their_month_and_the_axis_ends_after_the_last(app, seeded):
    app.switch_page(HISTORY).run()
    app.segmented_control(key="history_grain").set_value("month").run()
    moved = figure(app, "chart_movement")
    credited = next(t for t in moved["data"] if t["name"] == "Credited")
    assert credited["xperiod"] == "M1" and credited["xperiodalignment"] == "middle"
    last = date.fromisoformat(credited["x"][-1][:10])
    end = date.fromisoformat(moved["layout"]["xaxis"]["range"][1][:10])
    assert end > last and end.day == 1 and (end - last).days >= 28


def test_history_explains_its_statuses(app):
    app.switch_page(HISTORY).run()
    glossary = next(e for e in app.expander if e.label == "What do these statuses mean?")
    text = glossary.markdown[0].value
    for word in ("Queued", "Sending", "Unknown", "Reference check"):
        assert f"**{word}**" in text
