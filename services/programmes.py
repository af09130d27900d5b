"""Programme use cases for the Programmes page: read a form, create, change, close.

The store (``services/store/programmes.py``) keeps the rows, the counters and the audit; this
module holds the rules about what a person may change directly. A change that loosens a money
rule waits for a second person, by the same request a budget raise always used
(``approvals.request_programme_change``, kind ``"budget"``): approving it applies exactly the
values asked, rejecting it leaves the programme as it was. What loosens:

* **the budget**, raised more than ``POINTS_DESK_APPROVAL_BATCH_THRESHOLD`` above the budget a
  second person last approved for the programme (``approvals.approved_budget``; 0 when nobody
  ever did, so a programme made at once holds at most that much). Counting from the approved
  budget, not from the budget now, is what stops small raises adding up: nine raises of 99,999
  take a budget of 1,00,000 to 9,99,991 only through a second person, however they are spread
  in time. A budget may be raised back up to that again (cut, then restored) without one, as
  the budget cannot be cut below what is already used;
* **the debit approval threshold**, when the threshold that applies (the programme's own, else
  the global ``POINTS_DESK_APPROVAL_DEBIT_THRESHOLD``) goes up: raising it, or removing a
  programme's own threshold that is below the global one;
* **the monthly operator limit**, raised or removed;
* at creation: a budget above that threshold, or no budget limit (the programme is created with
  a budget of 0 until a second person approves it), and an own debit threshold above the
  global one (the global one applies until approved).

Tightening (a lower budget, threshold or limit, a new limit) applies at once, as do the other
fields (name, dates, owner, description).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from services import approvals
from services.allocations import debit_threshold
from services.config import Settings
from services.errors import Conflict
from services.models import parse_free_text, parse_points
from services.numbers import figure
from services.store import Ledger, Programme, UnknownProgramme

_CODE = re.compile(r"[A-Z0-9][A-Z0-9_\-]{0,15}")
#: The largest budget, limit or threshold a form accepts (points).
MAX_BUDGET = Decimal("100000000000")


@dataclass(frozen=True)
class Saved:
    """What a save (or a creation) did: the programme as it now is, and the change left waiting
    for a second person (if any): ``held`` says what it asks, in a manager's words."""

    programme: Programme
    raise_request: approvals.Approval | None = None

    @property
    def held(self) -> list[str]:
        """What waits for a second person ("raise Q3 from 1,000 to 5,00,000 points")."""
        return self.raise_request.reasons if self.raise_request is not None else []

    @property
    def code(self) -> str:
        return self.programme.code

    @property
    def name(self) -> str:
        return self.programme.name


def _amount(value: Any, label: str, maximum: Decimal, *, optional: bool) -> Decimal | None:
    text = "" if value is None else str(value).strip()
    if not text:
        if optional:
            return None
        raise ValueError(f"Enter the {label} in points")
    return parse_points(text, maximum)


def read_form(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The programme fields from a form's raw values, and an error per field that is wrong."""
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    if "code" in values:
        code = str(values.get("code") or "").strip().upper()
        if not _CODE.fullmatch(code):
            errors["code"] = "A short code is 1 to 16 letters, digits, hyphens or underscores"
        out["code"] = code
    try:
        out["name"] = parse_free_text(values.get("name"), "Name", 80)
        if not out["name"]:
            raise ValueError("Give the programme a name")
    except ValueError as error:
        errors["name"] = str(error)
    for key, label, optional in (
        ("budget", "budget", True),
        ("monthly_operator_limit", "monthly limit", True),
        ("debit_threshold", "debit threshold", True),
    ):
        try:
            out[key] = _amount(values.get(key), label, MAX_BUDGET, optional=optional)
        except ValueError as error:
            errors[key] = str(error)
    starts, ends = values.get("starts_on"), values.get("ends_on")
    out["starts_on"] = starts if isinstance(starts, date) else None
    out["ends_on"] = ends if isinstance(ends, date) else None
    if out["starts_on"] and out["ends_on"] and out["ends_on"] < out["starts_on"]:
        errors["ends_on"] = "The end date is before the start date"
    for key, label, size in (("owner", "Owner", 80), ("description", "Description", 500)):
        try:
            out[key] = parse_free_text(values.get(key), label, size)
        except ValueError as error:
            errors[key] = str(error)
    return out, errors


def _raise_threshold(settings: Settings | None) -> Decimal:
    """The largest raise a person may make alone; without settings, none (every raise waits,
    as every debit does in ``allocations.debit_needs_approval``)."""
    return settings.points_desk_approval_batch_threshold if settings is not None else Decimal(0)


def raise_needs_approval(
    current: Decimal | None,
    new: Decimal,
    settings: Settings | None,
    *,
    approved: Decimal | None = Decimal(0),
) -> bool:
    """A budget raised more than the batch approval threshold above ``approved`` (the budget a
    second person last approved: ``approvals.approved_budget``; ``None``: they approved no
    limit) waits for a second person; a cut, or a raise within it, applies at once."""
    if current is None:
        return False  # no limit now: any budget is a cut
    if new <= current or approved is None:
        return False
    return new - approved > _raise_threshold(settings)


def _applied(own: Decimal | None, settings: Settings | None) -> Decimal | None:
    """The debit threshold that applies with a programme's own ``own`` (``None``: every debit
    waits, as without settings)."""
    return own if own is not None else debit_threshold(settings)


def debit_threshold_loosens(
    current: Decimal | None, new: Decimal | None, settings: Settings | None
) -> bool:
    """Whether setting a programme's own debit threshold from ``current`` to ``new`` (``None``:
    the global one) lets a larger debit go without a second person."""
    before, after = _applied(current, settings), _applied(new, settings)
    if after is None:
        return False  # every debit waits: nothing is looser
    return before is None or after > before


def operator_limit_loosens(current: Decimal | None, new: Decimal | None) -> bool:
    """Whether a monthly operator limit going from ``current`` to ``new`` (``None``: no limit)
    lets an operator credit more in a month without a second person."""
    if current is None:
        return False  # no limit now: any limit is tighter
    return new is None or new > current


def _threshold_words(own: Decimal | None, settings: Settings | None) -> str:
    if own is not None:
        return figure(own)
    overall = debit_threshold(settings)
    return "the global " + (figure(overall) if overall is not None else "one")


def _held_changes(
    ledger: Ledger,
    settings: Settings | None,
    current: Programme | None,
    code: str,
    changes: dict[str, Any],
) -> tuple[dict[str, Decimal | None], list[str]]:
    """Take the changes that loosen a money rule out of ``changes``: ``(held, why)``.
    ``current`` ``None``: a programme being created (its budget starts from 0, its threshold
    from the global one, no operator limit)."""
    held: dict[str, Decimal | None] = {}
    why: list[str] = []
    creating = current is None
    if "budget" in changes:
        new = changes["budget"]
        if creating:
            if new is None or new > _raise_threshold(settings):
                held["budget"] = changes.pop("budget")
                why.append(
                    f"give new programme {code} no budget limit"
                    if new is None
                    else f"give new programme {code} a budget of {figure(new)} points"
                )
                changes["budget"] = Decimal(0)  # it takes no credits until approved
        elif new is not None and new != current.budget:
            approved = approvals.approved_budget(ledger, code)
            if raise_needs_approval(current.budget, new, settings, approved=approved):
                held["budget"] = changes.pop("budget")
                shown = "no limit" if current.budget is None else figure(current.budget)
                why.append(f"raise {code} from {shown} to {figure(new)} points")
    if "debit_threshold" in changes:
        now = None if creating else current.debit_threshold
        new = changes["debit_threshold"]
        if new != now and debit_threshold_loosens(now, new, settings):
            held["debit_threshold"] = changes.pop("debit_threshold")
            if new is not None:
                why.append(
                    f"raise {code}'s debit approval limit from {_threshold_words(now, settings)} "
                    f"to {figure(new)} points"
                )
            else:
                why.append(
                    f"remove {code}'s own debit approval limit of "
                    f"{_threshold_words(now, settings)} points "
                    f"({_threshold_words(None, settings)} would apply)"
                )
    if "monthly_operator_limit" in changes and current is not None:
        now = current.monthly_operator_limit
        new = changes["monthly_operator_limit"]
        if now is not None and new != now and operator_limit_loosens(now, new):
            held["monthly_operator_limit"] = changes.pop("monthly_operator_limit")
            why.append(
                f"raise {code}'s monthly limit per operator from {figure(now)} to "
                f"{figure(new)} points"
                if new is not None
                else f"remove {code}'s monthly limit per operator of {figure(now)} points"
            )
    return held, why


def _ask(
    ledger: Ledger,
    code: str,
    held: dict[str, Decimal | None],
    why: list[str],
    *,
    actor: str,
    budget_now: Decimal | None,
) -> approvals.Approval | None:
    if not held:
        return None
    budget_after = held.get("budget", budget_now)
    return approvals.request_programme_change(
        ledger, code, held, maker=actor, why=why, budget_after=budget_after
    )


def create(
    ledger: Ledger, fields: dict[str, Any], *, actor: str, settings: Settings | None = None
) -> Saved:
    """Create a programme (``ProgrammeCodeTaken`` if its code is in use). A budget above the
    raise threshold, or none (no limit), and an own debit threshold above the global one, wait
    for a second person (module docstring): the programme is created with a budget of 0 and
    the global threshold until they approve. Without ``settings`` every budget and every own
    threshold waits."""
    fields = dict(fields)
    fields.setdefault("budget", None)
    code = str(fields.get("code") or "").strip().upper()
    held, why = _held_changes(ledger, settings, None, code, fields)
    programme = ledger.create_programme(actor=actor, **fields)
    request = _ask(ledger, programme.code, held, why, actor=actor, budget_now=programme.budget)
    return Saved(programme, request)


def save(
    ledger: Ledger, settings: Settings, code: str, fields: dict[str, Any], *, actor: str
) -> Saved:
    """Apply a programme's edited fields. A change that loosens a money rule (module docstring)
    is not applied: it is asked of a second person (``approvals.request_programme_change``, one
    request for all of them) and the other changes apply."""
    current = ledger.programme(code)
    if current is None:
        raise UnknownProgramme(f"There is no programme with code {code}.")
    changes = {k: v for k, v in fields.items() if k != "code"}
    if "budget" in changes and changes["budget"] is None and current.budget is not None:
        raise Conflict(
            f"{current.name} has a budget: enter the new budget (it cannot become unlimited)."
        )
    held, why = _held_changes(ledger, settings, current, current.code, changes)
    request = _ask(ledger, current.code, held, why, actor=actor, budget_now=current.budget)
    programme = ledger.update_programme(current.code, actor=actor, **changes)
    return Saved(programme, request)


def close(ledger: Ledger, code: str, *, actor: str) -> Programme:
    """Close a programme: it takes no new credits; its history and statement stay."""
    return ledger.close_programme(code, actor=actor)
