"""The Bulk page's "Reverse this batch…": a preview of the rows that cannot be reversed fully and
why, a reason, and one reversal batch that waits for a second person (nothing sent before)."""

from __future__ import annotations

from services import allocations, approvals
from services.models import Status
from tests.fault_support import debit
from tests.test_bulk_page import BULK, GOOD, content, page_text, send_and_wait, upload


def test_reverse_this_batch_previews_the_spent_cards_and_waits_for_approval(app, app_desk):
    ledger = app_desk.ledger
    app.switch_page(BULK).run()
    upload(app, "october.csv", content(*GOOD[:3]))
    batch_id, _ = send_and_wait(app, app_desk)
    rows = ledger.rows(batch_id=batch_id, order="row_number")
    with app_desk.client() as client:  # Ananya spent all her 200 points
        outcome = allocations.submit(
            ledger,
            client,
            debit(rows[1].card_id, "200"),
            operator="asha",
            settings=app_desk.settings,
        )
    assert outcome.status is Status.SUCCEEDED
    commits = app_desk.sandbox.store.commit_count()

    app.run()
    app.button(key="bulk_reverse").click().run()
    assert not app.exception, app.exception
    short = next(d.value for d in app.dataframe if "Why not in full" in d.value.columns)
    assert list(short["Row"]) == [3] and "holds 0.00 points" in short["Why not in full"][0]
    assert "2 of 3 succeeded rows" in page_text(app)

    app.button(key="bulk_reverse_confirm").click().run()  # no reason yet
    assert "Say why it is reversed" in page_text(app)
    assert not ledger.is_reversal_batch(ledger.list_batches()[0].batch_id)

    app.button(key="bulk_reverse").click().run()
    app.text_input(key="bulk_reverse_reason").input("Sent to the wrong team")
    app.button(key="bulk_reverse_confirm").click().run()
    assert not app.exception, app.exception
    reversal = ledger.list_batches()[0]
    assert reversal.batch_id != batch_id and ledger.is_reversal_batch(reversal.batch_id)
    assert "waits for a second person" in page_text(app)
    assert approvals.for_subject(ledger, "batch", reversal.batch_id).pending
    assert [r.reverses for r in ledger.rows(batch_id=reversal.batch_id)] == [
        rows[0].reference,
        rows[2].reference,
    ]
    assert app_desk.sandbox.store.commit_count() == commits  # nothing sent before approval
