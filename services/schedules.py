"""Scheduled and recurring allocations (issue 15).

A schedule sends the same rows (cards, kinds, amounts, reasons) once at an IST date and time, or
monthly on a day, or weekly on a weekday, until an end date or a number of runs, from one
programme. Its life:

1. ``create`` records it ``pending_approval`` with its rows as version 1 (its start date may not
   be in the past). A second person ``approve``s it once (never the maker, under any of their
   names); it is then ``active`` and its ``next_due_at`` is the rule's first occurrence at or after
   the approval: a schedule never makes a run for a time before it was approved, and the "next
   run" the approver was shown (``views``) is the one approval records. An edit of future runs
   (``edit``) writes the new rows and rule as a pending version; the approved version keeps
   running until a second person approves the edit, and the runs already sent keep the rows they
   were sent with. An occurrence that fell due before the approval and was not recorded yet (the
   workers were down, or are just reaching it) is recorded by the approval first, under the
   version in force when it fell due, exactly as a worker would have: never dropped.
2. A worker calls ``materialise_due`` on every pass. Each due occurrence becomes a batch (state
   ``running``) through the batch machinery: its id is derived from the schedule and the due time,
   its rows' references from the batch id and row number, and it is written in ONE transaction
   with the occurrence's run and the move of ``next_due_at`` past it, a compare-and-set on the
   schedule being active and still due then. Two workers cannot both record an occurrence, and a
   worker that was down catches up each missed occurrence once. The batch's credits reserve the
   programme's budget as every batch does; a programme that cannot take them leaves the run
   ``refused`` (nothing sent) for a person to see.
3. An occurrence due longer ago than ``POINTS_DESK_SCHEDULE_CATCH_UP_HOURS`` when a worker finds
   it is not sent late: its run is ``waiting`` and a person chooses ``send_now`` or ``skip``.
4. ``pause`` stops the runs (occurrences due while paused are not caught up after ``resume``);
   ``cancel`` ends the schedule and skips its waiting runs. Batches already made are ordinary
   batches: paused, cancelled and reported on the Bulk page like any other.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from services import numbers
from services.allocations import batch_reference
from services.approvals import AlreadyDecided, SelfApproval
from services.bulk import DEFAULT_CONCURRENCY
from services.bulk_files import Preview
from services.config import Settings
from services.errors import Conflict, InvalidInput, NotFound
from services.models import (
    Allocation,
    BatchState,
    FailedRun,
    Kind,
    Status,
    UpcomingRun,
    parse_card_id,
    parse_free_text,
    parse_points,
)
from services.recurrence import IST, Repeat, Rule
from services.store import (
    BudgetExceeded,
    DuplicateBatchFile,
    DuplicateReference,
    Ledger,
    ProgrammeClosed,
    ScheduleEvent,
    ScheduleMoved,
    ScheduleRecord,
    ScheduleRow,
    ScheduleRun,
    UnknownProgramme,
    to_cents,
)

log = logging.getLogger("points_desk.schedules")

PENDING_APPROVAL, ACTIVE, PAUSED, CANCELLED, FINISHED = (
    "pending_approval",
    "active",
    "paused",
    "cancelled",
    "finished",
)
SENT, WAITING, SKIPPED, REFUSED = "sent", "waiting", "skipped", "refused"
MAX_ROWS = 5000  # a schedule's rows; a larger list is a bulk file's job
HUGE = Decimal("1000000000000")  # amounts were checked against the limit when the schedule was set
# The catch-up window when ``approve`` is not given the settings (the setting's own default).
DEFAULT_CATCH_UP_HOURS: float = Settings.model_fields["points_desk_schedule_catch_up_hours"].default
# Compare-and-set attempts of an approval that a worker's pass keeps overtaking (each lost attempt
# means a worker recorded an occurrence meanwhile: progress, never a loop without end).
_APPROVE_ATTEMPTS = 10

__all__ = [
    "ScheduleView",
    "approve",
    "cancel",
    "create",
    "edit",
    "failed_runs",
    "first_run_on_approval",
    "materialise_due",
    "pause",
    "resume",
    "rows_from_preview",
    "rows_from_text",
    "send_now",
    "skip",
    "upcoming_runs",
    "views",
]


# --- rows and rules ------------------------------------------------------------------------------


def _identity(text: str) -> str:
    return " ".join(text.split()).casefold()


def rule_of(record: ScheduleRecord, changes: dict[str, Any] | None = None) -> Rule:
    """The ``Rule`` a schedule's columns (with a pending edit's ``changes``) describe."""
    values: dict[str, Any] = {
        "repeat": record.repeat,
        "start_on": record.start_on,
        "time_of_day": record.time_of_day,
        "day_of_month": record.day_of_month,
        "weekday": record.weekday,
        "end_on": record.end_on,
        "count": record.max_runs,
    }
    for key, value in (changes or {}).get("rule", {}).items():
        values[key] = value
    start = values["start_on"]
    end = values["end_on"]
    return Rule(
        repeat=Repeat(values["repeat"]),
        start_on=start if isinstance(start, date) else date.fromisoformat(start),
        time_of_day=time.fromisoformat(str(values["time_of_day"])),
        day_of_month=values["day_of_month"],
        weekday=values["weekday"],
        end_on=end if end is None or isinstance(end, date) else date.fromisoformat(end),
        count=values["count"],
    )


def _rule_columns(rule: Rule) -> dict[str, Any]:
    return {
        "repeat": rule.repeat.value,
        "start_on": rule.start_on,
        "time_of_day": f"{rule.time_of_day:%H:%M}",
        "day_of_month": rule.day_of_month if rule.repeat is Repeat.MONTHLY else None,
        "weekday": rule.weekday if rule.repeat is Repeat.WEEKLY else None,
        "end_on": rule.end_on if rule.repeat is not Repeat.ONCE else None,
        "max_runs": rule.count if rule.repeat is not Repeat.ONCE else None,
    }


def _rule_json(rule: Rule) -> dict[str, Any]:
    columns = _rule_columns(rule)
    return {
        "repeat": columns["repeat"],
        "start_on": rule.start_on.isoformat(),
        "time_of_day": columns["time_of_day"],
        "day_of_month": columns["day_of_month"],
        "weekday": columns["weekday"],
        "end_on": columns["end_on"].isoformat() if columns["end_on"] else None,
        "count": columns["max_runs"],
    }


_ROW_LINE = re.compile(r"\s*(?P<card>[^,\s]+)\s*[,\s]\s*(?P<amount>[^\s,][^\s]*)\s*")


def rows_from_text(
    text: str, kind: Kind | str, reason: str, settings: Settings
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Rows from lines of ``card id, amount`` (comma, tab or spaces between), all of one kind and
    reason. Returns (rows, problems by line number); nothing is usable while a line is wrong."""
    kind = Kind(kind)
    rows: list[dict[str, Any]] = []
    problems: dict[int, str] = {}
    try:
        reason = parse_free_text(reason, "Reason", 200)
    except ValueError as error:
        problems[0] = str(error)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        # Only the first comma or space separates: the amount may be grouped the Indian way
        # ("EKC04AZHXP, 1,00,000"), and its commas are not separators.
        found = _ROW_LINE.fullmatch(line)
        if found is None:
            problems[number] = "Write a card id and an amount, like EKC04AZHXP, 500"
            continue
        try:
            card_id = parse_card_id(found["card"])
            amount = parse_points(found["amount"], settings.points_desk_max_points)
        except ValueError as error:
            problems[number] = str(error)
            continue
        rows.append(
            {
                "kind": kind.value,
                "card_id": card_id,
                "amount_cents": to_cents(amount),
                "reason": reason,
                "employee": None,
            }
        )
    return rows, problems


def rows_from_preview(preview: Preview) -> list[dict[str, Any]]:
    """The valid rows of a checked bulk file (``bulk.preview_upload``) as schedule rows."""
    return [
        {
            "kind": valid.allocation.kind.value,
            "card_id": valid.allocation.card_id,
            "amount_cents": to_cents(valid.allocation.amount),
            "reason": valid.allocation.reason,
            "employee": (
                valid.allocation.employee.model_dump(mode="json")
                if valid.allocation.employee is not None
                else None
            ),
        }
        for valid in preview.valid
    ]


def _check(
    ledger: Ledger,
    *,
    label: str,
    programme: str,
    rule: Rule,
    rows: Sequence[dict[str, Any]],
    now: datetime,
    keep_starts: Iterable[date] = (),
) -> tuple[str, str]:
    """The label and programme code, or ``InvalidInput`` naming what is wrong (by field in
    ``.fields``). A start date before today (IST) is refused unless it is one of ``keep_starts``
    (the schedule's own start, which an edit of a running schedule keeps)."""
    problems = dict(rule.problems())
    today = now.astimezone(IST).date()
    if rule.start_on < today and rule.start_on not in set(keep_starts):
        # Said next to the date: approval never makes runs from before it, so a past start would
        # only mislead ("from 1 Jan" when the first run is next week).
        what = "The date" if rule.repeat is Repeat.ONCE else "The start date"
        problems["start_on"] = (
            f"{what} {rule.start_on:%d %b %Y} is in the past: choose today or a later day"
        )
    try:
        label = parse_free_text(label, "Name", 100)
        if not label:
            problems["label"] = "Give the schedule a name"
    except ValueError as error:
        problems["label"] = str(error)
    code = (programme or "").strip().upper()
    found = ledger.programme(code) if code else None
    if found is None:
        problems["programme"] = "Choose the programme the schedule pays from"
    elif found.state != "active":
        problems["programme"] = f"{found.name} is closed: it takes no new credits"
    if not rows:
        problems["rows"] = "Add at least one employee (card id and amount) or a file"
    elif len(rows) > MAX_ROWS:
        problems["rows"] = f"A schedule holds at most {MAX_ROWS:,} rows; use a bulk file"
    elif rule.repeat is not Repeat.ONCE and any(r["kind"] == Kind.CREATE.value for r in rows):
        problems["rows"] = "A repeating schedule cannot open accounts: use card ids (credit rows)"
    if not problems:
        first = rule.first_from(now)
        if first is None:
            problems["start_on"] = "No run of this schedule is in the future: check the dates"
    if problems:
        error = InvalidInput("; ".join(problems.values()))
        error.fields = problems  # type: ignore[attr-defined]
        raise error
    return label, code


def _what(rule: Rule, rows: Sequence[ScheduleRow | dict[str, Any]]) -> str:
    """A version in words for the schedule's history: its rule, rows and total per run."""
    count, net = _net_cents(rows)
    return f"{rule.describe()}; {count:,} row(s), {numbers.points(Decimal(net) / 100)} a run"


def _net_cents(rows: Iterable[ScheduleRow | dict[str, Any]]) -> tuple[int, int]:
    """(rows, credits less debits in cents)."""
    count = net = 0
    for row in rows:
        if isinstance(row, dict):
            kind, cents = Kind(row["kind"]), int(row["amount_cents"])
        else:
            kind, cents = row.kind, to_cents(row.amount)
        count += 1
        net += -cents if kind is Kind.DEBIT else cents
    return count, net


# --- setting up, approving, changing ----------------------------------------------------------


def new_schedule_id() -> str:
    """A schedule id: short, unguessable, only letters and digits (it prefixes batch ids)."""
    return f"SC{secrets.token_hex(4).upper()}"


def create(
    ledger: Ledger,
    *,
    label: str,
    programme: str,
    rule: Rule,
    rows: Sequence[dict[str, Any]],
    maker: str,
    now: datetime | None = None,
) -> ScheduleRecord:
    """Set up a schedule; it waits for a second person's approval before anything is sent.
    ``InvalidInput`` (with ``.fields``) when the name, programme, rule or rows are wrong, or no
    run would be in the future."""
    now = now or datetime.now(UTC)
    label, code = _check(ledger, label=label, programme=programme, rule=rule, rows=rows, now=now)
    schedule_id = new_schedule_id()
    ledger.create_schedule(
        {
            "id": schedule_id,
            "label": label,
            "programme": code,
            **_rule_columns(rule),
            "state": PENDING_APPROVAL,
            "maker": maker,
            "note": f"set up by {maker}",
        },
        rows,
        event=(maker, "set up", _what(rule, rows)),
    )
    log.info("schedule %s set up by %s", schedule_id, maker)
    return _get(ledger, schedule_id)


def _get(ledger: Ledger, schedule_id: str) -> ScheduleRecord:
    found = ledger.get_schedule(schedule_id)
    if found is None:
        raise NotFound(f"There is no schedule {schedule_id}.")
    return found


def first_run_on_approval(
    ledger: Ledger, schedule_id: str, rule: Rule, now: datetime
) -> datetime | None:
    """The first run a version with ``rule`` makes if it is approved at ``now``: its first
    occurrence at or after ``now`` and after every run already recorded. Never an occurrence
    from before the approval (a back-dated start, or days the approval took), never one already
    made. ``approve`` records exactly this, and ``views`` shows it to the approver."""
    last = ledger.schedule_runs(schedule_id, limit=1)
    start = max(now, last[0].due_at + timedelta(microseconds=1)) if last else now
    return rule.first_from(start)


def _passed_before(rule: Rule, moment: datetime) -> list[datetime]:
    """The rule's occurrences before ``moment`` (what a late approval does not make)."""
    found: list[datetime] = []
    for due in rule.occurrences():
        if due >= moment:
            break
        found.append(due)
    return found


def _seen_changed(seen: datetime | ScheduleRecord, record: ScheduleRecord) -> bool:
    """Whether the schedule changed since the approver looked. ``seen`` as a record: only a
    person's change counts (a new or changed edit, a change before approval), not a worker
    recording a run; as its ``updated_at``: any write counts."""
    if isinstance(seen, ScheduleRecord):
        return _edited_since(seen, record) or seen.pending != record.pending
    return record.updated_at != seen


def approve(
    ledger: Ledger,
    schedule_id: str,
    *,
    approver: str,
    identities: Iterable[str] = (),
    allow_self: bool = False,
    seen: datetime | ScheduleRecord | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> ScheduleRecord:
    """Approve a new schedule or a pending edit of one.

    A new schedule becomes active; its first run is the rule's first occurrence at or after
    ``now`` (``first_run_on_approval``, what the approver was shown): occurrences from before the
    approval (a start in the past, days the approval took) are never made, and the approval's
    entry in the history says how many there were. ``Conflict`` when no run is left.

    An edit is in force for runs due from ``now`` on. An occurrence already due under the
    approved version that no worker has recorded yet (the workers are down, or reaching it this
    very moment) is recorded first, by this call, under the version in force when it fell due,
    with the workers' own rules (``materialise_due``: a running batch within the catch-up window
    of ``settings``, else waiting for *Send now* or *Skip*) and the same compare-and-set, so a
    worker's pass at the same instant records it once, whoever wins. Why the old version: it was
    approved and in force when the run fell due; the approver approves the future, and the edit
    may change the day or time so that the late run would not be an occurrence of the new rule at
    all. Runs already waiting for a person keep their version too (*Send now* sends those rows).

    ``SelfApproval`` when the approver made it (under any of ``identities``), ``AlreadyDecided``
    when someone decided or changed it first (a worker recording a run is no such change: the
    approval reads the schedule again and goes on). ``allow_self``: the open sandbox only
    (nobody else to ask). ``seen``: the schedule (or its ``updated_at``) when the approver looked
    at it; if a person changed it since, nothing is approved: the approver approves what they
    saw. ``settings``: for the catch-up window (the setting's default without them)."""
    now = now or datetime.now(UTC)
    record = _get(ledger, schedule_id)
    if seen is not None and _seen_changed(seen, record):
        raise AlreadyDecided("The schedule changed since you looked at it; look again.")
    own = None if allow_self else sorted({_identity(approver), *map(_identity, identities)} - {""})
    maker = str(record.pending.get("maker") or record.maker)
    if own is not None and _identity(maker) in own:
        raise SelfApproval("You set this up yourself: a second person has to approve it.")
    if record.pending_version is None:
        _approve_new(ledger, record, approver=approver, own=own, now=now)
    else:
        hours = settings.points_desk_schedule_catch_up_hours if settings else None
        window = timedelta(hours=DEFAULT_CATCH_UP_HOURS if hours is None else hours)
        _approve_edit(ledger, record, approver=approver, own=own, now=now, window=window)
    log.info("schedule %s approved by %s", schedule_id, approver)
    return _get(ledger, schedule_id)


def _approve_new(
    ledger: Ledger, record: ScheduleRecord, *, approver: str, own: list[str] | None, now: datetime
) -> None:
    rule = rule_of(record)
    first = first_run_on_approval(ledger, record.id, rule, now)
    if first is None:
        raise Conflict(
            "No run of this schedule is left after now: its time passed while it waited for "
            "approval. Change its date (Edit future runs) or cancel it."
        )
    detail = f"set up by {record.maker}: approved; first run {_shown(first)}"
    passed = _passed_before(rule, now)
    if passed:
        detail += (
            f"; {len(passed):,} earlier occurrence(s) (from {_shown(passed[0])}) fell before "
            "this approval and are not made"
        )
    changed = ledger.update_schedule(
        record.id,
        from_states=(PENDING_APPROVAL,),
        where={"updated_at": record.updated_at},
        not_makers=own,
        state=ACTIVE,
        checker=approver,
        approved_at=now,
        next_due_at=first,
        note=f"approved by {approver}",
        event=(approver, "approved", detail),
    )
    if not changed:
        raise AlreadyDecided("Someone changed or decided this schedule first; look again.")


def _approve_edit(
    ledger: Ledger,
    record: ScheduleRecord,
    *,
    approver: str,
    own: list[str] | None,
    now: datetime,
    window: timedelta,
) -> None:
    asked = record.pending_version
    maker = str(record.pending.get("maker") or record.maker)
    made: list[ScheduleRun] = []
    for _ in range(_APPROVE_ATTEMPTS):
        if record.pending_version != asked or record.state not in (ACTIVE, PAUSED):
            break  # another edit, a decision, a cancel: not what the approver approves
        if record.state == ACTIVE and record.next_due_at is not None and record.next_due_at <= now:
            # Due under the approved version and not recorded yet: record it (them) first, as a
            # worker would. A worker doing the same at this instant wins or loses the same
            # compare-and-set; either way the occurrence is recorded once.
            made += _catch_up(
                ledger, record, now=now, window=window, actor=approver,
                why=f"due before the edit {approver} approved: version {record.version}'s rows",
            )  # fmt: skip
            record = _get(ledger, record.id)
            continue
        rule = rule_of(record, record.pending)
        next_due = first_run_on_approval(ledger, record.id, rule, now)
        rows = ledger.schedule_rows(record.id, asked)
        detail = f"edit by {maker} approved: {_what(rule, rows)}; next run {_shown(next_due)}"
        for run in made:
            detail += f"; {_made_first(run)}"
        values: dict[str, Any] = {
            **_rule_columns(rule),
            "label": record.pending.get("label") or record.label,
            "version": asked,
            "pending_version": None,
            "pending": "",
            "checker": approver,
            "approved_at": now,
            "next_due_at": next_due,
            "note": f"edit by {maker} approved by {approver}",
        }
        if next_due is None and record.state == ACTIVE:
            values["state"] = FINISHED
        # Compare-and-set on what this approval was computed from. Not on ``updated_at``: a
        # worker recording a run moves it, and that is no reason to refuse the approval. A
        # worker that recorded an occurrence meanwhile moved ``next_due_at``: read, go again.
        if ledger.update_schedule(
            record.id,
            from_states=(record.state,),
            where={
                "pending_version": asked,
                "version": record.version,
                "next_due_at": record.next_due_at,
            },
            not_makers=own,
            event=(approver, "edit approved", detail),
            **values,
        ):
            return
        record = _get(ledger, record.id)
    raise AlreadyDecided("Someone changed or decided this schedule first; look again.")


def _made_first(run: ScheduleRun) -> str:
    """An occurrence an approval recorded before the edit took over, in words for the history."""
    what = f"sent as batch {run.batch_id}" if run.state == SENT else f"{run.state}: {run.note}"
    return f"the run due {_shown(run.due_at)} was due before: version {run.version}, {what}"


def edit(
    ledger: Ledger,
    schedule_id: str,
    *,
    actor: str,
    label: str,
    rule: Rule,
    rows: Sequence[dict[str, Any]],
    now: datetime | None = None,
    seen: ScheduleRecord | None = None,
) -> ScheduleRecord:
    """Change the future runs (rows, rule, name). A schedule not yet approved is changed in
    place (and still waits for approval); an approved one gets a pending version that a second
    person approves, while the approved version keeps running. Runs already made keep the rows
    they were sent with. The programme does not change: set up a new schedule for another.

    ``seen``: the schedule as the person found it when they began editing. If someone else
    changed it since (another edit, an approval), nothing is saved (``Conflict``): two people
    editing at once never silently replace each other's change."""
    now = now or datetime.now(UTC)
    record = _get(ledger, schedule_id)
    if seen is not None and _edited_since(seen, record):
        raise Conflict(
            "Someone else changed this schedule since you opened it; nothing was saved. "
            "The form now shows their version."
        )
    # The schedule's own start (approved, or of the edit that waits) may stay as it is, even in
    # the past: the form shows it, and approval computes runs from its own time anyway.
    waiting = pending_rule(record)
    starts = {record.start_on, *([waiting.start_on] if waiting is not None else [])}
    label, _ = _check(
        ledger, label=label, programme=record.programme, rule=rule, rows=rows, now=now,
        keep_starts=starts,
    )  # fmt: skip
    if record.state == PENDING_APPROVAL:
        changed = ledger.update_schedule(
            schedule_id,
            from_states=(PENDING_APPROVAL,),
            # Compare-and-set on what the person saw, not only on what was read just now.
            where={"version": record.version}
            | ({"updated_at": seen.updated_at} if seen is not None else {}),
            rows=rows,
            rows_version=record.version,
            label=label,
            maker=actor,
            note=f"changed by {actor} before approval",
            event=(actor, "changed", f"before approval: {_what(rule, rows)}"),
            **_rule_columns(rule),
        )
    elif record.state in (ACTIVE, PAUSED):
        version = max(record.version, record.pending_version or 0) + 1
        changed = ledger.update_schedule(
            schedule_id,
            from_states=(ACTIVE, PAUSED),
            where={"pending_version": record.pending_version}
            | ({"version": seen.version} if seen is not None else {}),
            rows=rows,
            rows_version=version,
            pending_version=version,
            pending={
                "maker": actor,
                "requested_at": now.isoformat(),
                "label": label,
                "rule": _rule_json(rule),
            },
            note=f"future runs changed by {actor}: waiting for approval",
            event=(actor, "edit asked", f"future runs: {_what(rule, rows)}"),
        )
    else:
        raise Conflict(f"The schedule is {record.state}: it has no future runs to change.")
    if not changed:
        raise Conflict("Someone changed this schedule meanwhile; look again before editing.")
    return _get(ledger, schedule_id)


def _edited_since(seen: ScheduleRecord, now: ScheduleRecord) -> bool:
    """Whether what an edit was based on changed: a new approved or pending version, a change in
    place before approval, or a new name. (A worker moving ``next_due_at`` on is no change.)"""
    if (now.version, now.pending_version, now.label) != (
        seen.version,
        seen.pending_version,
        seen.label,
    ):
        return True
    # Edits before approval change in place, under the same version: their time tells them.
    return now.state == PENDING_APPROVAL and now.updated_at != seen.updated_at


def pause(ledger: Ledger, schedule_id: str, *, actor: str) -> ScheduleRecord:
    """No runs until resumed (occurrences due meanwhile are not caught up)."""
    if not ledger.update_schedule(
        schedule_id,
        from_states=(ACTIVE,),
        state=PAUSED,
        note=f"paused by {actor}",
        event=(actor, "paused", "no runs until resumed"),
    ):
        state = _get(ledger, schedule_id).state
        raise Conflict(f"The schedule is {state}: only an active one pauses.")
    return _get(ledger, schedule_id)


def resume(
    ledger: Ledger, schedule_id: str, *, actor: str, now: datetime | None = None
) -> ScheduleRecord:
    """Active again from the next occurrence at or after now (what fell due while paused is
    not sent)."""
    now = now or datetime.now(UTC)
    record = _get(ledger, schedule_id)
    next_due = rule_of(record).first_from(now)
    changed = ledger.update_schedule(
        schedule_id,
        from_states=(PAUSED,),
        state=ACTIVE if next_due is not None else FINISHED,
        next_due_at=next_due,
        note=f"resumed by {actor}",
        event=(actor, "resumed", f"next run {_shown(next_due)}"),
    )
    if not changed:
        raise Conflict(f"The schedule is {record.state}: only a paused one resumes.")
    return _get(ledger, schedule_id)


def cancel(ledger: Ledger, schedule_id: str, *, actor: str) -> ScheduleRecord:
    """End the schedule for good; its waiting runs are skipped. Batches already made are not
    touched (cancel one on the Bulk page)."""
    if not ledger.update_schedule(
        schedule_id,
        from_states=(PENDING_APPROVAL, ACTIVE, PAUSED),
        state=CANCELLED,
        next_due_at=None,
        note=f"cancelled by {actor}",
        event=(actor, "cancelled", "no more runs"),
    ):
        state = _get(ledger, schedule_id).state
        raise Conflict(f"The schedule is {state}: it cannot be cancelled.")
    for run in ledger.schedule_runs(schedule_id, states=(WAITING, REFUSED)):
        ledger.update_run(
            None, run.id, from_states=(WAITING, REFUSED), state=SKIPPED,
            actor=actor, note=f"schedule cancelled by {actor}",
            event=(actor, "skipped", f"run due {_shown(run.due_at)}: schedule cancelled"),
        )  # fmt: skip
    return _get(ledger, schedule_id)


# --- the worker's part ---------------------------------------------------------------------------


def occurrence_batch_id(schedule_id: str, due_at: datetime) -> str:
    """The batch an occurrence becomes: derived from (schedule, due time), never minted."""
    return f"{schedule_id}-{due_at.astimezone(UTC):%y%m%d%H%M}"


def _make_batch(
    ledger: Ledger,
    record: ScheduleRecord,
    version: int,
    due_at: datetime,
    within: Any,
) -> str:
    """Write the occurrence's batch (running) and, in the same transaction, ``within(conn)``."""
    batch_id = occurrence_batch_id(record.id, due_at)
    rows = ledger.schedule_rows(record.id, version)
    allocations = [
        (
            Allocation.model_validate(
                {
                    "reference": batch_reference(batch_id, row.row_number),
                    "kind": row.kind,
                    "amount": row.amount,
                    "card_id": row.card_id,
                    "employee": row.employee,
                    "reason": row.reason,
                    "programme": record.programme,
                },
                context={"max_points": HUGE},
            ),
            row.row_number,
        )
        for row in rows
    ]
    shown = due_at.astimezone(IST)
    ledger.create_batch(
        batch_id=batch_id,
        file_name=f"Schedule {record.label} ({record.id}), {shown:%d %b %Y %H:%M} IST",
        file_digest=hashlib.sha256(f"schedule:{batch_id}".encode()).hexdigest(),
        operator=record.maker,
        allocations=allocations,
        concurrency=DEFAULT_CONCURRENCY,
        state=BatchState.RUNNING,
        note=f"schedule {record.id} due {shown:%d %b %Y %H:%M} IST (approved by {record.checker})",
        approved_by=record.checker,
        within=within,
    )
    return batch_id


def materialise_due(
    ledger: Ledger, settings: Settings, *, now: datetime, actor: str
) -> list[ScheduleRun]:
    """Turn every occurrence due at ``now`` into a run, oldest first, each exactly once.

    Due within the catch-up window: a running batch (the worker's next look sends it). Due
    longer ago: a ``waiting`` run for a person. A programme that cannot take it: ``refused``.
    Safe to call from any number of workers at once; returns the runs this call recorded."""
    window = timedelta(hours=settings.points_desk_schedule_catch_up_hours)
    made: list[ScheduleRun] = []
    for record in ledger.due_schedules(now):
        try:
            made.extend(_catch_up(ledger, record, now=now, window=window, actor=actor))
        except Exception:
            # One schedule's trouble must not stop the others (nor the batches after this).
            log.exception("schedule %s: its due runs could not be recorded", record.id)
    return made


def _catch_up(
    ledger: Ledger,
    record: ScheduleRecord,
    *,
    now: datetime,
    window: timedelta,
    actor: str,
    why: str = "",
) -> list[ScheduleRun]:
    """Record ``record``'s occurrences due at ``now``, oldest first, each with the version (rows
    and rule) the schedule had when read; stops when another worker or a person moved it.
    ``why``: said in each run's note (an approval recording runs due before it)."""
    made: list[ScheduleRun] = []
    while record.state == ACTIVE and record.next_due_at is not None and record.next_due_at <= now:
        # The rule as read with this record: an edit approved meanwhile brings its own rule.
        rule = rule_of(record)
        due = record.next_due_at
        following = rule.first_after(due)
        rows, net = _net_cents(ledger.schedule_rows(record.id, record.version))
        run = {
            "schedule_id": record.id,
            "due_at": due,
            "version": record.version,
            "rows": rows,
            "net_cents": net,
            "actor": actor,
            "created_at": now,
            "updated_at": now,
        }
        if why:
            run["note"] = why
        if now - due > window:
            hours = settings_hours(window)
            late = f"due more than {hours} ago: not sent late"
            ok = ledger.record_run(
                record.id,
                due,
                following,
                {**run, "state": WAITING, "note": f"{late}; {why}" if why else late},
            )
        else:
            ok = _send_occurrence(ledger, record, due, following, run)
        if not ok:
            break  # another worker (or a person) moved the schedule: it records the rest
        found = ledger.schedule_runs(record.id, limit=1)
        made.extend(found[:1])
        record = _get(ledger, record.id)
    return made


def _shown(moment: datetime | None) -> str:
    return f"{moment.astimezone(IST):%d %b %Y, %H:%M} IST" if moment is not None else "none"


def settings_hours(window: timedelta) -> str:
    hours = window.total_seconds() / 3600
    return f"{hours:g} hour{'s' if hours != 1 else ''}"


def _send_occurrence(
    ledger: Ledger,
    record: ScheduleRecord,
    due: datetime,
    following: datetime | None,
    run: dict[str, Any],
) -> bool:
    batch_id = occurrence_batch_id(record.id, due)

    def within(conn: Any) -> None:
        ledger.advance(
            conn, record.id, due, following, {**run, "state": SENT, "batch_id": batch_id}
        )

    try:
        _make_batch(ledger, record, record.version, due, within)
    except (ScheduleMoved, DuplicateBatchFile, DuplicateReference):
        return False  # another worker recorded this occurrence: the unique keys said so
    except (BudgetExceeded, ProgrammeClosed, UnknownProgramme) as error:
        log.warning("schedule %s due %s refused: %s", record.id, due, error)
        note = f"{error}; {run['note']}" if run.get("note") else str(error)
        return ledger.record_run(record.id, due, following, {**run, "state": REFUSED, "note": note})
    log.info("schedule %s: occurrence due %s is batch %s", record.id, due, batch_id)
    return True


def send_now(ledger: Ledger, run_id: int, *, actor: str) -> str:
    """Send a waiting (or refused) run now, as the batch its occurrence always maps to. Returns
    the batch id. ``BudgetExceeded``/``ProgrammeClosed`` leave it as it was."""
    run = ledger.schedule_run(run_id)
    if run is None:
        raise NotFound("There is no such run.")
    record = _get(ledger, run.schedule_id)
    if record.state == CANCELLED:
        raise Conflict("The schedule is cancelled: its runs are not sent.")
    batch_id = occurrence_batch_id(record.id, run.due_at)

    def within(conn: Any) -> None:
        if not ledger.update_run(
            conn,
            run_id,
            from_states=(WAITING, REFUSED),
            state=SENT,
            batch_id=batch_id,
            actor=actor,
            note=f"sent late by {actor}",
            event=(actor, "sent now", f"run due {_shown(run.due_at)} sent as batch {batch_id}"),
        ):
            raise ScheduleMoved("someone decided this run first")

    try:
        _make_batch(ledger, record, run.version, run.due_at, within)
    except (ScheduleMoved, DuplicateBatchFile, DuplicateReference):
        raise Conflict("Someone decided this run first; look again.") from None
    return batch_id


def skip(ledger: Ledger, run_id: int, *, actor: str) -> None:
    """Do not send a waiting (or refused) run; it stays listed as skipped."""
    run = ledger.schedule_run(run_id)
    if run is None:
        raise NotFound("There is no such run.")
    if not ledger.update_run(
        None, run_id, from_states=(WAITING, REFUSED), state=SKIPPED, actor=actor,
        note=f"skipped by {actor}",
        event=(actor, "skipped", f"run due {_shown(run.due_at)}: not sent"),
    ):  # fmt: skip
        raise Conflict("Someone decided this run first; look again.")


# --- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleView:
    """A schedule as the Schedules page lists it."""

    record: ScheduleRecord
    rule: Rule
    rows: list[ScheduleRow]
    next_run: datetime | None
    total: Decimal  # credits less debits at each run
    runs: list[ScheduleRun]
    # Waiting for approval (a new schedule or an edit): the next run that approving it now makes,
    # exactly what ``approve`` records (``first_run_on_approval``); ``None`` otherwise, or when
    # approving would leave no run.
    next_run_if_approved: datetime | None = None

    @property
    def approval(self) -> str:
        """The approval state in a manager's words."""
        r = self.record
        if r.state == PENDING_APPROVAL:
            return "waiting for approval"
        words = f"approved by {r.checker}" if r.checker else "approved"
        if r.pending_version is not None:
            words += f"; an edit by {r.pending.get('maker')} waits for approval"
        return words

    @property
    def describe(self) -> str:
        return self.rule.describe()


def views(ledger: Ledger, *, now: datetime | None = None) -> list[ScheduleView]:
    """Every schedule with its next run, total per run and latest runs, newest first."""
    now = now or datetime.now(UTC)
    found: list[ScheduleView] = []
    for record in ledger.list_schedules():
        rule = rule_of(record)
        rows = ledger.schedule_rows(record.id, record.version)
        _, net = _net_cents(rows)
        next_run = if_approved = None
        if record.state == ACTIVE:
            next_run = record.next_due_at
        elif record.state == PENDING_APPROVAL:
            # What approval records, not the rule's first occurrence ever (a start in the past).
            next_run = if_approved = first_run_on_approval(ledger, record.id, rule, now)
        elif record.state == PAUSED:
            next_run = rule.first_from(now)  # when it would run if resumed now
        edited = pending_rule(record) if record.state == ACTIVE else None  # paused: no runs
        if edited is not None:
            if_approved = first_run_on_approval(ledger, record.id, edited, now)
        found.append(
            ScheduleView(
                record=record,
                rule=rule,
                rows=rows,
                next_run=next_run,
                total=Decimal(net) / 100,
                runs=ledger.schedule_runs(record.id, limit=24),
                next_run_if_approved=if_approved,
            )
        )
    return found


def history(ledger: Ledger, schedule_id: str) -> list[ScheduleEvent]:
    """Every change to the schedule and decision about its late runs, oldest first."""
    return ledger.schedule_events(schedule_id)


def pending_rule(record: ScheduleRecord) -> Rule | None:
    """The rule of an edit waiting for approval (``None`` when none waits)."""
    return rule_of(record, record.pending) if record.pending_version is not None else None


def upcoming_runs(ledger: Ledger, *, now: datetime, until: datetime) -> list[UpcomingRun]:
    """Every occurrence of an active, approved schedule due after ``now`` and up to ``until``,
    earliest first."""
    found: list[UpcomingRun] = []
    for record in ledger.list_schedules(states=(ACTIVE,)):
        if record.next_due_at is None:
            continue
        rule = rule_of(record)
        _, net = _net_cents(ledger.schedule_rows(record.id, record.version))
        start = max(record.next_due_at, now + timedelta(microseconds=1))
        for due in rule.between(start, until):
            found.append(
                UpcomingRun(
                    schedule_id=record.id,
                    label=record.label,
                    due_at=due,
                    total=Decimal(net) / 100,
                    programme_code=None if record.programme == "GENERAL" else record.programme,
                )
            )
    found.sort(key=lambda run: (run.due_at, run.schedule_id))
    return found


def failed_runs(ledger: Ledger, *, since: datetime) -> list[FailedRun]:
    """Occurrences that ran since ``since`` and left failed rows, newest first (a run the
    programme refused counts every row as failed: nothing was sent)."""
    labels = {record.id: record.label for record in ledger.list_schedules()}
    found: list[FailedRun] = []
    for run in ledger.schedule_runs(states=(SENT, REFUSED), since=since, limit=1000):
        if run.state == REFUSED:
            failed = run.rows
        else:
            assert run.batch_id is not None
            failed = ledger.batch_counts(run.batch_id)[Status.FAILED]
        if failed:
            found.append(
                FailedRun(
                    schedule_id=run.schedule_id,
                    label=labels.get(run.schedule_id, run.schedule_id),
                    due_at=run.due_at,
                    failed_rows=failed,
                    batch_id=run.batch_id,
                )
            )
    return found


def waiting_count(ledger: Ledger) -> int:
    """What waits for a person on the Schedules page: approvals of schedules or their edits,
    and late or refused runs to send or skip."""
    return ledger.schedules_waiting()
