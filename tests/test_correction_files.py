"""Per-row reports and the failed-rows round trip, over the loopback sandbox: the report covers
every input row (rejected at preview too); a correction file pays each failed row at most once,
checked at preview and again atomically when the batch is queued (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import bulk
from services.desk import Desk
from services.models import Allocation, Status
from services.store import CorrectionRowsRefused, Ledger
from tests.pg_support import PG_URL, postgres_schema
from tests.test_bulk import QUICK_GRACE, creates, file_of, settings_for

BAD = "create,R2D2,Dr,X,not-an-email,12345,,10,"


@pytest.fixture
def desk(tmp_path: Path):
    the_desk = Desk(settings_for(tmp_path))
    the_desk.runner.absence_grace = QUICK_GRACE
    yield the_desk
    the_desk.close()


def preview_of(desk: Desk, content: bytes, name: str = "run.csv"):
    return bulk.preview_upload(desk.ledger, desk.client, desk.settings, name, content)


def send(desk: Desk, preview) -> str:
    record = bulk.queue_batch(desk.ledger, preview, operator="tester")
    bulk.start_batch(desk.ledger, desk.settings, record.batch_id, actor="tester", wake=desk.pick_up)
    assert desk.runner.wait(record.batch_id, timeout=60)
    return record.batch_id


def read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))


def failed_batch(desk: Desk, count: int = 3) -> str:
    """A batch whose rows EnKash all refused (nothing moved)."""
    desk.sandbox.knobs.refuse_with = "Daily limit reached"
    batch_id = send(desk, preview_of(desk, file_of(creates(count))))
    desk.sandbox.knobs.refuse_with = ""
    assert desk.ledger.batch_counts(batch_id)[Status.FAILED] == count
    return batch_id


def test_the_report_covers_rows_rejected_at_preview_with_their_names(desk):
    batch_id = send(desk, preview_of(desk, file_of([*creates(2), BAD])))
    report = read_csv(bulk.report_csv(desk.ledger, batch_id))
    assert [int(r["row"]) for r in report] == [2, 3, 4]
    rejected = report[-1]
    assert rejected["status"] == "REJECTED" and rejected["first_name"] == "R2D2"
    assert rejected["message"].startswith("Rejected at preview, never sent:")
    assert "email" in rejected["message"] and rejected["reference"] == ""


def test_failed_rows_come_back_as_a_correction_file_that_pays_each_once(desk):
    batch_id = failed_batch(desk)
    originals = desk.ledger.rows(batch_id=batch_id, order="row_number")
    data = bulk.correction_file(desk.ledger, batch_id)
    lines = read_csv(data)
    assert list(lines[0]) == bulk.CORRECTION_HEADER
    assert [line["corrects"] for line in lines] == [r.reference for r in originals]
    assert lines[0]["email"] == "emp0@example.com" and lines[0]["amount"] == "100.00"

    first = preview_of(desk, data, "fix.csv")
    late = preview_of(desk, data.replace(b"\r\n", b"\n"), "fix-again.csv")  # seen before it pays
    assert first.totals.valid == 3 and late.totals.valid == 3
    fixed = send(desk, first)
    paid = desk.ledger.rows(batch_id=fixed, order="row_number")
    assert [r.status for r in paid] == [Status.SUCCEEDED] * 3
    assert [r.corrects for r in paid] == [r.reference for r in originals]
    assert bulk.correction_file(desk.ledger, batch_id).count(b"\n") == 1  # nothing left to fix

    # A second file for the same rows: refused row by row at preview...
    again = preview_of(desk, data.replace(b"\r\n", b"\n") + b"\n", "fix-3.csv")
    assert again.totals.valid == 0
    assert all("already corrected by" in r.reason for r in again.rejected)
    # ...and a preview taken before the first one paid is refused when it is queued, even when
    # the manager acknowledges that its rows repeat a recent batch.
    seen = bulk.find_repeats(desk.ledger, late)
    with pytest.raises(CorrectionRowsRefused, match="already corrected by"):
        bulk.queue_batch(desk.ledger, late, operator="tester", acknowledged=seen)
    assert desk.sandbox.store.commit_count() == 3
    # The report of the correction batch names what each row corrects.
    report = read_csv(bulk.report_csv(desk.ledger, fixed))
    assert [r["corrects"] for r in report] == [r.reference for r in originals]


def test_a_row_that_succeeded_or_is_unknown_cannot_be_corrected(desk):
    batch_id = send(desk, preview_of(desk, file_of(creates(2))))
    ok = desk.ledger.rows(batch_id=batch_id, order="row_number")[0]
    unknown = Allocation(reference="LOST-1", kind="credit", amount="5", card_id=ok.card_id)
    desk.ledger.record_intent(unknown, operator="asha")
    desk.ledger.transition("LOST-1", Status.UNKNOWN, actor="asha", from_statuses=(Status.SENDING,))
    header = ",".join(bulk.CORRECTION_HEADER)
    content = (
        f"{header}\ncredit,,,,,,{ok.card_id},5,again,{ok.reference}\n"
        f"credit,,,,,,{ok.card_id},6,nope,NOSUCHREF\n"
        f"credit,,,,,,{ok.card_id},7,lost,LOST-1\n"
    ).encode()
    preview = preview_of(desk, content, "c.csv")
    reasons = [r.reason for r in preview.rejected]
    assert "succeeded" in reasons[0] and "no transaction NOSUCHREF" in reasons[1]
    assert "not known yet" in reasons[2]
    assert preview.totals.valid == 0


def _failed_original(ledger: Ledger) -> str:
    allocation = Allocation(reference="ORIG-1", kind="credit", amount="50", card_id="EKC1")
    ledger.record_intent(allocation, operator="asha")
    ledger.transition("ORIG-1", Status.FAILED, actor="asha", from_statuses=(Status.SENDING,))
    return "ORIG-1"


@pytest.fixture(params=["sqlite", "postgresql"])
def place(request, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}", None
        return
    with postgres_schema() as schema:
        yield PG_URL, schema


def test_concurrent_correction_batches_queue_at_most_one_row_per_original(place):
    """Six people (own connection pools) queue a correction of the same failed row at once:
    exactly one batch is queued, the rest are refused with nothing written."""
    url, schema = place
    setup = Ledger(url, schema=schema)
    try:
        original = _failed_original(setup)
        people = [Ledger(url, schema=schema) for _ in range(6)]
        start = threading.Barrier(len(people))
        outcomes: list[str] = []

        def queue(ledger: Ledger, n: int) -> None:
            row = Allocation(reference=f"FIX{n}-000002", kind="credit", amount="50", card_id="EKC1")
            start.wait()
            try:
                ledger.create_batch(
                    batch_id=f"FIX{n}",
                    file_name="fix.csv",
                    file_digest=f"digest{n}",
                    operator=f"maker{n}",
                    allocations=[(row, 2)],
                    concurrency=1,
                    corrects={2: original},
                )
                outcomes.append("queued")
            except CorrectionRowsRefused:
                outcomes.append("refused")

        threads = [threading.Thread(target=queue, args=(p, n)) for n, p in enumerate(people)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for person in people:
            person.dispose()
        assert sorted(outcomes) == ["queued"] + ["refused"] * 5
        assert len([r for r in setup.rows() if r.corrects == original]) == 1
        assert len(setup.list_batches()) == 1
    finally:
        setup.dispose()
