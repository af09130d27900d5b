"""Scheduled and recurring allocations (issue 15).

The contract the runway and the alerts read; the schedule store and the worker's sending of due
occurrences fill it in.
"""

from __future__ import annotations

from datetime import datetime

from services.models import FailedRun, UpcomingRun
from services.store import Ledger


def upcoming_runs(ledger: Ledger, *, now: datetime, until: datetime) -> list[UpcomingRun]:
    """Every occurrence of an active, approved schedule due after ``now`` and up to ``until``,
    earliest first."""
    return []


def failed_runs(ledger: Ledger, *, since: datetime) -> list[FailedRun]:
    """Occurrences that ran since ``since`` and left failed rows, newest first."""
    return []
