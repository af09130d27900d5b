"""Hostile text in the fields tests/test_pages_markdown.py leaves out stays text on every page:
a programme's name, owner and description, a schedule's name and row reason, and an employee's
name as EnKash sends it. No live link, image, HTML, maths or colour reaches a screen, and no
Plotly chart reads tags in them (AppTest, the open sandbox)."""

from __future__ import annotations

import json
import re
from datetime import datetime, time, timedelta
from decimal import Decimal

import pytest

from services import allocations, schedules
from services.recurrence import IST, Repeat, Rule
from services.sandbox.store import AllocationRequest
from tests.conftest import app_with_search
from tests.fault_support import create
from tests.markdown_support import hostile, markdown_strings, problems, shown
from tests.test_pages_money import CREATE, CREDIT, fill_create

PROGRAMMES, OVERVIEW, HISTORY, APPROVALS, SCHEDULES, BULK, EMPLOYEE = (
    "pages/programmes.py",
    "pages/overview.py",
    "pages/history.py",
    "pages/approvals.py",
    "pages/schedules.py",
    "pages/bulk.py",
    "pages/employee.py",
)


def short(marker: str) -> str:
    """Hostile text that fits an 80-character field: a link, an image, HTML a chart would read
    (an anchor, bold) and emphasis; ``marker`` names the field."""
    text = f"{marker} [Go](//evil.example) ![](//evil.example) <a href=//x>a</a> **b** <b>h</b>"
    assert len(text) <= 80, len(text)
    return text


def label_text(marker: str) -> str:
    """Hostile text for a 100-character field: also a colour directive, maths and a bare URL."""
    text = f"{marker} [Go](//evil.example) ![](//evil.example) **b** <b>h</b> :red[x] $x$ "
    text += "www.evil.example"
    assert len(text) <= 100, len(text)
    return text


class Screens:
    """Checks every run: Markdown strings and Plotly figures that hold supplied text."""

    def __init__(self, typed: dict[str, str]) -> None:
        self.typed = typed  # marker -> the hostile text typed (or sent) with it
        self.seen: set[str] = set()
        self.charts: set[str] = set()
        self.found: dict[str, list[str]] = {}

    def check(self, at, where: str) -> None:
        assert not at.exception, (where, at.exception)
        for source in map(_unwrapped, markdown_strings(at)):
            markers = [m for m in self.typed if m in source]
            if not markers and "evil" not in source:
                continue  # the app's own text (its badges are directives on purpose)
            found = problems(source)
            reads = shown(source)
            found += [
                f"{m} not shown as typed in {source!r}"
                for m in markers
                if " ".join(self.typed[m].split()) not in reads
            ]
            if found:
                self.found.setdefault(where, []).extend(found)
            self.seen |= set(markers)
        for chart in at.get("plotly_chart"):
            for text in _strings(json.loads(chart.proto.spec)):
                markers = [m for m in self.typed if m in text]
                self.charts |= set(markers)
                if (markers or "evil" in text) and re.search(r"<\s*(a|b|img)\b", text, re.I):
                    self.found.setdefault(f"{where}, chart {chart.proto.id}", []).append(text)

    def assert_clean(self, *, shown_markers, charted=()) -> None:
        assert not self.found, "\n".join(
            f"{w}: {bad}" for w, bads in self.found.items() for bad in bads
        )
        assert set(shown_markers) <= self.seen, f"never shown: {set(shown_markers) - self.seen}"
        assert set(charted) <= self.charts, f"never charted: {set(charted) - self.charts}"


def _unwrapped(source: str) -> str:
    """A field error's text without the app's own colour around it (``:red[...]``)."""
    coloured = re.fullmatch(r":red\[(.*)\]", source, re.DOTALL)
    return coloured.group(1) if coloured else source


def _strings(value):
    """Every string of a Plotly figure's JSON (trace names, labels, text, customdata, hovers)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def a_card(app_desk) -> str:
    with app_desk.client() as client:
        outcome = allocations.submit(app_desk.ledger, client, create("10", 1), operator="setup")
    return outcome.row.card_id


# --- programmes ---------------------------------------------------------------------------------

PNAME, OWNER, DESCRIPTION, RUN_LABEL = "PNAME", "OWNER", "PDESC", "RUNLABEL"


def test_a_programmes_name_owner_and_description_stay_text_on_every_page(app, app_desk):
    """The name is shown in notices, labels, approval cards, the Overview's cards, the bulk
    page's totals and pre-flight, and History's chart; the owner and description only in plain
    cells and inputs (they are checked wherever they might appear all the same)."""
    typed = {
        PNAME: short(PNAME),
        OWNER: short(OWNER),
        DESCRIPTION: hostile(DESCRIPTION),
        RUN_LABEL: label_text(RUN_LABEL),
    }
    screens = Screens(typed)

    # Created on the Programmes page: its notice, the list, the statement section.
    app.switch_page(PROGRAMMES).run()
    for field, key in (("code", "Q3"), ("name", typed[PNAME]), ("owner", typed[OWNER])):
        app.text_input(key=f"new_prog_{field}").input(key)
    app.text_input(key="new_prog_budget").input("1000")
    app.text_input(key="new_prog_monthly_operator_limit").input("700")
    app.text_area(key="new_prog_description").input(typed[DESCRIPTION])
    app.button(key="new_prog_submit").click().run()
    assert app_desk.ledger.programme("Q3").name == typed[PNAME]
    screens.check(app, "programmes after create")
    app.selectbox(key="statement_programme").select("Q3").run()
    screens.check(app, "programme statement")

    # The edit view, then a raise that waits for approval (its notice names the programme).
    app.selectbox(key="edit_prog_choice").select("Q3").run()
    screens.check(app, "programme edit view")
    app.text_input(key="edit_prog_budget").input("5,00,000")
    app.button(key="edit_prog_submit").click().run()
    screens.check(app, "programme saved, raise waiting")
    app.switch_page(APPROVALS).run()
    screens.check(app, "approvals: the budget raise")
    (approve,) = [b for b in app.button if b.key and b.key.startswith("approve_")]
    approve.click().run()
    screens.check(app, "approvals: raise approved")

    # Points drawn from it on the Create page; a credit past what is left names it.
    app.switch_page(CREATE).run()
    fill_create(app, new_amount="600")
    app.selectbox(key="new_programme").select("Q3")
    app.button(key="create_submit").click().run()
    screens.check(app, "create account in the programme")
    card = app_desk.ledger.rows()[0].card_id
    # Past the programme's monthly limit a credit waits: the approval card names the programme.
    app.switch_page(CREDIT).run()
    app.text_input(key="credit_query").input(card).run()
    app.text_input(key="credit_amount").input("200")
    app.selectbox(key="credit_programme").select("Q3")
    app.button(key="credit_submit").click().run()
    screens.check(app, "credit held past the monthly limit")
    app.switch_page(APPROVALS).run()
    assert "programme **PNAME" in " ".join(m.value for m in app.markdown)
    screens.check(app, "approvals: the held credit")
    app.switch_page(CREDIT).run()
    app.button(key="credit_new").click().run()
    app.text_input(key="credit_query").input(card).run()
    app.text_input(key="credit_amount").input("9,00,000")
    app.selectbox(key="credit_programme").select("Q3")
    app.button(key="credit_submit").click().run()
    screens.check(app, "credit past the programme's budget")

    # A schedule from it that will not fit its budget: the runway and alerts on the Overview.
    rule = Rule(Repeat.ONCE, datetime.now(IST).date() + timedelta(days=2), time(9, 0))
    rows = [{"kind": "credit", "card_id": card, "amount_cents": 99_000_000, "reason": "big"}]
    record = schedules.create(
        app_desk.ledger, label=typed[RUN_LABEL], programme="Q3", rule=rule, rows=rows, maker="asha"
    )
    schedules.approve(app_desk.ledger, record.id, approver="vikram")
    app.session_state["_first_paint_done"] = {"overview"}  # the programmes come with the charts
    app.switch_page(OVERVIEW).run()
    screens.check(app, "overview")

    # History grouped by programme: the stacked chart names it in its legend and hover.
    app.switch_page(HISTORY).run()
    app.toggle(key="history_by_programme").set_value(True).run()
    screens.check(app, "history by programme")

    # A bulk file for it: the totals, the confirmation and the pre-flight name it.
    from tests.test_bulk_page import content, upload

    app.switch_page(BULK).run()
    app.selectbox(key="bulk_programme").select("Q3").run()
    upload(app, "october.csv", content(f"credit,,,,,,{card},100,bonus"))
    screens.check(app, "bulk preview")
    app.button(key="bulk_send").click().run()
    screens.check(app, "bulk confirmation")

    # Closed from the edit view: its notice names it.
    app.switch_page(PROGRAMMES).run()
    app.selectbox(key="edit_prog_choice").select("Q3").run()
    app.button(key="edit_prog_close").click().run()
    assert app_desk.ledger.programme("Q3").state == "closed"
    screens.check(app, "programme closed")

    screens.assert_clean(shown_markers=(PNAME, RUN_LABEL), charted=(PNAME,))


# --- schedules ----------------------------------------------------------------------------------

SLABEL, SREASON, SPROG = "SLABEL", "SREASON", "SPROG"


def test_a_schedules_name_and_row_reason_stay_text_on_every_page(app, app_desk):
    typed = {SLABEL: label_text(SLABEL), SREASON: hostile(SREASON), SPROG: short(SPROG)}
    screens = Screens(typed)
    card = a_card(app_desk)
    app_desk.ledger.create_programme(code="TINY", name=typed[SPROG], budget=Decimal(50), actor="t")

    # Set up on the page, from a programme whose budget it will not fit.
    app.switch_page(SCHEDULES).run()
    app.text_input(key="new_sched_label").input(typed[SLABEL])
    app.selectbox(key="new_sched_programme").select("TINY")
    app.radio(key="new_sched_repeat").set_value("once").run()
    tomorrow = datetime.now(IST).date() + timedelta(days=1)
    app.date_input(key="new_sched_start_on").set_value(tomorrow)
    app.time_input(key="new_sched_time").set_value(time(9, 0))
    app.text_input(key="new_sched_reason").input(typed[SREASON])
    app.text_area(key="new_sched_rows").input(f"{card}, 100").run()
    screens.check(app, "schedule form with its pre-flight")
    app.button(key="new_sched_submit").click().run()
    (record,) = app_desk.ledger.list_schedules()
    assert record.label == typed[SLABEL]
    screens.check(app, "schedule set up")

    # Approved, paused, resumed: each notice names it.
    for action in ("approve", "pause", "resume"):
        app.button(key=f"sched_{action}_{record.id}").click().run()
        screens.check(app, f"schedule {action}")

    # The edit view, and an edit that waits for approval.
    app.selectbox(key="edit_sched_choice").select(record.id).run()
    screens.check(app, "schedule edit view")
    app.text_area(key="edit_sched_rows").input(f"{card}, 120")
    app.button(key="edit_sched_submit").click().run()
    screens.check(app, "schedule edit waiting")
    app.button(key=f"sched_approve_{record.id}").click().run()

    # Its run is refused by the programme (the note names it), then sent by a person.
    later = datetime.combine(tomorrow, time(10, 0), tzinfo=IST)  # an hour after it was due
    schedules.materialise_due(app_desk.ledger, app_desk.settings, now=later, actor="test")
    (run,) = app_desk.ledger.schedule_runs(record.id)
    assert run.state == "refused", run
    app.run()
    screens.check(app, "schedule with a refused run")
    app.session_state["_first_paint_done"] = {"overview"}
    app.switch_page(OVERVIEW).run()
    screens.check(app, "overview with the refused run")
    app_desk.ledger.update_programme("TINY", actor="t", budget=Decimal(5000))
    app.switch_page(SCHEDULES).run()
    app.button(key=f"sched_send_{run.id}").click().run()
    screens.check(app, "schedule run sent now")
    app.switch_page(BULK).run()
    screens.check(app, "bulk page with the schedule's batch")

    screens.assert_clean(shown_markers=(SLABEL, SPROG))


# --- an employee as EnKash names them -----------------------------------------------------------

ENAME, ENAME2, EREPLY, SLY = "ENAME", "EKTWO", "REPLYNAME", "sly"
# Letters, spaces, dots and underscores: it passes for a plain first name, yet holds a bare
# web address (a link once rendered) and emphasis.
PLAIN_NAME = f"Anu www.evil.example _{SLY}_"


def _card_at_enkash(app_desk, number: int, first_name: str, email: str, mobile: str) -> str:
    """A card made outside Points Desk (EnKash's portal): its holder's name is EnKash's text."""
    outcome = app_desk.sandbox.store.allocate(
        AllocationRequest(
            reference=f"PORTAL{number:016d}",
            transaction_type="CR",
            amount=Decimal("100"),
            email=email,
            mobile=mobile,
            title="Ms",
            first_name=first_name,
            gender="F",
        )
    )
    assert outcome.ok, outcome.message
    return outcome.payload["enKashCardId"]


@pytest.fixture
def named_by_enkash(app, app_desk):
    """Two cards EnKash holds for one mobile (written two ways), their names EnKash's text, and
    a third whose name passes for a plain one but holds a URL and emphasis."""
    # A reply's name is taken up to 100 characters (services.allocations.reported_holder).
    typed = {ENAME: short(ENAME), ENAME2: hostile(ENAME2), EREPLY: label_text(EREPLY)}
    typed[SLY] = PLAIN_NAME
    cards = {
        ENAME: _card_at_enkash(app_desk, 1, typed[ENAME], "a1@example.com", "9600011111"),
        ENAME2: _card_at_enkash(app_desk, 2, typed[ENAME2], "a2@example.com", "+919600011111"),
        SLY: _card_at_enkash(app_desk, 3, PLAIN_NAME, "anu@example.com", "9600022222"),
    }
    return typed, cards


def test_an_employees_name_from_enkash_stays_text_on_their_page_search_and_forms(
    app, app_desk, named_by_enkash
):
    typed, cards = named_by_enkash
    screens = Screens(typed)

    # The sidebar search: a mobile two cards share lists both. AppTest draws the sidebar on a
    # session's first run only, so a fresh session is drawn with the search's answer.
    searching = app_with_search()  # the search box comes with the Overview's charts
    searching.sidebar.text_input(key="sidebar_search").input("9600011111").run()
    found = searching.session_state["_search_result"]
    assert {e.card_id for e in found.employees} == {cards[ENAME], cards[ENAME2]}
    fresh = app_with_search(_search_result=found)
    links = [p.proto.label for p in fresh.get("page_link")]
    assert [m for m in (ENAME, ENAME2) if any(m in label for label in links)] == [ENAME, ENAME2]
    screens.check(fresh, "sidebar search results")

    # An exact email opens the employee's page.
    fresh.sidebar.text_input(key="sidebar_search").input("a1@example.com").run()
    assert fresh.title[0].value.startswith("Ms ENAME"), fresh.title[0].value
    screens.check(fresh, "employee page from the search")

    # Each one's page, and the credit form's match (EnKash's name is no first name Points Desk
    # would send, so the form says the card's details are incomplete).
    # (Found by email, the key a manager types most.)
    for marker, email in ((ENAME, "a1@example.com"), (ENAME2, "a2@example.com")):
        app.switch_page(EMPLOYEE)
        app.query_params["card"] = cards[marker]
        app.run()
        screens.check(app, f"employee page of {marker}")
        app.switch_page(CREDIT).run()
        app.text_input(key="credit_query").input(email).run()
        app.text_input(key="credit_amount").input("25")
        app.button(key="credit_submit").click().run()
        screens.check(app, f"credit form for {marker}")

    # A credit whose reply names another holder: the outcome names EnKash's, and warns.
    card = a_card(app_desk)
    app_desk.sandbox.knobs.reply_payload = {"firstName": typed[EREPLY], "title": "Ms"}
    app.switch_page(CREDIT).run()
    app.text_input(key="credit_query").input(card).run()
    app.text_input(key="credit_amount").input("25")
    app.button(key="credit_submit").click().run()
    assert app.success, [e.value for e in app.error]
    screens.check(app, "credit outcome naming EnKash's holder")
    app_desk.sandbox.knobs.reply_payload = {}

    # Creating an account for an email EnKash already has: the held create names its holder,
    # and the button to credit that card instead too.
    for marker, email in ((ENAME, "a1@example.com"), (SLY, "anu@example.com")):
        app.switch_page(CREATE).run()
        fill_create(app, new_email=email, new_mobile="9811100000", new_amount="10")
        app.button(key="create_submit").click().run()
        assert "already has a card" in " ".join(w.value for w in app.warning)
        screens.check(app, f"create held for {marker}'s card")
        app.button(key="create_stop").click().run()

    screens.assert_clean(shown_markers=(ENAME, ENAME2, EREPLY, SLY))
