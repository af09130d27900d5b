"""Programme reports against the sandbox over loopback: burn rate and projection, History's
programme filter, the export's programme column, and the programme statement."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from openpyxl import load_workbook

from services import export, history, movements, programme_reports
from services.history import HistoryFilter
from services.models import Status
from services.store import Ledger
from services.store.programmes import today_ist
from tests.fault_support import SETTINGS, debit
from tests.test_programmes import credit, open_card, q3


@pytest.fixture
def ledger(tmp_path):
    the_ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield the_ledger
    the_ledger.dispose()


def send(ledger, client, allocation, operator="asha"):
    outcome = movements.request(ledger, client, allocation, SETTINGS, operator=operator)
    assert outcome.status is Status.SUCCEEDED
    return outcome


@pytest.fixture
def moved(ledger, client):
    """A card opened from General, then 600 credited and 100 debited back in Q3 (budget 3000)."""
    card = open_card(ledger, client)
    q3(ledger, "3000")
    send(ledger, client, credit(card, "600").model_copy(update={"reason": "=cmd|' /C calc'!A0"}))
    send(ledger, client, debit(card, "100").model_copy(update={"programme": "Q3"}))
    return card


def test_burn_rate_and_projected_exhaustion(ledger, moved):
    report = programme_reports.report(ledger, ledger.programme("Q3"))
    assert report.burn_per_day == Decimal("16.67")  # 500 used over 30 days
    assert report.programme.remaining == Decimal("2500.00")
    assert report.exhausts_on == today_ist() + timedelta(days=150)  # ceil(2500 / 16.67)
    assert len(report.burn_down) == 30
    assert report.burn_down[-1] == (today_ist(), Decimal("2500.00"))
    assert report.burn_down[0][1] == Decimal("3000.00")
    general = programme_reports.report(ledger, ledger.programme("GENERAL"))
    assert general.exhausts_on is None and general.burn_down[-1][1] is None


def test_history_filters_by_programme_and_exports_carry_the_code(ledger, moved):
    assert history.count(ledger, HistoryFilter(programmes=("q3",))) == 2
    assert history.count(ledger, HistoryFilter(programmes=("GENERAL",))) == 1
    assert history.count(ledger, HistoryFilter()) == 3
    text = export.to_csv(ledger, HistoryFilter()).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["Programme"] for r in rows) == ["GENERAL", "Q3", "Q3"]


def test_the_statement_lists_every_movement_with_maker_and_closing_remainder(ledger, moved):
    text = programme_reports.statement_csv(ledger, "q3").decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == programme_reports.STATEMENT_HEADER
    assert rows[1][:5] == ["Opening budget", "Q3", "Q3 incentive", "", "3000.00"]
    credit_row, debit_row = rows[2], rows[3]
    assert credit_row[2:5] == ["Credit", "Succeeded", "600.00"]
    assert credit_row[7] == "'=cmd|' /C calc'!A0"  # neutralised: no formula runs
    assert credit_row[8] == "asha" and credit_row[11] == "2400.00"
    assert debit_row[2] == "Debit" and debit_row[11] == "2500.00"
    assert rows[4][0] == "Closing remainder" and rows[4][4] == "2500.00"
    assert "used 500.00, reserved (in flight) 0.00" in rows[4][2]
    sheet = load_workbook(io.BytesIO(programme_reports.statement_xlsx(ledger, "Q3")))["Statement"]
    assert sheet["E3"].value == 600 and sheet["E3"].number_format == "#,##,##0.00"
