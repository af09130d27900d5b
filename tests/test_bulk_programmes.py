"""Files and programmes: a programme column (or one for the whole file), budgets checked row by
row at preview, and the queued rows counted against their programme. Sandbox over loopback."""

from __future__ import annotations

from decimal import Decimal

from services import bulk
from services.models import Status
from tests.test_bulk import creates, desk  # noqa: F401  (fixture)

HEADER = "kind,first_name,title,gender,email,mobile,card_id,amount,reason,programme"


def with_programme(lines: list[str], programme: str) -> list[str]:
    return [f"{line},{programme}" for line in lines]


def preview_of(desk, lines, header=HEADER, **kwargs):  # noqa: F811
    content = ("\n".join([header, *lines]) + "\n").encode()
    return bulk.preview_upload(
        desk.ledger, desk.client, desk.settings, "run.csv", content, **kwargs
    )


def test_credits_past_the_budget_are_refused_row_by_row(desk):  # noqa: F811
    desk.ledger.create_programme(code="Q3", name="Q3 sales", budget=Decimal(500), actor="t")
    # 100, 101, 102, 103, 104: the first four take 406; the fifth (104) does not fit 94.
    lines = with_programme(creates(5, amount=100), " q 3 ")
    preview = preview_of(desk, lines)
    assert [v.number for v in preview.valid] == [2, 3, 4, 5]
    (refused,) = preview.rejected
    assert refused.number == 6
    assert refused.errors["programme"] == (
        "Q3 sales has 94.00 points left after earlier rows take 406.00; "
        "this credit of 104.00 does not fit"
    )
    (total,) = preview.programmes
    assert (total.code, total.credit_rows, total.credit_points) == ("Q3", 4, Decimal(406))
    assert total.remaining == Decimal(500) and total.refused_rows == 1
    assert preview.totals.valid == 4 and preview.totals.credit_points == Decimal(406)
    assert all(v.allocation.programme == "Q3" for v in preview.valid)
    # Queued and sent, the rows count against Q3.
    record = bulk.queue_batch(desk.ledger, preview, operator="tester")
    bulk.start_batch(desk.ledger, desk.settings, record.batch_id, actor="t", wake=desk.pick_up)
    assert desk.runner.wait(record.batch_id, timeout=60)
    assert all(r.status is Status.SUCCEEDED for r in desk.ledger.rows())
    assert desk.ledger.programme("Q3").remaining == Decimal(94)
    assert desk.sandbox.store.allocate_requests() == 4


def test_a_name_matches_forgivingly_and_an_unknown_programme_is_refused(desk):  # noqa: F811
    desk.ledger.create_programme(code="DIWALI", name="Diwali Bonus", budget=None, actor="t")
    lines = [
        *with_programme(creates(1, start=0), "diwali  bonus"),
        *with_programme(creates(1, start=1), "Festive"),
        *with_programme(creates(1, start=2), ""),
    ]
    preview = preview_of(desk, lines)
    assert [(v.number, v.allocation.programme) for v in preview.valid] == [
        (2, "DIWALI"),
        (4, "GENERAL"),
    ]
    assert preview.rejected[0].errors == {
        "programme": 'No programme has the code or name "Festive" (see the Programmes page)'
    }


def test_a_file_without_the_column_takes_the_programme_chosen_for_it(desk):  # noqa: F811
    desk.ledger.create_programme(code="Q3", name="Q3 sales", budget=Decimal(150), actor="t")
    old_header = "kind,first_name,title,gender,email,mobile,card_id,amount,reason"
    preview = preview_of(desk, creates(2, amount=100), header=old_header)
    assert [v.allocation.programme for v in preview.valid] == ["GENERAL", "GENERAL"]
    assert preview.rejected == []
    preview = preview_of(desk, creates(2, amount=100), header=old_header, programme="Q3")
    assert [v.number for v in preview.valid] == [2]
    assert "Q3 sales has 50.00 points left" in preview.rejected[0].errors["programme"]


def test_a_closed_programme_takes_no_credits_from_a_file(desk):  # noqa: F811
    desk.ledger.create_programme(code="OLD", name="Old scheme", budget=None, actor="t")
    desk.ledger.close_programme("OLD", actor="t")
    preview = preview_of(desk, with_programme(creates(1), "old"))
    assert preview.valid == []
    assert "Old scheme is closed" in preview.rejected[0].errors["programme"]
