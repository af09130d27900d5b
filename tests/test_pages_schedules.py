"""The Schedules page: set one up, see it wait for approval, approve, pause, resume, edit future
runs, and decide a late run; bad input is said next to the field and nothing is recorded."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from services import allocations, schedules
from services.recurrence import IST, Repeat, Rule
from tests.fault_support import create
from tests.test_pages_money import page_text

SCHEDULES = "pages/schedules.py"


def a_card(app_desk) -> str:
    with app_desk.client() as client:
        allocations.submit(app_desk.ledger, client, create("10", 1), operator="setup")
    return app_desk.ledger.rows()[0].card_id


def fill(app, *, label="Monthly *allowance*", rows="", repeat="monthly", day=31):
    app.text_input(key="new_sched_label").input(label)
    app.radio(key="new_sched_repeat").set_value(repeat).run()
    if repeat == "monthly":
        app.number_input(key="new_sched_day").set_value(day)
    else:  # tomorrow, so the run is in the future whatever the time of day
        tomorrow = datetime.now(IST).date() + timedelta(days=1)
        app.date_input(key="new_sched_start_on").set_value(tomorrow)
    app.text_input(key="new_sched_reason").input("allowance")
    app.text_area(key="new_sched_rows").input(rows)
    app.button(key="new_sched_submit").click().run()
    assert not app.exception, app.exception


def test_a_schedule_is_set_up_approved_paused_resumed_and_edited_on_the_page(app, app_desk):
    card = a_card(app_desk)
    app_desk.ledger.create_programme(
        code="BONUS", name="Bonus", budget=Decimal("50000"), actor="finance"
    )
    app.switch_page(SCHEDULES).run()
    assert not app.exception, app.exception

    fill(app, rows=f"{card}, 500\nnot a card")
    assert "line 2: Write a card id and an amount" in page_text(app)
    assert app_desk.ledger.list_schedules() == []  # nothing recorded

    app.selectbox(key="new_sched_programme").select("BONUS")
    fill(app, rows=f"{card}, 500\n{card.lower()}\t250")
    (record,) = app_desk.ledger.list_schedules()
    assert record.state == "pending_approval" and record.programme == "BONUS"
    assert record.label == "Monthly *allowance*" and record.day_of_month == 31
    assert [r.amount for r in app_desk.ledger.schedule_rows(record.id, 1)] == [
        Decimal("500"),
        Decimal("250"),
    ]
    text = page_text(app)
    assert "it waits for a second person" in text
    assert "Monthly \\*allowance\\*" in text  # a name is escaped, never Markdown
    assert app.expander[0].label.startswith("Monthly \\*allowance\\* · ")

    # The open sandbox has no second person: its one local person may approve.
    app.button(key=f"sched_approve_{record.id}").click().run()
    assert app_desk.ledger.get_schedule(record.id).state == "active"
    app.button(key=f"sched_pause_{record.id}").click().run()
    assert app_desk.ledger.get_schedule(record.id).state == "paused"
    app.button(key=f"sched_resume_{record.id}").click().run()
    assert app_desk.ledger.get_schedule(record.id).state == "active"

    app.selectbox(key="edit_sched_choice").select(record.id).run()
    assert app.text_area(key="edit_sched_rows").value == f"{card}, 500.00\n{card}, 250.00"
    app.text_area(key="edit_sched_rows").input(f"{card}, 900")
    app.button(key="edit_sched_submit").click().run()
    assert not app.exception, app.exception
    edited = app_desk.ledger.get_schedule(record.id)
    assert edited.version == 1 and edited.pending_version == 2
    assert "Edit waiting for approval" in page_text(app)


def test_a_late_run_waits_on_the_page_and_a_person_skips_it(app, app_desk):
    card = a_card(app_desk)
    app.switch_page(SCHEDULES).run()
    fill(app, rows=f"{card}, 100", repeat="once")
    (record,) = app_desk.ledger.list_schedules()
    schedules.approve(app_desk.ledger, record.id, approver="someone else")
    later = record.created_at + timedelta(days=3)  # the workers were down for days
    schedules.materialise_due(app_desk.ledger, app_desk.settings, now=later, actor="test")
    (run,) = app_desk.ledger.schedule_runs(record.id)
    assert run.state == "waiting"

    app.run()
    # Said in one sentence, with what to do: never a raw state with a bracketed note.
    text = page_text(app)
    assert "was not sent: no worker reached it in time" in text
    assert "Send it now, or skip it." in text and "(late) (" not in text
    app.button(key=f"sched_skip_{run.id}").click().run()
    assert not app.exception, app.exception
    assert app_desk.ledger.schedule_run(run.id).state == "skipped"
    assert "Skipped" in page_text(app)
    assert app_desk.ledger.list_batches() == []  # nothing sent
    assert datetime.now(UTC) < later


def test_with_sign_in_the_maker_cannot_approve_and_a_second_person_does(desk_env):
    from tests.auth_support import signed_in_app, write_secrets
    from ui.context import _desk

    write_secrets(desk_env)
    neha = signed_in_app("neha")  # operator and approver
    neha.switch_page(SCHEDULES).run()
    fill(neha, label="Weekly", rows="EKC04AZHXP, 100", repeat="weekly")
    ledger = _desk().ledger
    (record,) = ledger.list_schedules()
    assert record.maker == "neha"
    neha.button(key=f"sched_approve_{record.id}").click().run()
    assert "a second person has to approve it" in page_text(neha)
    assert ledger.get_schedule(record.id).state == "pending_approval"

    vikram = signed_in_app("vikram")  # approver only: no forms, but Approve
    vikram.switch_page(SCHEDULES).run()
    assert f"sched_pause_{record.id}" not in {b.key for b in vikram.button}
    vikram.button(key=f"sched_approve_{record.id}").click().run()
    assert not vikram.exception, vikram.exception
    approved = ledger.get_schedule(record.id)
    assert approved.state == "active" and approved.checker == "vikram"
    assert "new_sched_submit" not in {b.key for b in vikram.button}


def test_rows_the_text_box_cannot_hold_are_never_changed_silently_by_an_edit(app, app_desk):
    rule = Rule(Repeat.WEEKLY, datetime.now(IST).date(), time(9, 0), weekday=0)
    mixed = [
        {"kind": "credit", "card_id": "EKC04AZHXP", "amount_cents": 50000, "reason": "bonus"},
        {"kind": "debit", "card_id": "EKC9QW2ERT", "amount_cents": 20000, "reason": "clawback"},
    ]
    record = schedules.create(
        app_desk.ledger, label="From a file", programme="GENERAL", rule=rule, rows=mixed,
        maker="asha",
    )  # fmt: skip
    app.switch_page(SCHEDULES).run()
    app.selectbox(key="edit_sched_choice").select(record.id).run()
    assert "upload the changed file" in page_text(app)
    assert app.text_area(key="edit_sched_rows").value == ""
    app.button(key="edit_sched_submit").click().run()
    assert not app.exception, app.exception
    assert "Add at least one employee" in page_text(app)  # nothing saved without the file
    assert [r.kind.value for r in app_desk.ledger.schedule_rows(record.id, 1)] == [
        "credit",
        "debit",
    ]


def test_the_edit_tab_offers_the_first_schedule_once_there_is_one(app, app_desk):
    # The page was first drawn with nothing to edit; the schedule set up next is offered at once.
    card = a_card(app_desk)
    app.switch_page(SCHEDULES).run()
    assert "No schedule runs now." in page_text(app)
    fill(app, rows=f"{card}, 500")
    (record,) = app_desk.ledger.list_schedules()
    assert app.selectbox(key="edit_sched_choice").value == record.id
    # The state says it waits; the approval column says what is missing (not the same words).
    summary = app.dataframe[0].value
    assert summary[["State", "Approval"]].values.tolist() == [
        ["waiting for approval", "needs a second person"]
    ]
    assert app.text_area(key="edit_sched_rows").value == f"{card}, 500.00"
    assert "No schedule runs now." not in page_text(app)


def test_rows_with_indian_grouped_amounts_are_set_up(app, app_desk):
    card = a_card(app_desk)
    app.switch_page(SCHEDULES).run()
    fill(app, rows=f"{card}, 1,00,000")
    (record,) = app_desk.ledger.list_schedules()
    assert [r.amount for r in app_desk.ledger.schedule_rows(record.id, 1)] == [Decimal("100000")]


def test_two_people_editing_one_schedule_never_replace_each_others_change(desk_env):
    from tests.auth_support import signed_in_app, write_secrets
    from ui.context import _desk

    write_secrets(desk_env)
    neha = signed_in_app("neha")
    neha.switch_page(SCHEDULES).run()
    fill(neha, label="Weekly", rows="EKC04AZHXP, 100", repeat="weekly")
    ledger = _desk().ledger
    (record,) = ledger.list_schedules()
    schedules.approve(ledger, record.id, approver="vikram")

    # Both open the edit form on the approved version.
    asha = signed_in_app("asha")
    asha.switch_page(SCHEDULES).run()
    neha.run()
    for person in (asha, neha):
        assert person.text_area(key="edit_sched_rows").value == "EKC04AZHXP, 100.00"

    asha.text_area(key="edit_sched_rows").input("EKC04AZHXP, 900")
    asha.button(key="edit_sched_submit").click().run()
    assert ledger.get_schedule(record.id).pending_version == 2

    neha.text_area(key="edit_sched_rows").input("EKC04AZHXP, 700")
    neha.button(key="edit_sched_submit").click().run()
    assert not neha.exception, neha.exception
    assert "Someone else changed this schedule since you opened it" in page_text(neha)
    now = ledger.get_schedule(record.id)
    assert now.pending_version == 2  # asha's change still waits, untouched
    assert [r.amount for r in ledger.schedule_rows(record.id, 2)] == [Decimal("900")]
    # The form now starts from the change that waits, so a further edit builds on it.
    neha.run()
    assert neha.text_area(key="edit_sched_rows").value == "EKC04AZHXP, 900.00"


def test_the_form_shows_each_runs_pre_flight_before_it_is_set_up(app, app_desk):
    card = a_card(app_desk)
    app_desk.ledger.create_programme(
        code="BONUS", name="Bonus", budget=Decimal("1000"), actor="finance"
    )
    app.switch_page(SCHEDULES).run()
    assert "Each run, were it sent now" not in page_text(app)  # no rows yet: nothing to weigh
    app.selectbox(key="new_sched_programme").select("BONUS")
    app.text_area(key="new_sched_rows").input(f"{card}, 600\n{card}, 150").run()
    assert not app.exception, app.exception
    text = page_text(app)
    assert "Each run, were it sent now" in text
    assert "Bonus: **250.00** left after (now 1,000.00)" in text  # 1,000 less 750 a run
    assert "Pool after:" in text and "Need approval: no row" in text
    assert app_desk.ledger.list_schedules() == []  # the pre-flight records nothing
