"""The Overview shows the runway (30/60/90 days, run-out day, runs that will not fit, a chart)
and the active alerts as a banner list."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from streamlit.testing.v1 import AppTest

from services import schedules
from services.models import UpcomingRun
from tests.auth_support import page_text
from tests.conftest import PROJECT, assert_summaries_agree

HOSTILE = "*Big* [bonus](http://evil.example)"


def test_the_overview_shows_the_runway_and_an_active_alert(desk_env, monkeypatch):
    # The sandbox pool is 1,00,00,000 points: below an alert level of 2 crore, and a run of 1.5
    # crore in five days will not fit.
    monkeypatch.setenv("POINTS_DESK_ALERT_POOL_BELOW", "20000000")

    def upcoming(_ledger, *, now, until):
        due = now + timedelta(days=5)
        later = [
            UpcomingRun("sched-2", f"Top-up {n}", due + timedelta(days=n), Decimal("1000"))
            for n in range(1, 5)
        ]
        return [UpcomingRun("sched-1", HOSTILE, due, Decimal("15000000")), *later]

    monkeypatch.setattr(schedules, "upcoming_runs", upcoming)
    at = AppTest.from_file(str(PROJECT / "app.py"), default_timeout=30)
    at.run()
    # A later look at the page in this session: its charts are drawn (ui/first_paint.py).
    at.session_state["_first_paint_done"] = {"overview"}
    at.switch_page("pages/overview.py").run()
    assert not at.exception, at.exception
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("**Pool below 2,00,00,000 points**") for w in warnings), warnings
    # The run's label, supplied by people, reads as typed in the alert (escaped Markdown).
    assert any("\\*Big\\* \\[bonus\\]" in w for w in warnings), warnings
    text = page_text(at)
    # Where delivery stands is said once for the alerts shown, not under each of them.
    delivery = [c.value for c in at.caption if "no webhook or e-mail is configured" in c.value]
    assert delivery == ["Every alert above: shown here only: no webhook or e-mail is configured"]
    # Nothing went out in the last 30 days: no made-up "less the schedules' pace" arithmetic.
    assert "and no other spending (no points went out, net, in the last 30 days)" in text
    assert "Runway" in [h.value for h in at.subheader]
    assert "At this pace the pool runs out on" in text
    horizons = at.table[0].value
    assert list(horizons.index) == ["30 days", "60 days", "90 days"]
    assert horizons.loc["30 days", "Scheduled runs"] == "1,50,04,000.00"
    short = next(d.value for d in at.dataframe if "Pool short by" in d.value.columns)
    assert short["Run"].tolist()[0] == HOSTILE  # a plain-text cell: as typed
    # Nothing is left after the first: each later run is short by all of it.
    assert short["Pool short by"].tolist() == ["50,00,000.00"] + ["1,000.00"] * 4
    # No programme is short: the warning names only the pool, and the programme's empty
    # columns are not shown (they push the rest off a phone).
    assert "5 scheduled runs do not fit the pool:" in warnings, warnings
    assert "Programme short by" not in short.columns and "Why" not in short.columns
    # Five runs will not fit: three alerts are shown, then how many more.
    assert sum("Scheduled run will not fit" in w for w in warnings) == 3
    assert "… and 2 more alerts like these (every run is listed under Runway below)." in warnings
    assert any("overview_runway" in str(c.proto.id) for c in at.get("plotly_chart"))
    from ui.context import _desk

    assert_summaries_agree(_desk().ledger)


def test_the_bulk_confirm_step_shows_the_pre_flight(app, app_desk):
    from tests.test_bulk_page import BULK, GOOD, content, upload

    app.switch_page(BULK).run()
    upload(app, "october.csv", content(*GOOD))
    app.button(key="bulk_send").click().run()
    assert not app.exception, app.exception
    text = page_text(app)
    # No batch has finished yet: the duration is an estimate, and says so.
    assert "Expected to take **about 1 s**" in text
    assert "estimate: " in text  # how it was worked out, in a caption of its own
    assert "Expected to take **about 1 s**, at about " in text
    assert "rows a second (" not in text  # no brackets in brackets on the line itself
    # 5 creates of 100 .. 500 = 1,500 from the sandbox's 1,00,00,000.
    assert "Pool after: **99,98,500.00** points (now 1,00,00,000.00)" in text
    assert "Need approval: no row" in text


def test_the_rows_needing_approval_read_as_words():
    from ui.preflight import _rows

    assert _rows([9]) == "row 9"
    assert _rows([2, 5, 7]) == "rows 2, 5 and 7"
    assert _rows(list(range(1, 13))) == "rows 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more"
