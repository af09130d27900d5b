"""Bulk create rows for an employee who already has a card are refused in the preview."""

from __future__ import annotations

from pathlib import Path

import pytest

from services import bulk
from services.allocations import submit
from services.desk import Desk
from services.models import Allocation, Employee, Kind, Status
from tests.fault_support import reference
from tests.test_bulk import file_of, settings_for


@pytest.fixture
def desk(tmp_path: Path):
    the_desk = Desk(settings_for(tmp_path))
    yield the_desk
    the_desk.close()


ZOYA = Employee(
    email="zoya@example.com", mobile="9600098867", title="Ms", first_name="Zoya", gender="F"
)


def open_zoya(desk: Desk, *, in_ledger: bool = True) -> str:
    allocation = Allocation(reference=reference(), kind=Kind.CREATE, amount="100", employee=ZOYA)
    with desk.client() as client:
        if not in_ledger:
            return client.allocate(allocation).card_id
        outcome = submit(desk.ledger, client, allocation, operator="tester")
    assert outcome.status is Status.SUCCEEDED
    return outcome.row.card_id


def test_a_create_row_for_a_mobile_with_a_card_is_refused_with_the_holder_named(desk):
    card = open_zoya(desk)
    preview = bulk.preview_upload(
        desk.ledger,
        desk.client,
        desk.settings,
        "run.csv",
        file_of(
            [
                "create,Rahul,Mr,M,rahul@example.com,96000 98867,,10,Q3",
                "create,Asha,Ms,F,asha@example.com,9811122233,,20,Q3",
            ]
        ),
    )
    assert [v.number for v in preview.valid] == [3]
    (refused,) = preview.rejected
    assert refused.number == 2
    assert card in refused.reason and "Zoya" in refused.reason
    assert "already has a card" in refused.reason
    assert preview.totals.valid == 1 and preview.totals.rejected == 1
    assert preview.totals.credit_points == 20


def test_a_create_row_for_an_email_with_a_card_only_at_enkash_is_refused(desk):
    card = open_zoya(desk, in_ledger=False)
    preview = bulk.preview_upload(
        desk.ledger,
        desk.client,
        desk.settings,
        "run.csv",
        file_of(["create,Rahul,Mr,M,Zoya@Example.com,9811122233,,10,Q3"]),
    )
    assert preview.valid == []
    assert card in preview.rejected[0].reason


def test_create_rows_are_refused_when_enkash_search_cannot_be_asked(desk):
    desk.sandbox.knobs.fail_before_commit_rate = 1.0
    preview = bulk.preview_upload(
        desk.ledger,
        desk.client,
        desk.settings,
        "run.csv",
        file_of(
            [
                "create,Asha,Ms,F,asha@example.com,9811122233,,20,Q3",
                "credit,,,,,,EKC0000001,5,Q3",
            ]
        ),
    )
    assert [v.allocation.kind for v in preview.valid] == [Kind.CREDIT]
    assert "could not check" in preview.rejected[0].reason


def test_two_create_rows_for_the_same_mobile_in_one_file_are_caught(desk):
    preview = bulk.preview_upload(
        desk.ledger,
        desk.client,
        desk.settings,
        "run.csv",
        file_of(
            [
                "create,Asha,Ms,F,asha@example.com,9811122233,,20,Q3",
                "create,Rahul,Mr,M,rahul@example.com,+91 98111 22233,,30,Q3",
                "create,Ravi,Mr,M,ASHA@example.com,9822233344,,40,Q3",
            ]
        ),
    )
    assert [v.number for v in preview.valid] == [2]
    assert [r.number for r in preview.rejected] == [3, 4]
    assert all("already opens an account" in r.reason for r in preview.rejected)
