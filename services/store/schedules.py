"""Schedules: the ``schedules``, ``schedule_rows`` and ``schedule_runs`` tables.

The store records and compare-and-sets; the rule arithmetic and the decisions live in
``services/schedules.py``. The one write that matters for "exactly once" is ``advance``: it moves
a schedule's ``next_due_at`` past an occurrence only if it still points at it (and the schedule is
still active), in the same transaction that records the occurrence's run (and its batch), so two
workers, or a worker catching up after an outage, can never record one occurrence twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from services.errors import Conflict
from services.models import Kind
from services.store.engine import Database, from_cents
from services.store.schema import schedule_events, schedule_rows, schedule_runs, schedules


class ScheduleMoved(Conflict):
    """The schedule is not where the caller saw it (another worker recorded the occurrence, or a
    person paused, edited or cancelled it meanwhile); nothing was written."""


@dataclass(frozen=True)
class ScheduleRecord:
    """One schedule as stored (its rule in columns; the service builds a ``Rule`` from them)."""

    id: str
    label: str
    programme: str
    repeat: str
    day_of_month: int | None
    weekday: int | None
    time_of_day: str
    start_on: date
    end_on: date | None
    max_runs: int | None
    state: str
    version: int
    pending_version: int | None
    pending: dict[str, Any]
    maker: str
    checker: str | None
    approved_at: datetime | None
    next_due_at: datetime | None
    created_at: datetime
    updated_at: datetime
    note: str


@dataclass(frozen=True)
class ScheduleEvent:
    """One change to a schedule or decision about its run."""

    at: datetime
    actor: str
    action: str
    detail: str


def _note(conn: Connection, schedule_id: str, event: tuple[str, str, str] | None) -> None:
    """Write ``event`` (actor, action, detail) for the schedule, in ``conn``'s transaction."""
    if event is None:
        return
    actor, action, detail = event
    conn.execute(
        schedule_events.insert().values(
            schedule_id=schedule_id,
            at=datetime.now(UTC),
            actor=actor[:200],
            action=action[:24],
            detail=detail,
        )
    )


@dataclass(frozen=True)
class ScheduleRow:
    """One row a schedule's version sends at every occurrence."""

    row_number: int
    kind: Kind
    card_id: str | None
    amount: Decimal
    reason: str
    employee: dict[str, Any] | None


@dataclass(frozen=True)
class ScheduleRun:
    """One occurrence that came due, and what became of it."""

    id: int
    schedule_id: str
    due_at: datetime
    version: int
    state: str
    batch_id: str | None
    rows: int
    net: Decimal
    actor: str
    created_at: datetime
    updated_at: datetime
    note: str


def _schedule(m: Any) -> ScheduleRecord:
    values = dict(m)
    values["pending"] = json.loads(values["pending"]) if values.get("pending") else {}
    values["note"] = values.get("note") or ""
    return ScheduleRecord(**values)


def _row(m: Any) -> ScheduleRow:
    return ScheduleRow(
        row_number=m["row_number"],
        kind=Kind(m["kind"]),
        card_id=m["card_id"],
        amount=from_cents(m["amount_cents"]),  # type: ignore[arg-type]
        reason=m["reason"] or "",
        employee=json.loads(m["employee"]) if m["employee"] else None,
    )


def _run(m: Any) -> ScheduleRun:
    values = dict(m)
    values["net"] = from_cents(values.pop("net_cents"))
    values["note"] = values.get("note") or ""
    return ScheduleRun(**values)


def row_values(schedule_id: str, version: int, rows: Sequence[dict[str, Any]]) -> list[dict]:
    """``schedule_rows`` values of one version (``rows``: kind, card_id, amount_cents, reason,
    employee dict or None), numbered from 1."""
    return [
        {
            "schedule_id": schedule_id,
            "version": version,
            "row_number": number,
            "kind": Kind(row["kind"]).value,
            "card_id": row.get("card_id"),
            "amount_cents": int(row["amount_cents"]),
            "reason": row.get("reason") or "",
            "employee": json.dumps(row["employee"], sort_keys=True) if row.get("employee") else "",
        }
        for number, row in enumerate(rows, start=1)
    ]


class ScheduleStore(Database):
    """Schedules, their versioned rows and their runs."""

    # -- schedules -------------------------------------------------------------------------------

    def create_schedule(
        self,
        values: dict[str, Any],
        rows: Sequence[dict[str, Any]],
        event: tuple[str, str, str] | None = None,
    ) -> None:
        """Record a schedule (version 1), its rows and ``event`` in one transaction."""
        now = datetime.now(UTC)
        record = {"created_at": now, "updated_at": now, "version": 1, "pending": "", **values}
        with self.writing() as conn:
            conn.execute(schedules.insert().values(record))
            conn.execute(schedule_rows.insert(), row_values(values["id"], 1, rows))
            _note(conn, values["id"], event)

    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        with self.reading() as conn:
            found = conn.execute(sa.select(schedules).where(schedules.c.id == schedule_id))
            mapping = found.mappings().one_or_none()
        return _schedule(mapping) if mapping is not None else None

    def list_schedules(self, states: Iterable[str] | None = None) -> list[ScheduleRecord]:
        """Schedules, newest first (optionally only those in ``states``)."""
        query = sa.select(schedules).order_by(schedules.c.created_at.desc(), schedules.c.id)
        if states is not None:
            query = query.where(schedules.c.state.in_(list(states)))
        with self.reading() as conn:
            return [_schedule(m) for m in conn.execute(query).mappings()]

    def due_schedules(self, now: datetime) -> list[ScheduleRecord]:
        """Active schedules whose next occurrence is due at ``now``."""
        query = (
            sa.select(schedules)
            .where(schedules.c.state == "active", schedules.c.next_due_at <= now)
            .order_by(schedules.c.next_due_at)
        )
        with self.reading() as conn:
            return [_schedule(m) for m in conn.execute(query).mappings()]

    def update_schedule(
        self,
        schedule_id: str,
        *,
        from_states: Iterable[str] | None = None,
        where: dict[str, Any] | None = None,
        not_makers: Sequence[str] | None = None,
        rows: Sequence[dict[str, Any]] | None = None,
        rows_version: int | None = None,
        event: tuple[str, str, str] | None = None,
        **values: Any,
    ) -> bool:
        """Set columns of a schedule if it is in ``from_states`` and its columns equal ``where``
        (a compare-and-set); ``not_makers``: only if its maker (or the pending edit's maker) is
        none of these names (lower-cased). ``rows`` are written as version ``rows_version``, and
        ``event`` (actor, action, detail) recorded, in the same transaction. Returns whether it
        changed."""
        if isinstance(values.get("pending"), dict):
            values["pending"] = json.dumps(values["pending"], sort_keys=True, default=str)
        values.setdefault("updated_at", datetime.now(UTC))
        query = schedules.update().where(schedules.c.id == schedule_id).values(values)
        if from_states is not None:
            query = query.where(schedules.c.state.in_(list(from_states)))
        for column, value in (where or {}).items():
            col = schedules.c[column]
            query = query.where(col.is_(None) if value is None else col == value)
        with self.writing() as conn:
            if not_makers is not None:
                found = conn.execute(
                    sa.select(schedules.c.maker, schedules.c.pending).where(
                        schedules.c.id == schedule_id
                    )
                ).one_or_none()
                if found is None:
                    return False
                pending = json.loads(found.pending) if found.pending else {}
                maker = str(pending.get("maker") or found.maker)
                if " ".join(maker.split()).casefold() in not_makers:
                    return False
                query = query.where(schedules.c.maker == found.maker)
            if conn.execute(query).rowcount != 1:
                return False
            if rows is not None:
                assert rows_version is not None
                conn.execute(
                    schedule_rows.delete().where(
                        schedule_rows.c.schedule_id == schedule_id,
                        schedule_rows.c.version == rows_version,
                    )
                )
                conn.execute(schedule_rows.insert(), row_values(schedule_id, rows_version, rows))
            _note(conn, schedule_id, event)
            return True

    def schedule_rows(self, schedule_id: str, version: int) -> list[ScheduleRow]:
        """The rows one version of a schedule sends, in order."""
        query = (
            sa.select(schedule_rows)
            .where(schedule_rows.c.schedule_id == schedule_id, schedule_rows.c.version == version)
            .order_by(schedule_rows.c.row_number)
        )
        with self.reading() as conn:
            return [_row(m) for m in conn.execute(query).mappings()]

    # -- runs ------------------------------------------------------------------------------------

    def advance(
        self,
        conn: Connection,
        schedule_id: str,
        due_at: datetime,
        next_due_at: datetime | None,
        run: dict[str, Any],
    ) -> None:
        """Inside a write transaction: move the schedule past ``due_at`` (to ``next_due_at``;
        ``None``: finished) and record ``run``. ``ScheduleMoved`` (raise: the transaction rolls
        back) unless the schedule is active, still due at ``due_at`` and still at the version
        ``run`` was made from (an edit approved meanwhile: the worker reads it again)."""
        values: dict[str, Any] = {"next_due_at": next_due_at, "updated_at": run["created_at"]}
        if next_due_at is None:
            values["state"] = "finished"
        moved = conn.execute(
            schedules.update()
            .where(
                schedules.c.id == schedule_id,
                schedules.c.state == "active",
                schedules.c.next_due_at == due_at,
                schedules.c.version == run["version"],
            )
            .values(values)
        )
        if moved.rowcount != 1:
            raise ScheduleMoved(f"schedule {schedule_id} is no longer due at {due_at:%Y-%m-%d}")
        conn.execute(schedule_runs.insert().values(run))

    def record_run(
        self, schedule_id: str, due_at: datetime, next_due_at: datetime | None, run: dict
    ) -> bool:
        """Record a run without a batch (waiting for a person, or refused) and advance the
        schedule past it; False when another worker did first (nothing written)."""
        try:
            with self.writing() as conn:
                self.advance(conn, schedule_id, due_at, next_due_at, run)
        except (ScheduleMoved, IntegrityError):
            return False
        return True

    def update_run(
        self,
        conn: Connection | None,
        run_id: int,
        *,
        from_states: Iterable[str],
        event: tuple[str, str, str] | None = None,
        **values: Any,
    ) -> bool:
        """Compare-and-set a run's state, with ``event`` noted on its schedule (inside
        ``conn``'s transaction when given)."""
        values.setdefault("updated_at", datetime.now(UTC))
        query = (
            schedule_runs.update()
            .where(schedule_runs.c.id == run_id, schedule_runs.c.state.in_(list(from_states)))
            .values(values)
            .returning(schedule_runs.c.schedule_id)
        )

        def apply(on: Connection) -> bool:
            moved = on.execute(query).one_or_none()
            if moved is not None:
                _note(on, moved.schedule_id, event)
            return moved is not None

        if conn is not None:
            return apply(conn)
        with self.writing() as own:
            return apply(own)

    def schedule_events(self, schedule_id: str) -> list[ScheduleEvent]:
        """Every change to a schedule, oldest first."""
        e = schedule_events.c
        query = (
            sa.select(e.at, e.actor, e.action, e.detail)
            .where(e.schedule_id == schedule_id)
            .order_by(e.id)
        )
        with self.reading() as conn:
            return [ScheduleEvent(*row) for row in conn.execute(query)]

    def schedule_run(self, run_id: int) -> ScheduleRun | None:
        with self.reading() as conn:
            found = conn.execute(sa.select(schedule_runs).where(schedule_runs.c.id == run_id))
            mapping = found.mappings().one_or_none()
        return _run(mapping) if mapping is not None else None

    def schedule_runs(
        self,
        schedule_id: str | None = None,
        *,
        states: Iterable[str] | None = None,
        since: datetime | None = None,
        limit: int = 200,
    ) -> list[ScheduleRun]:
        """Runs, the latest due first: of one schedule, in ``states``, recorded since ``since``."""
        r = schedule_runs.c
        query = sa.select(schedule_runs).order_by(r.due_at.desc(), r.id.desc()).limit(limit)
        if schedule_id is not None:
            query = query.where(r.schedule_id == schedule_id)
        if states is not None:
            query = query.where(r.state.in_(list(states)))
        if since is not None:
            query = query.where(r.created_at >= since)
        with self.reading() as conn:
            return [_run(m) for m in conn.execute(query).mappings()]

    def schedules_waiting(self) -> int:
        """Schedules (or edits) waiting for approval plus runs waiting for a person's decision."""
        s, r = schedules.c, schedule_runs.c
        with self.reading() as conn:
            asked = conn.execute(
                sa.select(sa.func.count()).where(
                    sa.or_(s.state == "pending_approval", s.pending_version.is_not(None)),
                    s.state.in_(["pending_approval", "active", "paused"]),
                )
            ).scalar_one()
            late = conn.execute(
                sa.select(sa.func.count()).where(r.state.in_(["waiting", "refused"]))
            ).scalar_one()
        return int(asked) + int(late)
