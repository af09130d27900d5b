"""Programme use cases for the Programmes page: read a form, create, change (a large budget raise
waits for a second person), close.

The store (``services/store/programmes.py``) keeps the rows, the counters and the audit; this
module holds the rules about what a person may change directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from services import approvals
from services.config import Settings
from services.errors import Conflict
from services.models import parse_free_text, parse_points
from services.store import Ledger, Programme, UnknownProgramme

_CODE = re.compile(r"[A-Z0-9][A-Z0-9_\-]{0,15}")
#: The largest budget, limit or threshold a form accepts (points).
MAX_BUDGET = Decimal("100000000000")


@dataclass(frozen=True)
class Saved:
    """What a save did: the programme as it now is, and the budget raise left waiting (if any)."""

    programme: Programme
    raise_request: approvals.Approval | None = None


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


def raise_needs_approval(current: Decimal | None, new: Decimal, settings: Settings) -> bool:
    """A budget raised by more than the batch approval threshold waits
    for a second person; a cut, or a smaller raise, applies at once."""
    if current is None:
        return False  # no limit now: any budget is a cut
    return new - current > settings.points_desk_approval_batch_threshold


def create(ledger: Ledger, fields: dict[str, Any], *, actor: str) -> Programme:
    """Create a programme (``ProgrammeCodeTaken`` if its code is in use)."""
    return ledger.create_programme(actor=actor, **fields)


def save(
    ledger: Ledger, settings: Settings, code: str, fields: dict[str, Any], *, actor: str
) -> Saved:
    """Apply a programme's edited fields. A budget raise above the approval threshold is not
    applied: it is asked of a second person (``approvals.request_budget_raise``) and the other
    changes apply."""
    current = ledger.programme(code)
    if current is None:
        raise UnknownProgramme(f"There is no programme with code {code}.")
    changes = {k: v for k, v in fields.items() if k != "code"}
    request = None
    if "budget" in changes and changes["budget"] != current.budget:
        if changes["budget"] is None:
            raise Conflict(
                f"{current.name} has a budget: enter the new budget (it cannot become unlimited)."
            )
        if raise_needs_approval(current.budget, changes["budget"], settings):
            wanted = changes.pop("budget")
            request = approvals.request_budget_raise(
                ledger, current.code, wanted, maker=actor, current=current.budget
            )
    programme = ledger.update_programme(current.code, actor=actor, **changes)
    return Saved(programme, request)


def close(ledger: Ledger, code: str, *, actor: str) -> Programme:
    """Close a programme: it takes no new credits; its history and statement stay."""
    return ledger.close_programme(code, actor=actor)
