"""Programmes: budgets that credits draw from, and the counters that make the budget check O(1).

The rule (DESIGN.md, "money rules ... in one SQL statement"): a credit reserves its points in the
same database transaction that records its intent, and the check and the reservation are ONE
``UPDATE programmes ... WHERE <budget still covers it>``. On PostgreSQL the UPDATE takes the
programme row's lock and re-evaluates its WHERE on the newest row version, so two writers can
never both take the last points; on SQLite the write helper's ``BEGIN IMMEDIATE`` serialises
writers. When the UPDATE changes no row nothing is recorded (the intent's transaction rolls back).

Counters, per programme (kept in the ``programmes`` row, moved with every intent and status move):

* ``reserved``: credits in flight (``QUEUED``, ``SENDING``, ``UNKNOWN``): an unknown outcome holds
  its points until a lookup settles it;
* ``credited``: ``SUCCEEDED`` credits (a reservation becomes spent);
* ``returned``: ``SUCCEEDED`` debits (points taken back from a card go back to the programme).

``remaining = budget - reserved - credited + returned``; a ``FAILED`` credit releases its
reservation. ``ProgrammeStore.recount`` recomputes the counters from the rows (the consistency
check the tests and the Programmes page use).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from services.errors import Conflict, NotFound
from services.models import Status
from services.numbers import figure, points
from services.store.engine import Database, from_cents, to_cents
from services.store.schema import GENERAL_CODE, programme_events, programmes, transactions

IST = timezone(timedelta(hours=5, minutes=30), "IST")

#: The statuses in which a credit holds its reservation.
IN_FLIGHT = (Status.QUEUED, Status.SENDING, Status.UNKNOWN)
_IN_FLIGHT = tuple(s.value for s in IN_FLIGHT)

#: Columns a programme edit may change (``code`` is fixed: files and statements name it).
EDITABLE = (
    "name",
    "budget_cents",
    "starts_on",
    "ends_on",
    "owner",
    "description",
    "monthly_operator_limit_cents",
    "debit_threshold_cents",
)


def today_ist() -> date:
    """Today's date in India: programmes start and end on IST dates."""
    return datetime.now(IST).date()


class UnknownProgramme(NotFound):
    """No programme has this code."""


class ProgrammeClosed(Conflict):
    """The programme is closed, ended or not started: it takes no new credits."""


class BudgetExceeded(Conflict):
    """The programme's remaining budget cannot cover the credit; nothing was recorded or sent."""

    def __init__(self, name: str, code: str, remaining: Decimal, amount: Decimal):
        self.name = name
        self.code = code
        self.remaining = remaining
        self.amount = amount
        super().__init__(
            f"Not recorded, nothing sent: {name} has {points(remaining)} points left, "
            f"not enough for {points(amount)}."
        )


class ProgrammeCodeTaken(Conflict):
    """Another programme already has this code."""


@dataclass(frozen=True)
class Programme:
    """One programme with its counters (amounts as ``Decimal``; ``budget`` None: no limit)."""

    id: int
    code: str
    name: str
    budget: Decimal | None
    starts_on: date | None
    ends_on: date | None
    owner: str
    description: str
    monthly_operator_limit: Decimal | None
    debit_threshold: Decimal | None
    state: str
    reserved: Decimal
    credited: Decimal
    returned: Decimal
    created_by: str
    created_at: datetime
    updated_at: datetime

    @property
    def used(self) -> Decimal:
        """Points spent for good: succeeded credits less succeeded debits."""
        return self.credited - self.returned

    @property
    def remaining(self) -> Decimal | None:
        """What new credits may still take (``None``: no limit)."""
        if self.budget is None:
            return None
        return self.budget - self.reserved - self.credited + self.returned

    def open_on(self, day: date) -> bool:
        """Active, started and not ended on ``day``."""
        return (
            self.state == "active"
            and (self.starts_on is None or self.starts_on <= day)
            and (self.ends_on is None or day <= self.ends_on)
        )

    def why_closed(self, day: date) -> str | None:
        """Why it takes no credits on ``day`` (``None`` when it does)."""
        if self.state != "active":
            return f"{self.name} is closed: it takes no new credits"
        if self.starts_on is not None and day < self.starts_on:
            return f"{self.name} starts on {self.starts_on:%d %b %Y}: it takes no credits before"
        if self.ends_on is not None and self.ends_on < day:
            return f"{self.name} ended on {self.ends_on:%d %b %Y}: it takes no new credits"
        return None


@dataclass(frozen=True)
class ProgrammeEvent:
    id: int
    programme_id: int
    at: datetime
    actor: str
    action: str
    detail: str


def programme_record(m: Any) -> Programme:
    return Programme(
        id=m["id"],
        code=m["code"],
        name=m["name"],
        budget=from_cents(m["budget_cents"]),
        starts_on=m["starts_on"],
        ends_on=m["ends_on"],
        owner=m["owner"] or "",
        description=m["description"] or "",
        monthly_operator_limit=from_cents(m["monthly_operator_limit_cents"]),
        debit_threshold=from_cents(m["debit_threshold_cents"]),
        state=m["state"],
        reserved=from_cents(m["reserved_cents"]),  # type: ignore[arg-type]
        credited=from_cents(m["credited_cents"]),  # type: ignore[arg-type]
        returned=from_cents(m["returned_cents"]),  # type: ignore[arg-type]
        created_by=m["created_by"] or "",
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


# --- inside a write transaction (called by transactions.py and batches.py) ---------------------


def programme_id_for(conn: Connection, code: str | None) -> int:
    """The id of the programme with ``code`` (``None``: General). ``UnknownProgramme`` if none."""
    wanted = (code or GENERAL_CODE).strip().upper()
    found = conn.execute(
        sa.select(programmes.c.id).where(programmes.c.code == wanted)
    ).scalar_one_or_none()
    if found is None:
        if wanted == GENERAL_CODE:
            return _create_general(conn)
        raise UnknownProgramme(f"There is no programme with code {wanted}.")
    return int(found)


def _create_general(conn: Connection) -> int:
    """General is created by the migration; a ledger reset in the sandbox may have removed it."""
    now = datetime.now(UTC)
    conn.execute(
        programmes.insert().values(
            code=GENERAL_CODE,
            name="General",
            budget_cents=None,
            description="Movements not tied to a programme (and every one from before programmes)",
            created_by="system",
            created_at=now,
            updated_at=now,
        )
    )
    return int(
        conn.execute(
            sa.select(programmes.c.id).where(programmes.c.code == GENERAL_CODE)
        ).scalar_one()
    )


def reserve(conn: Connection, programme_id: int, cents: int, *, day: date | None = None) -> None:
    """Reserve ``cents`` of the programme's budget, or raise (``BudgetExceeded``,
    ``ProgrammeClosed``) and leave it untouched. The check and the reservation are one UPDATE."""
    day = day or today_ist()
    p = programmes.c
    fits = sa.or_(p.budget_cents.is_(None), p.budget_cents - p.reserved_cents - p.credited_cents
                  + p.returned_cents >= cents)  # fmt: skip
    changed = conn.execute(
        programmes.update()
        .where(
            p.id == programme_id,
            p.state == "active",
            sa.or_(p.starts_on.is_(None), p.starts_on <= day),
            sa.or_(p.ends_on.is_(None), p.ends_on >= day),
            fits,
        )
        .values(reserved_cents=p.reserved_cents + cents)
    )
    if changed.rowcount == 1:
        return
    found = conn.execute(sa.select(programmes).where(p.id == programme_id)).mappings().one()
    programme = programme_record(found)
    why = programme.why_closed(day)
    if why is not None:
        raise ProgrammeClosed(f"Not recorded, nothing sent: {why}.")
    raise BudgetExceeded(
        programme.name,
        programme.code,
        programme.remaining or Decimal(0),
        from_cents(cents),  # type: ignore[arg-type]
    )


def reserve_many(conn: Connection, totals: dict[int, int], *, day: date | None = None) -> None:
    """Reserve each programme's total (a batch queues its credits all or none)."""
    for programme_id, cents in sorted(totals.items()):  # one lock order: no deadlock
        if cents:
            reserve(conn, programme_id, cents, day=day)


def apply_move(
    conn: Connection,
    programme_id: int | None,
    transaction_type: str,
    cents: int,
    before: Status,
    after: Status,
) -> None:
    """Move the counters for one row's status move (same transaction as the move)."""
    if programme_id is None or before == after:
        return
    reserved = credited = returned = 0
    if transaction_type == "CR":
        was = before in IN_FLIGHT
        now = after in IN_FLIGHT
        if was and not now:
            reserved = cents
        if after is Status.SUCCEEDED:
            credited = cents
    elif after is Status.SUCCEEDED:
        returned = cents
    if reserved or credited or returned:
        conn.execute(
            _COUNTERS,
            {
                "programme": programme_id,
                "reserved": reserved,
                "credited": credited,
                "returned": returned,
            },
        )


#: One programme's counters moved by a status move (built once: a move binds its deltas).
_COUNTERS = (
    programmes.update()
    .where(programmes.c.id == sa.bindparam("programme"))
    .values(
        reserved_cents=programmes.c.reserved_cents - sa.bindparam("reserved", type_=sa.BigInteger),
        credited_cents=programmes.c.credited_cents + sa.bindparam("credited", type_=sa.BigInteger),
        returned_cents=programmes.c.returned_cents + sa.bindparam("returned", type_=sa.BigInteger),
    )
)


def release_many(conn: Connection, totals: dict[int, int]) -> None:
    """Release in-flight credits that failed unsent (a batch's queued rows cancelled)."""
    for programme_id, cents in sorted(totals.items()):
        if cents:
            conn.execute(
                programmes.update()
                .where(programmes.c.id == programme_id)
                .values(reserved_cents=programmes.c.reserved_cents - cents)
            )


def counts_from_rows(
    conn: Connection, programme_id: int | None = None
) -> dict[int, dict[str, int]]:
    """The counters recomputed from the ``transactions`` rows, per programme id."""
    t = transactions.c
    in_flight = sa.and_(t.transaction_type == "CR", t.status.in_(_IN_FLIGHT))
    ok = t.status == Status.SUCCEEDED.value
    query = sa.select(
        t.programme_id,
        sa.func.coalesce(sa.func.sum(sa.case((in_flight, t.amount_cents), else_=0)), 0),
        sa.func.coalesce(
            sa.func.sum(
                sa.case((sa.and_(ok, t.transaction_type == "CR"), t.amount_cents), else_=0)
            ),
            0,
        ),
        sa.func.coalesce(
            sa.func.sum(
                sa.case((sa.and_(ok, t.transaction_type == "DR"), t.amount_cents), else_=0)
            ),
            0,
        ),
    ).group_by(t.programme_id)
    if programme_id is not None:
        query = query.where(t.programme_id == programme_id)
    return {
        int(pid): {"reserved_cents": int(r), "credited_cents": int(c), "returned_cents": int(d)}
        for pid, r, c, d in conn.execute(query)
        if pid is not None
    }


def _audit(conn: Connection, programme_id: int, actor: str, action: str, detail: str) -> None:
    conn.execute(
        programme_events.insert().values(
            programme_id=programme_id,
            at=datetime.now(UTC),
            actor=actor,
            action=action,
            detail=detail,
        )
    )


def _cents(value: Decimal | None) -> int | None:
    return None if value is None else to_cents(Decimal(value))


def _describe(column: str, value: Any) -> str:
    label = column.removesuffix("_cents").replace("_", " ")
    if column.endswith("_cents"):
        shown = "no limit" if value is None else figure(from_cents(value))  # type: ignore[arg-type]
    else:
        shown = "none" if value in (None, "") else str(value)
    return f"{label} {shown}"


class ProgrammeStore(Database):
    """The ``programmes`` and ``programme_events`` tables; every change is audited."""

    def create_programme(
        self,
        *,
        code: str,
        name: str,
        budget: Decimal | None,
        actor: str,
        starts_on: date | None = None,
        ends_on: date | None = None,
        owner: str = "",
        description: str = "",
        monthly_operator_limit: Decimal | None = None,
        debit_threshold: Decimal | None = None,
    ) -> Programme:
        """Create a programme (``ProgrammeCodeTaken`` if the code is in use)."""
        now = datetime.now(UTC)
        code = code.strip().upper()
        values = {
            "code": code,
            "name": name,
            "budget_cents": _cents(budget),
            "starts_on": starts_on,
            "ends_on": ends_on,
            "owner": owner,
            "description": description,
            "monthly_operator_limit_cents": _cents(monthly_operator_limit),
            "debit_threshold_cents": _cents(debit_threshold),
            "state": "active",
            "created_by": actor,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self.writing() as conn:
                conn.execute(programmes.insert().values(values))
                pid = programme_id_for(conn, code)
                shown = "; ".join(_describe(c, values[c]) for c in EDITABLE)
                _audit(conn, pid, actor, "created", f"created {code}: {shown}")
        except IntegrityError:
            raise ProgrammeCodeTaken(f"Another programme already has the code {code}.") from None
        found = self.programme(code)
        assert found is not None
        return found

    def update_programme(self, code: str, *, actor: str, **changes: Any) -> Programme:
        """Change editable fields (amounts as ``Decimal`` under their names without ``_cents``:
        ``budget``, ``monthly_operator_limit``, ``debit_threshold``). A budget below what is
        already used and reserved is refused (``Conflict``), checked in the same UPDATE."""
        values: dict[str, Any] = {}
        for key, value in changes.items():
            column = f"{key}_cents" if f"{key}_cents" in EDITABLE else key
            if column not in EDITABLE:
                raise ValueError(f"a programme's {key} cannot be changed")
            values[column] = _cents(value) if column.endswith("_cents") else value
        p = programmes.c
        with self.writing() as conn:
            current = (
                conn.execute(sa.select(programmes).where(p.code == code.strip().upper()))
                .mappings()
                .one_or_none()
            )
            if current is None:
                raise UnknownProgramme(f"There is no programme with code {code}.")
            changed = {c: v for c, v in values.items() if current[c] != v}
            if not changed:
                return programme_record(current)
            query = programmes.update().where(p.id == current["id"])
            if changed.get("budget_cents") is not None:
                query = query.where(
                    p.reserved_cents + p.credited_cents - p.returned_cents
                    <= changed["budget_cents"]
                )
            moved = conn.execute(query.values(**changed, updated_at=datetime.now(UTC)))
            if moved.rowcount != 1:
                taken = programme_record(current)
                raise Conflict(
                    f"{taken.name} has already used and reserved "
                    f"{figure(taken.reserved + taken.used)} points: "
                    "the budget cannot go below that."
                )
            detail = "; ".join(
                f"{_describe(c, current[c])} -> {_describe(c, v).split(' ', 1)[-1]}"
                for c, v in changed.items()
            )
            _audit(conn, current["id"], actor, "edited", detail)
            return programme_record(
                conn.execute(sa.select(programmes).where(p.id == current["id"])).mappings().one()
            )

    def close_programme(self, code: str, *, actor: str, reason: str = "") -> Programme:
        """Close a programme: it takes no new credits; its history stays."""
        p = programmes.c
        with self.writing() as conn:
            current = (
                conn.execute(sa.select(programmes).where(p.code == code.strip().upper()))
                .mappings()
                .one_or_none()
            )
            if current is None:
                raise UnknownProgramme(f"There is no programme with code {code}.")
            if current["code"] == GENERAL_CODE:
                raise Conflict("General cannot be closed: it takes every movement without one.")
            if current["state"] != "closed":
                conn.execute(
                    programmes.update()
                    .where(p.id == current["id"])
                    .values(state="closed", updated_at=datetime.now(UTC))
                )
                _audit(conn, current["id"], actor, "closed", reason or "closed")
            return programme_record(
                conn.execute(sa.select(programmes).where(p.id == current["id"])).mappings().one()
            )

    def programme(self, code: str) -> Programme | None:
        """The programme with this code (any case), or ``None``."""
        with self.reading() as conn:
            found = (
                conn.execute(sa.select(programmes).where(programmes.c.code == code.strip().upper()))
                .mappings()
                .one_or_none()
            )
            return programme_record(found) if found is not None else None

    def programme_by_id(self, programme_id: int) -> Programme | None:
        with self.reading() as conn:
            found = (
                conn.execute(sa.select(programmes).where(programmes.c.id == programme_id))
                .mappings()
                .one_or_none()
            )
            return programme_record(found) if found is not None else None

    def list_programmes(self, states: Iterable[str] | None = None) -> list[Programme]:
        """Every programme (or those in ``states``), General first, then by name."""
        query = sa.select(programmes).order_by(
            (programmes.c.code != GENERAL_CODE), programmes.c.name
        )
        if states is not None:
            query = query.where(programmes.c.state.in_(list(states)))
        with self.reading() as conn:
            found = [programme_record(m) for m in conn.execute(query).mappings()]
        if not found and (states is None or "active" in states):
            with self.writing() as conn:
                programme_id_for(conn, None)
            return self.list_programmes(states)
        return found

    def programme_events(self, code: str) -> list[ProgrammeEvent]:
        """Every change to a programme, oldest first."""
        with self.reading() as conn:
            query = (
                sa.select(programme_events)
                .join(programmes, programmes.c.id == programme_events.c.programme_id)
                .where(programmes.c.code == code.strip().upper())
                .order_by(programme_events.c.id)
            )
            return [
                ProgrammeEvent(
                    id=m["id"],
                    programme_id=m["programme_id"],
                    at=m["at"],
                    actor=m["actor"],
                    action=m["action"],
                    detail=m["detail"],
                )
                for m in conn.execute(query).mappings()
            ]

    def note_programme(self, code: str, *, actor: str, action: str, detail: str) -> None:
        """Audit something about a programme that changes none of its columns (a raise asked)."""
        with self.writing() as conn:
            _audit(conn, programme_id_for(conn, code), actor, action, detail)

    def recount(self, programme_id: int | None = None) -> dict[int, dict[str, int]]:
        """The counters recomputed from the rows (every programme, zeros included)."""
        with self.reading() as conn:
            counted = counts_from_rows(conn, programme_id)
            ids = conn.execute(
                sa.select(programmes.c.id).where(
                    sa.true() if programme_id is None else programmes.c.id == programme_id
                )
            ).scalars()
            zero = {"reserved_cents": 0, "credited_cents": 0, "returned_cents": 0}
            return {int(i): counted.get(int(i), dict(zero)) for i in ids}

    def stored_counts(self) -> dict[int, dict[str, int]]:
        """The counters as maintained (to compare with ``recount``)."""
        p = programmes.c
        with self.reading() as conn:
            return {
                int(i): {"reserved_cents": r, "credited_cents": c, "returned_cents": d}
                for i, r, c, d in conn.execute(
                    sa.select(p.id, p.reserved_cents, p.credited_cents, p.returned_cents)
                )
            }

    def operator_month_credits(
        self, programme_id: int, operator: str, *, day: date | None = None
    ) -> Decimal:
        """Points an operator credited (in flight or succeeded) from a programme this IST month."""
        day = day or today_ist()
        start = datetime(day.year, day.month, 1, tzinfo=IST)
        t = transactions.c
        with self.reading() as conn:
            cents = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(t.amount_cents), 0)).where(
                    t.programme_id == programme_id,
                    t.operator == operator,
                    t.transaction_type == "CR",
                    t.status.in_([*_IN_FLIGHT, Status.SUCCEEDED.value]),
                    t.created_at >= start,
                )
            ).scalar_one()
        return from_cents(int(cents))  # type: ignore[return-value]
