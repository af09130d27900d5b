"""Programmes in the pages: the forms pick one, a budget refusal shows how much is left."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from services import approvals
from services.models import Status
from services.store.programmes import today_ist
from tests.test_pages_money import CREATE, CREDIT, fill_create, page_text


def make_programme(app_desk, code="Q3", name="Q3 sales incentive", budget="1000", **extra):
    return app_desk.ledger.create_programme(
        code=code, name=name, budget=Decimal(budget), actor="test", **extra
    )


def test_create_account_counts_against_the_chosen_programme(app, app_desk):
    make_programme(app_desk)
    app.switch_page(CREATE).run()
    assert app.selectbox(key="new_programme").value == "GENERAL"
    fill_create(app, new_amount="600")
    app.selectbox(key="new_programme").select("Q3")
    app.button(key="create_submit").click().run()
    assert not app.exception, app.exception
    row = app_desk.ledger.rows()[0]
    assert row.status is Status.SUCCEEDED
    q3 = app_desk.ledger.programme("Q3")
    assert q3.remaining == Decimal("400.00")
    # The next form opens on the programme this person used last.
    app.switch_page(CREDIT).run()
    app.text_input(key="credit_query").input("ravi").run()
    assert app.selectbox(key="credit_programme").value == "Q3"


def test_a_credit_past_the_budget_is_refused_next_to_the_programme(app, app_desk):
    make_programme(app_desk)
    app.switch_page(CREATE).run()
    fill_create(app, new_amount="600")
    app.selectbox(key="new_programme").select("Q3")
    app.button(key="create_submit").click().run()
    app.switch_page(CREDIT).run()
    app.text_input(key="credit_query").input("ravi").run()
    app.text_input(key="credit_amount").input("500")
    app.selectbox(key="credit_programme").select("Q3")
    app.button(key="credit_submit").click().run()
    assert not app.exception, app.exception
    text = page_text(app)
    assert "Q3 sales incentive has 400.00 points left, not enough for 500.00" in text
    assert len(app_desk.ledger.rows()) == 1  # nothing recorded
    assert app_desk.sandbox.store.allocate_requests() == 1  # nothing sent
    # The form is open again with what was typed: a smaller credit fits.
    assert not app.button(key="credit_submit").disabled
    app.text_input(key="credit_amount").input("400")
    app.button(key="credit_submit").click().run()
    assert "400.00 points credited to Ravi" in app.success[0].value
    assert app_desk.ledger.programme("Q3").remaining == Decimal("0.00")


PROGRAMMES = "pages/programmes.py"


def fill_new(app, **values):
    fields = {
        "code": "q3-sales",
        "name": "Q3 sales incentive",
        "budget": "5,00,000",
        "owner": "Meera",
        "description": "July to September",
        **values,
    }
    for field, value in fields.items():
        if field == "description":
            app.text_area(key=f"new_prog_{field}").input(value)
        else:
            app.text_input(key=f"new_prog_{field}").input(value)
    app.button(key="new_prog_submit").click().run()
    assert not app.exception, app.exception
    return app


def test_the_programmes_page_creates_a_programme_and_lists_its_budget(app, app_desk):
    """A budget above the batch threshold (1,00,000) waits for a second person: the programme
    is made with nothing to spend, and takes no credits until the budget is approved."""
    app.switch_page(PROGRAMMES).run()
    fill_new(app)
    created = app_desk.ledger.programme("Q3-SALES")
    assert created is not None and created.budget == Decimal("0")
    assert created.owner == "Meera" and created.description == "July to September"
    (notice,) = [w.value for w in app.warning if "Created" in w.value]
    assert "Created Q3 sales incentive (Q3-SALES); waiting for approval by a second person: " in (
        notice
    )
    assert "give new programme Q3-SALES a budget of 5,00,000 points" in notice
    assert notice.endswith("Until then it takes no credits.")
    table = app.dataframe[0].value
    row = table[table["Code"] == "Q3-SALES"].iloc[0]
    assert row["Budget"] == "0.00" and row["Remaining"] == "0.00"
    assert [e.action for e in app_desk.ledger.programme_events("Q3-SALES")] == [
        "created",
        "raise asked",
    ]
    # No credit is taken meanwhile.
    app.switch_page(CREATE).run()
    fill_create(app, new_amount="600")
    app.selectbox(key="new_programme").select("Q3-SALES")
    app.button(key="create_submit").click().run()
    assert "has 0.00 points left, not enough for 600.00" in page_text(app)
    assert app_desk.ledger.rows() == []
    # Approved (the open sandbox lets its one person decide), the budget applies.
    app.switch_page("pages/approvals.py").run()
    assert "give new programme Q3-SALES a budget of 5,00,000 points" in page_text(app)
    (button,) = [b for b in app.button if b.key and b.key.startswith("approve_")]
    button.click().run()
    assert not app.exception, app.exception
    assert app_desk.ledger.programme("Q3-SALES").budget == Decimal("500000")
    app.switch_page(PROGRAMMES).run()
    table = app.dataframe[0].value
    row = table[table["Code"] == "Q3-SALES"].iloc[0]
    assert row["Budget"] == "5,00,000.00" and row["Remaining"] == "5,00,000.00"


def test_a_programme_with_a_small_budget_is_created_at_once(app, app_desk):
    app.switch_page(PROGRAMMES).run()
    fill_new(app, code="small", budget="50,000")
    assert app_desk.ledger.programme("SMALL").budget == Decimal("50000")
    assert "Created Q3 sales incentive (SMALL)." in [s.value for s in app.success]
    assert not [w for w in app.warning if "Created" in w.value]
    assert [e.action for e in app_desk.ledger.programme_events("SMALL")] == ["created"]
    assert approvals.pending(app_desk.ledger) == []
    table = app.dataframe[0].value
    row = table[table["Code"] == "SMALL"].iloc[0]
    assert row["Budget"] == "50,000.00" and row["Remaining"] == "50,000.00"


def test_bad_programme_fields_are_said_next_to_each_field(app, app_desk):
    app_desk.ledger.create_programme(code="Q3", name="Taken", budget=None, actor="t")
    app.switch_page(PROGRAMMES).run()
    fill_new(app, code="bad code!", budget="lots", name="")
    text = page_text(app)
    assert "A short code is 1 to 16 letters" in text
    assert "Enter the points as a number" in text
    assert "Give the programme a name" in text
    fill_new(app, code="q3", budget="100", name="Another")
    assert "Another programme already has the code Q3" in page_text(app)
    assert "Q3" in [p.code for p in app_desk.ledger.list_programmes()]
    assert app_desk.ledger.programme("BAD CODE!") is None
    assert app_desk.ledger.programme("Q3").name == "Taken"


def test_a_large_budget_raise_waits_for_approval_and_a_small_one_applies(app, app_desk):
    make_programme(app_desk, budget="1000")
    app.switch_page(PROGRAMMES).run()
    app.selectbox(key="edit_prog_choice").select("Q3").run()
    assert app.text_input(key="edit_prog_budget").value == "1000.00"
    app.text_input(key="edit_prog_budget").input("2000")
    app.button(key="edit_prog_submit").click().run()
    assert app_desk.ledger.programme("Q3").budget == Decimal("2000")
    app.text_input(key="edit_prog_budget").input("5,00,000")
    app.text_input(key="edit_prog_owner").input("Meera")
    app.button(key="edit_prog_submit").click().run()
    assert not app.exception, app.exception
    assert "waiting for approval" in page_text(app)
    q3 = app_desk.ledger.programme("Q3")
    assert q3.budget == Decimal("2000") and q3.owner == "Meera"
    changes = app.dataframe[1].value  # the programme's changes, newest first
    assert changes["What"].tolist()[:2] == ["edited", "raise asked"]
    assert "raise Q3 from 2,000 to 5,00,000 points" in changes["Detail"].tolist()
    app.switch_page("pages/approvals.py").run()
    text = page_text(app)
    assert "Change to **Q3 sales incentive** (`Q3`)  \nraise Q3 from 2,000 to 5,00,000 points" in (
        text
    )
    assert ("New budget", "5,00,000.00") in [(m.label, m.value) for m in app.metric]
    (button,) = [b for b in app.button if b.key and b.key.startswith("approve_")]
    button.click().run()
    assert not app.exception, app.exception
    assert app_desk.ledger.programme("Q3").budget == Decimal("500000")
    assert "Approved the change to Q3: the budget is now 5,00,000.00." in page_text(app)
    assert app.dataframe[0].value["What"].tolist() == ["change to Q3"]


def test_closing_a_programme_takes_it_off_the_forms(app, app_desk):
    make_programme(app_desk)
    app.switch_page(PROGRAMMES).run()
    app.selectbox(key="edit_prog_choice").select("Q3").run()
    app.button(key="edit_prog_close").click().run()
    assert app_desk.ledger.programme("Q3").state == "closed"
    app.switch_page(CREATE).run()
    assert app.selectbox(key="new_programme").options == ["General (no budget limit)"]


def test_a_viewer_sees_programmes_but_cannot_change_them(desk_env):
    from tests.auth_support import signed_in_app, write_secrets

    write_secrets(desk_env)
    viewer = signed_in_app("tara")
    viewer.switch_page(PROGRAMMES).run()
    assert not viewer.exception, viewer.exception
    assert len(viewer.dataframe) == 1
    assert not [b for b in viewer.button if b.key == "new_prog_submit"]
    operator = signed_in_app("asha")
    operator.switch_page(PROGRAMMES).run()
    assert operator.button(key="new_prog_submit") is not None


def test_the_bulk_page_takes_a_programme_for_the_file_and_refuses_rows_past_its_budget(
    app, app_desk
):
    from tests.test_bulk_page import BULK, GOOD, content, metrics, upload

    make_programme(app_desk, budget="1000")  # GOOD credits 100, 200, 300, 400, 500
    app.switch_page(BULK).run()
    app.selectbox(key="bulk_programme").select("Q3").run()
    upload(app, "october.csv", content(*GOOD))
    shown = metrics(app)
    assert shown["Ready to send"] == "4" and shown["Rejected"] == "1"
    totals = app.table[0].value
    assert list(totals.index) == ["Q3 sales incentive (Q3)"]
    assert totals.iloc[0]["Remaining now"] == "1,000.00"
    assert totals.iloc[0]["Remaining after"] == "0.00"
    assert "1 credit rows do not fit" in page_text(app)
    rejected = app.dataframe[1].value
    assert rejected.iloc[0]["Problem"] == (
        "programme: Q3 sales incentive has 0.00 points left after earlier rows take "
        "1,000.00; this credit of 500.00 does not fit"
    )


def test_the_overview_shows_each_programme_with_its_remainder_and_burn_down(app, app_desk):
    make_programme(app_desk)
    app.switch_page(CREATE).run()
    fill_create(app, new_amount="600")
    app.selectbox(key="new_programme").select("Q3")
    app.button(key="create_submit").click().run()
    app.session_state["_first_paint_done"] = {"overview"}  # the programmes come with the charts
    app.switch_page("pages/overview.py").run()
    assert not app.exception, app.exception
    shown = {}
    for metric in app.metric:
        shown.setdefault(metric.label, []).append(metric.value)
    assert "4,00.00" not in shown.get("Remaining", [])
    assert "400.00" in shown["Remaining"] and "600.00" in shown["Used"]
    assert "20.00" in shown["Burn per day"]  # 600 over 30 days
    text = page_text(app)
    assert "Q3 sales incentive" in text
    runs_out = today_ist() + timedelta(days=20)  # 400 left at 20 a day
    assert f"the budget runs out on **{runs_out:%d %b %Y}**" in text
    charts = [c for c in app.get("plotly_chart") if "overview_burn_Q3" in str(c.proto.id)]
    assert charts


def test_the_statement_downloads_and_history_filters_by_programme(app, app_desk):
    make_programme(app_desk, name="*Q3* [bonus](http://x)")
    app.switch_page(CREATE).run()
    fill_create(app, new_amount="600")
    app.selectbox(key="new_programme").select("Q3")
    app.button(key="create_submit").click().run()
    app.switch_page(PROGRAMMES).run()
    app.selectbox(key="statement_programme").select("Q3").run()
    labels = [b.label for b in app.get("download_button")]
    assert "Statement (CSV)" in labels and "Statement (Excel)" in labels
    app.session_state["_first_paint_done"] = {"overview"}  # the programmes come with the charts
    app.switch_page("pages/overview.py").run()
    assert "\\*Q3\\* \\[bonus\\]" in page_text(app)  # supplied names read as typed
    app.switch_page("pages/history.py").run()
    app.multiselect(key="history_programmes").select("Q3").run()
    assert app.dataframe[0].value["Programme"].tolist() == ["Q3"]
    app.multiselect(key="history_programmes").unselect("Q3").select("GENERAL").run()
    assert not app.exception, app.exception
    assert app.dataframe[0].value.shape[0] == 0
    assert "No transactions match these filters." in page_text(app)


def test_a_debit_above_its_programmes_own_threshold_goes_for_approval(app, app_desk):
    from tests.test_pages_money import DEBIT

    make_programme(app_desk, budget="5000", debit_threshold=Decimal(50))
    app.switch_page(CREATE).run()
    fill_create(app, new_amount="600")
    app.button(key="create_submit").click().run()
    app.switch_page(DEBIT).run()
    app.text_input(key="debit_query").input("ravi").run()
    app.text_input(key="debit_amount").input("60")
    app.selectbox(key="debit_programme").select("Q3")
    app.button(key="debit_submit").click().run()
    text = page_text(app)
    assert "above the approval limit of 50 points" in text  # Q3's own, not the global 10,000
    app.button(key="debit_confirm").click().run()
    assert not app.exception, app.exception
    debit = next(r for r in app_desk.ledger.rows() if r.kind.value == "debit")
    assert debit.status is Status.QUEUED  # held: nothing sent
    assert app_desk.sandbox.store.allocate_requests() == 1


def test_the_bulk_confirmation_lists_the_programmes_touched(app, app_desk):
    from tests.test_bulk_page import BULK, GOOD, content, upload

    make_programme(app_desk, budget="5000")
    app.switch_page(BULK).run()
    app.selectbox(key="bulk_programme").select("Q3").run()
    upload(app, "october.csv", content(*GOOD))
    app.button(key="bulk_send").click().run()
    assert "Programmes: **Q3 sales incentive** 1,500.00 credited, 3,500.00 left" in page_text(app)


def test_a_credit_past_the_monthly_limit_waits_and_the_approvals_page_says_why(app, app_desk):
    make_programme(app_desk, budget="5000", monthly_operator_limit=Decimal(100))
    app.switch_page(CREATE).run()
    fill_create(app, new_amount="50")
    app.selectbox(key="new_programme").select("Q3")
    app.button(key="create_submit").click().run()
    app.switch_page(CREDIT).run()
    app.text_input(key="credit_query").input("ravi").run()
    app.text_input(key="credit_amount").input("80")
    app.button(key="credit_submit").click().run()
    assert not app.exception, app.exception
    held = next(r for r in app_desk.ledger.rows() if r.kind.value == "credit")
    assert held.status is Status.QUEUED
    app.switch_page("pages/approvals.py").run()
    text = page_text(app)
    assert "Credit to **Mr Ravi**" in text and "programme **Q3 sales incentive**" in text
    assert "monthly limit of 100.00 points in Q3 sales incentive (50.00 left this month)" in text
    assert "Points to credit" in [m.label for m in app.metric]


def test_a_programme_name_stays_text_in_every_label_of_the_programmes_page(app, app_desk):
    """A name is typed by people: in the edit view's "Changes to …" and "Close …" labels (read
    as Markdown by Streamlit) it is shown as typed, never as a link or an image."""
    from tests.markdown_support import markdown_strings, problems

    name = "PNAME [Verify](https://evil.example/p) ![](http://evil.example/t.png) **b**"
    make_programme(app_desk, name=name)
    app_desk.ledger.update_programme("Q3", actor="test", owner="Meera")  # one change to list
    app.switch_page(PROGRAMMES).run()
    app.selectbox(key="edit_prog_choice").select("Q3").run()
    assert not app.exception, app.exception
    labels = [s for s in markdown_strings(app) if "PNAME" in s]
    assert any(s.startswith("Changes to") for s in labels)
    assert any(s.startswith("Close") for s in labels)
    assert {s: found for s in labels if (found := problems(s))} == {}
