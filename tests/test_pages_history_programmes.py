"""History grouped by programme: the chart and the totals per programme, read from the daily
totals, and the Overview's programme cards from the same summaries."""

from __future__ import annotations

import json
from decimal import Decimal

import sqlalchemy as sa

from services import history, movements, programme_reports
from services.models import Status
from tests.fault_support import SETTINGS, create, debit
from tests.test_programmes import credit

HISTORY = "pages/history.py"


def _move(app_desk) -> None:
    """Q3 credits 300 and 200, Diwali 50 (and a debit of 20 in Diwali); General opened the card."""
    ledger = app_desk.ledger
    for code, name in (("Q3", "Q3 <b>sales</b>"), ("DIWALI", "Diwali bonus")):
        ledger.create_programme(code=code, name=name, budget=Decimal(5000), actor="meera")
    with app_desk.client() as client:
        card = movements.request(ledger, client, create("10"), SETTINGS, operator="asha").row
        for amount, code in (("300", "Q3"), ("200", "Q3"), ("50", "DIWALI")):
            outcome = movements.request(
                ledger, client, credit(card.card_id, amount, code), SETTINGS, operator="asha"
            )
            assert outcome.status is Status.SUCCEEDED
        taken = debit(card.card_id, "20").model_copy(update={"programme": "DIWALI"})
        assert (
            movements.request(ledger, client, taken, SETTINGS, operator="asha").status
            is Status.SUCCEEDED
        )


def test_history_groups_its_chart_and_totals_by_programme(app, app_desk):
    _move(app_desk)
    app.switch_page(HISTORY).run()
    assert not app.exception, app.exception
    assert "By programme" not in [s.value for s in app.subheader]
    app.toggle(key="history_by_programme").set_value(True).run()
    assert not app.exception, app.exception
    assert "By programme" in [s.value for s in app.subheader]
    (table,) = [d for d in app.dataframe if "Net issued" in d.value.columns]
    rows = {r["Code"]: r for r in table.value.to_dict("records")}
    assert rows["Q3"]["Programme"] == "Q3 <b>sales</b>"  # a plain cell, as typed
    assert (rows["Q3"]["Credited"], rows["Q3"]["Net issued"]) == ("500.00", "500.00")
    assert (rows["DIWALI"]["Debited"], rows["DIWALI"]["Net issued"]) == ("20.00", "30.00")
    assert rows["GENERAL"]["Credited"] == "10.00"
    assert next(iter(rows)) == "Q3"  # largest credited first
    (chart,) = [c for c in app.get("plotly_chart") if "chart_by_programme" in c.proto.id]
    names = {trace["name"] for trace in json.loads(chart.proto.spec)["data"]}
    # One bar colour per programme; the typed name escaped (plotly reads HTML tags in names).
    assert names == {
        "Q3 &lt;b&gt;sales&lt;/b&gt; (Q3)",
        "Diwali bonus (DIWALI)",
        "General (GENERAL)",
    }


def test_a_programme_filter_reads_the_daily_totals(app_desk, monkeypatch):
    """Totals, series and breakdown of a programme come from ``daily_totals``, not the rows."""
    _move(app_desk)
    f = history.HistoryFilter.last_days(7, programmes=("DIWALI",))
    assert history.summarised(f)
    queried: list[str] = []

    def seen(conn, cursor, statement, *args):
        queried.append(statement)

    sa.event.listen(app_desk.ledger.engine, "before_cursor_execute", seen)
    try:
        series = history.series(app_desk.ledger, f)
        breakdown = history.status_breakdown(app_desk.ledger, f)
        reports = {r.programme.code: r for r in programme_reports.active_reports(app_desk.ledger)}
    finally:
        sa.event.remove(app_desk.ledger.engine, "before_cursor_execute", seen)
    assert sum(p.net for p in series) == Decimal(30)
    assert {s.status: s.transactions for s in breakdown}[Status.SUCCEEDED] == 2
    assert reports["Q3"].burn_down[-1][1] == Decimal(4500)
    assert reports["DIWALI"].burn_per_day == Decimal("1.00")  # 30 net over 30 days
    assert not [q for q in queried if "FROM transactions" in q]


def test_the_overview_lists_many_programmes_in_one_table(app, app_desk):
    """Past ``CARD_LIMIT`` active programmes the Overview shows one row each (no card each)."""
    from ui.programmes import CARD_LIMIT

    _move(app_desk)
    for i in range(CARD_LIMIT):
        app_desk.ledger.create_programme(
            code=f"P{i}", name=f"Programme {i}", budget=Decimal(100), actor="meera"
        )
    app.session_state["_first_paint_done"] = {"overview"}  # the programmes come with the charts
    app.run()
    assert not app.exception, app.exception
    (table,) = [d for d in app.dataframe if "Burn per day" in d.value.columns]
    rows = {r["Code"]: r for r in table.value.to_dict("records")}
    assert len(rows) == CARD_LIMIT + 3  # General, Q3, Diwali and the new ones
    assert (rows["Q3"]["Used"], rows["Q3"]["Remaining"]) == ("500.00", "4,500.00")
    assert rows["Q3"]["Remaining, last 30 days"][-1] == 4500.0
    assert rows["GENERAL"]["Budget"] == "no limit"
    assert not [c for c in app.get("plotly_chart") if "overview_burn_" in c.proto.id]
