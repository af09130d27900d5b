"""The one entry for moving points: validate -> programme -> approval or send.

Every caller that moves points one at a time (the Credit and Debit forms, scripts, the demo data)
goes through ``request``, so the programme and approval rules are applied in the service layer for
all of them: a credit from a closed or ended programme, or one its remaining budget cannot cover,
is refused before anything is recorded or sent (the check and the reservation are one statement in
the intent's transaction: ``services/store/programmes.py``); a credit past the operator's monthly
limit in its programme (checked and counted in that same transaction, one conditional upsert), and
a debit above the (programme's or global) approval threshold, wait for a second person.
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
from services.numbers import points
from services.store import GENERAL_CODE, Ledger, Programme, UnknownProgramme
from services.store.programmes import OperatorLimitReached, ProgrammeClosed, today_ist


def needs_approval(
    allocation: Allocation, settings: Settings, programme: Programme | None = None
) -> bool:
    """A debit above the approval threshold (the programme's own when it sets one) waits for a
    second person instead of being sent."""
    override = programme.debit_threshold if programme is not None else None
    return allocation.kind is Kind.DEBIT and allocations.debit_needs_approval(
        allocation.amount, settings, override
    )


def programme_of(ledger: Ledger, allocation: Allocation) -> Programme:
    """The allocation's programme (General when it names none); ``UnknownProgramme`` if none
    has its code."""
    code = allocation.programme or GENERAL_CODE
    found = ledger.programme(code)
    if found is None:
        if code == GENERAL_CODE:
            ledger.list_programmes()  # creates General when a sandbox reset removed it
            found = ledger.programme(code)
        if found is None:
            raise UnknownProgramme(f"There is no programme with code {code}.")
    return found


def operator_limit_reason(refused: OperatorLimitReached, programme: Programme) -> str:
    """Why a credit waits for approval: past its operator's monthly limit in the programme."""
    return (
        f"past {refused.operator}'s monthly limit of {points(refused.limit)} points in "
        f"{programme.name} ({points(refused.left)} left this month)"
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
    """Move points once, within its programme's budget.

    ``ProgrammeClosed`` / ``BudgetExceeded`` / ``UnknownProgramme``: refused, nothing recorded or
    sent (a ``BudgetExceeded`` says how much is left). Above the debit approval threshold the
    debit is held for a second person (``approvals.request_debit``); a credit past the operator's
    monthly limit is held too (``approvals.request_credit``, its points reserved); otherwise the
    intent is recorded with its reservation and sent (``allocations.submit``). Repeating a
    reference replays its outcome; nothing is sent twice. A reference already used for another
    transaction (a second tab of the same form) is refused with ``ReferenceReused``."""
    programme = programme_of(ledger, allocation)
    existing = ledger.get(allocation.reference)
    if existing is not None:
        allocations.replay(existing, allocation)  # refuses another transaction under it
    elif allocation.kind is not Kind.DEBIT:
        why = programme.why_closed(today_ist())
        if why is not None:
            raise ProgrammeClosed(f"Not recorded, nothing sent: {why}.")
        try:
            # The operator's monthly limit is checked and counted in the intent's transaction
            # (one conditional upsert): two credits at once cannot both slip under it.
            return allocations.submit(
                ledger,
                client,
                allocation,
                operator=operator,
                session_id=session_id,
                settings=settings,
                within_operator_limit=True,
            )
        except OperatorLimitReached as refused:
            return approvals.request_credit(
                ledger,
                allocation,
                maker=operator,
                why=operator_limit_reason(refused, programme),
                session_id=session_id,
            )
    if needs_approval(allocation, settings, programme):
        return approvals.request_debit(ledger, allocation, maker=operator, session_id=session_id)
    return allocations.submit(
        ledger, client, allocation, operator=operator, session_id=session_id, settings=settings
    )
