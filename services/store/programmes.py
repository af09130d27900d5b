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
from services.store.schema import (
    GENERAL_CODE,
    operator_months,
    programme_events,
    programmes,
    transactions,
)

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


class OperatorLimitReached(Conflict):
    """A credit would take its operator past the programme's monthly operator limit; nothing
    was recorded (``services.movements.request`` holds it for approval instead)."""

    def __init__(self, programme_id: int, operator: str, limit: Decimal, left: Decimal):
        self.programme_id = programme_id
        self.operator = operator
        self.limit = limit
        self.left = left
        super().__init__(
            f"Not recorded, nothing sent: past {operator}'s monthly limit of {points(limit)} "
            f"points ({points(left)} left this month)."
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


def _reserve_statement(by: str) -> Any:
    """The check and the reservation as ONE UPDATE, built once: it runs with every credit intent
    (building the expression per call cost more than running it). RETURNING the programme's id
    and the operator limit read under the same row lock, so the operator's monthly counter
    follows the limit in force. ``by``: ``"id"`` or ``"code"`` (a credit's intent reserves by
    code: the reservation is also the programme's lookup, one statement instead of two)."""
    p = programmes.c
    cents, day = sa.bindparam("cents"), sa.bindparam("day", type_=sa.Date)
    return (
        programmes.update()
        .where(
            getattr(p, by) == sa.bindparam("key"),
            p.state == "active",
            sa.or_(p.starts_on.is_(None), p.starts_on <= day),
            sa.or_(p.ends_on.is_(None), p.ends_on >= day),
            sa.or_(
                p.budget_cents.is_(None),
                p.budget_cents - p.reserved_cents - p.credited_cents + p.returned_cents >= cents,
            ),
        )
        .values(reserved_cents=p.reserved_cents + cents)
        .returning(p.id, p.monthly_operator_limit_cents)
    )


_RESERVE = _reserve_statement("id")
_RESERVE_BY_CODE = _reserve_statement("code")


def reserve(
    conn: Connection, programme_id: int, cents: int, *, day: date | None = None
) -> int | None:
    """Reserve ``cents`` of the programme's budget, or raise (``BudgetExceeded``,
    ``ProgrammeClosed``) and leave it untouched. The check and the reservation are one UPDATE.
    Returns the programme's monthly operator limit in cents (``None``: no limit)."""
    day = day or today_ist()
    changed = conn.execute(_RESERVE, {"key": programme_id, "cents": cents, "day": day}).first()
    if changed is not None:
        return changed[1]  # type: ignore[no-any-return]
    p = programmes.c
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


def reserve_by_code(
    conn: Connection, code: str | None, cents: int, *, day: date | None = None
) -> tuple[int, int | None]:
    """``reserve`` for the programme with ``code`` (``None``: General) in one statement, which is
    also its lookup: ``(programme id, monthly operator limit in cents or None)``. Raises as
    ``reserve`` does, or ``UnknownProgramme``."""
    day = day or today_ist()
    wanted = (code or GENERAL_CODE).strip().upper()
    changed = conn.execute(_RESERVE_BY_CODE, {"key": wanted, "cents": cents, "day": day}).first()
    if changed is not None:
        return int(changed[0]), changed[1]
    # Refused, or no such programme (General is made again if a sandbox reset removed it): the
    # id path says which, or reserves when General was just made.
    programme_id = programme_id_for(conn, wanted)
    return programme_id, reserve(conn, programme_id, cents, day=day)


def reserve_many(
    conn: Connection, totals: dict[int, int], *, day: date | None = None
) -> dict[int, int | None]:
    """Reserve each programme's total (a batch queues its credits all or none); returns each
    reserved programme's monthly operator limit (cents, ``None``: none)."""
    limits: dict[int, int | None] = {}
    for programme_id, cents in sorted(totals.items()):  # one lock order: no deadlock
        if cents:
            limits[programme_id] = reserve(conn, programme_id, cents, day=day)
    return limits


def month_of(moment: datetime) -> date:
    """The first IST day of the month of an aware instant (the operator limit's month)."""
    day = moment.astimezone(IST).date()
    return day.replace(day=1)


def reserve_rows(conn: Connection, rows: Iterable[Any], totals: dict[int, int]) -> None:
    """Reserve new credit rows' budget (``reserve_many``) and count them in their operators'
    months (``count_operator_months``): a batch's rows, all or none."""
    count_operator_months(conn, rows, reserve_many(conn, totals))


def count_operator_months(
    conn: Connection,
    rows: Iterable[Any],
    limits: dict[int, int | None],
    *,
    within_operator_limit: bool = False,
) -> None:
    """Count new credit rows in their operators' monthly counters where the programme has a
    monthly operator limit (``limits``: as the reservation returned them). With
    ``within_operator_limit`` (a single credit from ``movements.request``) the counter moves only
    if it stays within the limit, in ONE conditional upsert: otherwise ``OperatorLimitReached``
    and the intent's transaction rolls back. Same transaction as the rows' insert, after the
    reservation: programme rows, then counters, each in key order (as every writer locks them)."""
    wanted: dict[tuple[int, str, date], int] = {}
    for row in rows:
        pid = row["programme_id"]
        if row["transaction_type"] == "CR" and limits.get(pid) is not None:
            key = (pid, row["operator"], month_of(row["created_at"]))
            wanted[key] = wanted.get(key, 0) + row["amount_cents"]
    for (pid, operator, month), cents in sorted(wanted.items()):
        limit = limits[pid]
        assert limit is not None
        if within_operator_limit:
            _take_within_limit(conn, pid, operator, month, cents, limit)
        else:
            conn.execute(_add_month(conn), _month_values(pid, operator, month, cents))


def _month_values(pid: int, operator: str, month: date, cents: int) -> dict[str, Any]:
    return {"programme_id": pid, "operator": operator, "month": month, "credited_cents": cents}


def _insert(conn: Connection) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


_ADDS: dict[str, Any] = {}


def _add_month(conn: Connection, limit: bool = False) -> Any:
    """``INSERT ... ON CONFLICT DO UPDATE SET credited_cents = credited_cents + new`` (with
    ``limit``: ``WHERE credited_cents + new <= :limit``), built once per dialect."""
    key = f"{conn.dialect.name}:{limit}"
    if key not in _ADDS:
        statement = _insert(conn)(operator_months)
        total = operator_months.c.credited_cents + statement.excluded.credited_cents
        _ADDS[key] = statement.on_conflict_do_update(
            index_elements=["programme_id", "operator", "month"],
            set_={"credited_cents": total},
            where=(total <= sa.bindparam("limit")) if limit else None,
        ).returning(operator_months.c.credited_cents)
    return _ADDS[key]


def _take_within_limit(
    conn: Connection, pid: int, operator: str, month: date, cents: int, limit: int
) -> None:
    # PostgreSQL: the upsert takes the counter row's lock and re-evaluates its WHERE on the
    # newest version; a first insert racing another waits for it, then updates. SQLite: the
    # write helper's BEGIN IMMEDIATE serialises writers. Either way: never past the limit.
    if cents <= limit:
        values = _month_values(pid, operator, month, cents)
        # RETURNING, not rowcount: drivers count an upsert's rows differently.
        moved = conn.execute(_add_month(conn, limit=True), {**values, "limit": limit}).first()
        if moved is not None:
            return
    m = operator_months.c
    spent = conn.execute(
        sa.select(m.credited_cents).where(
            m.programme_id == pid, m.operator == operator, m.month == month
        )
    ).scalar_one_or_none()
    raise OperatorLimitReached(
        pid,
        operator,
        from_cents(limit),  # type: ignore[arg-type]
        from_cents(max(limit - int(spent or 0), 0)),  # type: ignore[arg-type]
    )


def release_operator_months(conn: Connection, rows: Iterable[Any]) -> None:
    """In-flight credits that end ``FAILED`` give their points back to their operator's month
    (an UPDATE of existing counters only: a programme without a limit keeps none)."""
    gone: dict[tuple[int, str, date], int] = {}
    for row in rows:
        if row.transaction_type == "CR" and row.programme_id is not None:
            key = (row.programme_id, row.operator, month_of(row.created_at))
            gone[key] = gone.get(key, 0) + row.amount_cents
    m = operator_months.c
    for (pid, operator, month), cents in sorted(gone.items()):
        conn.execute(
            operator_months.update()
            .where(m.programme_id == pid, m.operator == operator, m.month == month)
            .values(credited_cents=m.credited_cents - cents)
        )


def _month_sql(dialect: str) -> Any:
    """SQL for the first IST day of a stored UTC time's month (as ``month_of``)."""
    column = transactions.c.created_at
    if dialect == "sqlite":
        return sa.func.date(
            column, sa.literal_column("'+330 minutes'"), sa.literal_column("'start of month'")
        )
    local = sa.func.timezone(sa.literal_column("'Asia/Kolkata'"), column)
    return sa.cast(sa.func.date_trunc("month", local), sa.Date)


def _months_from_rows(conn: Connection, programme_ids: list[int] | None) -> Any:
    """Per (programme with a limit, operator, month): its credits in flight or SUCCEEDED."""
    t = transactions.c
    month = _month_sql(conn.dialect.name).label("month")
    limited = sa.select(programmes.c.id).where(
        programmes.c.monthly_operator_limit_cents.is_not(None)
    )
    if programme_ids is not None:
        limited = limited.where(programmes.c.id.in_(programme_ids))
    return (
        sa.select(t.programme_id, t.operator, month, sa.func.sum(t.amount_cents))
        .where(
            t.programme_id.in_(limited),
            t.transaction_type == "CR",
            t.status.in_([*_IN_FLIGHT, Status.SUCCEEDED.value]),
        )
        .group_by(t.programme_id, t.operator, month)
    )


def rebuild_operator_months(conn: Connection, programme_ids: list[int] | None = None) -> None:
    """Recompute the operator-month counters from the rows (a limit newly set, redated demo
    rows, ``summaries rebuild``); programmes without a limit keep none."""
    query = _months_from_rows(conn, programme_ids)
    if programme_ids is None:
        conn.execute(operator_months.delete())
    else:
        conn.execute(
            operator_months.delete().where(operator_months.c.programme_id.in_(programme_ids))
        )
    conn.execute(
        operator_months.insert().from_select(
            ["programme_id", "operator", "month", "credited_cents"], query
        )
    )


def operator_month_differences(conn: Connection) -> list[tuple[Any, Any, Any]]:
    """Where the operator-month counters disagree with the rows: ``(key, kept, rows)``."""
    m = operator_months.c
    raw = {
        (int(pid), op, _as_date(month)): int(c)
        for pid, op, month, c in conn.execute(_months_from_rows(conn, None))
    }
    limited = sa.select(programmes.c.id).where(
        programmes.c.monthly_operator_limit_cents.is_not(None)
    )
    kept = {
        (int(pid), op, _as_date(month)): int(c)
        for pid, op, month, c in conn.execute(
            sa.select(m.programme_id, m.operator, m.month, m.credited_cents).where(
                m.programme_id.in_(limited)
            )
        )
        if c
    }
    return [
        (("operator month", *key), kept.get(key, 0), raw.get(key, 0))
        for key in sorted(set(raw) | set(kept))
        if kept.get(key, 0) != raw.get(key, 0)
    ]


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


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
            if "monthly_operator_limit_cents" in changed:
                # Counters are kept only under a limit: count this programme's months afresh
                # (after the UPDATE took its row lock, so no credit intent is half counted).
                rebuild_operator_months(conn, [current["id"]])
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
        # General always exists (a movement with no programme counts against it), even on a
        # ledger whose first programme was made before anything listed them.
        if not any(p.code == GENERAL_CODE for p in found) and (
            states is None or "active" in states
        ):
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
