"""A batch's rows beyond its queued ones: the rows refused at preview (kept so the report covers
every input row) and the link of a correction row to the failed row it pays instead.

The correction rule, decided here under the originals' row locks: a row may correct an original
only if that original definitely FAILED and no other row correcting it is anything but FAILED
(queued, in flight, unknown or succeeded). ``corrections_refused`` is asked at preview (to show
each row why) and again inside ``BatchStore.create_batch``'s write transaction with ``lock``, so
two files correcting the same row at once cannot both be queued: a correction never pays twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.errors import Conflict
from services.models import Status
from services.store.engine import Database
from services.store.schema import batch_rejected_rows, transactions


@dataclass(frozen=True)
class StoredRejectedRow:
    """A row of the file refused at preview: its cells as given and what was wrong."""

    row_number: int
    values: dict[str, str]
    problem: str


class CorrectionRowsRefused(Conflict):
    """Correction rows that may not be queued (nothing was written); ``rows``: number -> why."""

    def __init__(self, rows: Mapping[int, str]):
        self.rows = dict(rows)
        listed = "; ".join(f"row {n}: {why}" for n, why in sorted(self.rows.items()))
        super().__init__(f"Correction rows refused: {listed}")


def corrections_refused(
    conn: Connection, wanted: Mapping[int, str], *, lock: bool = False
) -> dict[int, str]:
    """Row number -> why, for every row of ``wanted`` (row number -> original reference) that
    may not correct its original. With ``lock`` the originals' rows are locked first (in
    reference order), so the answer holds until the transaction ends."""
    refused: dict[int, str] = {}
    if not wanted:
        return refused
    originals = sorted(set(wanted.values()))
    query = sa.select(transactions.c.reference, transactions.c.status).where(
        transactions.c.reference.in_(originals)
    )
    if lock:
        query = query.order_by(transactions.c.reference).with_for_update()
    status = {r: Status(s) for r, s in conn.execute(query).all()}
    taken: dict[str, list[tuple[str, str]]] = {}
    for reference, original, state in conn.execute(
        sa.select(transactions.c.reference, transactions.c.corrects, transactions.c.status).where(
            transactions.c.corrects.in_(originals),
            transactions.c.status != Status.FAILED.value,
        )
    ).all():
        taken.setdefault(original, []).append((reference, state))
    first_in_file: dict[str, int] = {}
    for number, original in sorted(wanted.items()):
        state = status.get(original)
        if state is None:
            refused[number] = f"there is no transaction {original} to correct"
        elif state is Status.SUCCEEDED:
            refused[number] = f"{original} succeeded: EnKash already moved its points"
        elif state is not Status.FAILED:
            refused[number] = (
                f"{original} is {state.value.lower()}, not failed: its outcome is not known yet, "
                "so correcting it could pay twice; settle it on Reconcile first"
            )
        elif original in taken:
            by, how = taken[original][0]
            refused[number] = f"{original} is already corrected by {by} ({how.lower()})"
        elif original in first_in_file:
            refused[number] = f"row {first_in_file[original]} of this file already corrects it"
        else:
            first_in_file[original] = number
    return refused


class BulkRowStore(Database):
    """Rows refused at preview, and the correction check outside a batch's queueing."""

    def rejected_rows(self, batch_id: str) -> list[StoredRejectedRow]:
        """The rows of ``batch_id``'s file refused at preview, in file order."""
        with self.reading() as conn:
            found = conn.execute(
                sa.select(batch_rejected_rows)
                .where(batch_rejected_rows.c.batch_id == batch_id)
                .order_by(batch_rejected_rows.c.row_number)
            ).mappings()
            return [
                StoredRejectedRow(m["row_number"], json.loads(m["row_values"]), m["problem"])
                for m in found
            ]

    def corrections_refused(self, wanted: Mapping[int, str]) -> dict[int, str]:
        """Row number -> why a correction row may not be queued (as of now; see module doc)."""
        with self.reading() as conn:
            return corrections_refused(conn, wanted)
