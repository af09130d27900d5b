"""The one entry for moving points: a debit that needs a second person is held, the rest is sent.

Every caller that moves points one at a time (the Credit and Debit forms, scripts, the demo data)
goes through ``request``, so the approval rule is applied in the service layer for all of them.
``allocations.submit`` enforces the same rule on its own (``ApprovalRequired``), so skipping this
entry cannot send a debit above the threshold either; an approved debit is sent by
``approvals.send_approved``.
"""

from __future__ import annotations

from services import allocations, approvals
from services.allocations import Outcome
from services.config import Settings
from services.enkash import EnkashClient
from services.models import Allocation, Kind
from services.store import Ledger


def needs_approval(allocation: Allocation, settings: Settings) -> bool:
    """A debit above the approval threshold waits for a second person instead of being sent."""
    return allocation.kind is Kind.DEBIT and allocations.debit_needs_approval(
        allocation.amount, settings
    )


def request(
    ledger: Ledger,
    client: EnkashClient,
    allocation: Allocation,
    settings: Settings,
    *,
    operator: str,
    session_id: str | None = None,
) -> Outcome:
    """Move points once: above the debit approval threshold the debit is held for a second
    person (``approvals.request_debit``; nothing is sent), otherwise the intent is recorded and
    sent (``allocations.submit``). Repeating a reference replays its outcome; nothing is sent
    twice."""
    if needs_approval(allocation, settings):
        return approvals.request_debit(ledger, allocation, maker=operator, session_id=session_id)
    return allocations.submit(
        ledger, client, allocation, operator=operator, session_id=session_id, settings=settings
    )
