"""The ``approvals`` table: maker-checker requests, one per debit reference or batch id.

Only the queries live here; who may decide what, and what a decision sends, is the use case in
``services/approvals.py``. Each request comes back as a plain mapping of its columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from services.models import ApprovalStatus
from services.store.engine import Database, to_cents
from services.store.schema import approvals


class ApprovalStore(Database):
    """Requests for a second person's decision; a decision is a compare-and-set on ``pending``."""

    def approval(self, approval_id: int) -> dict[str, Any] | None:
        """The request with this id, or ``None``."""
        with self.reading() as conn:
            found = conn.execute(sa.select(approvals).where(approvals.c.id == approval_id))
            m = found.mappings().one_or_none()
        return dict(m) if m is not None else None

    def approval_for(self, subject_kind: str, subject: str) -> dict[str, Any] | None:
        """The request about a debit reference (``"debit"``) or a batch id (``"batch"``)."""
        with self.reading() as conn:
            found = conn.execute(
                sa.select(approvals).where(
                    approvals.c.subject_kind == subject_kind, approvals.c.subject == subject
                )
            )
            m = found.mappings().one_or_none()
        return dict(m) if m is not None else None

    def pending_approvals(self) -> list[dict[str, Any]]:
        """Requests waiting for a decision, oldest first."""
        with self.reading() as conn:
            found = conn.execute(
                sa.select(approvals)
                .where(approvals.c.status == ApprovalStatus.PENDING.value)
                .order_by(approvals.c.requested_at, approvals.c.id)
            )
            return [dict(m) for m in found.mappings()]

    def pending_approval_count(self) -> int:
        """How many requests wait for a decision."""
        with self.reading() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        approvals.c.status == ApprovalStatus.PENDING.value
                    )
                ).scalar_one()
            )

    def decided_approvals(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest decisions, newest first."""
        with self.reading() as conn:
            found = conn.execute(
                sa.select(approvals)
                .where(approvals.c.status != ApprovalStatus.PENDING.value)
                .order_by(approvals.c.decided_at.desc(), approvals.c.id.desc())
                .limit(limit)
            )
            return [dict(m) for m in found.mappings()]

    def request_approval(
        self, subject_kind: str, subject: str, amount: Decimal, maker: str, request: str
    ) -> bool:
        """Insert a pending request; ``False`` (nothing written) if the subject already has one."""
        try:
            with self.writing() as conn:
                conn.execute(
                    approvals.insert().values(
                        subject_kind=subject_kind,
                        subject=subject,
                        amount_cents=to_cents(amount),
                        maker=maker,
                        requested_at=datetime.now(UTC),
                        status=ApprovalStatus.PENDING.value,
                        comment="",
                        request=request,
                    )
                )
        except IntegrityError:
            return False  # a double click or a rerun: the first request stands
        return True

    def decide_approval(
        self,
        approval_id: int,
        status: ApprovalStatus,
        *,
        decider: str,
        comment: str,
        not_makers: Sequence[str] | None = None,
    ) -> bool:
        """Decide a pending request; ``False`` if it was no longer pending (someone decided
        first) or its maker is one of ``not_makers`` (compared in lower case)."""
        with self.writing() as conn:
            changed = conn.execute(
                approvals.update()
                .where(
                    approvals.c.id == approval_id,
                    approvals.c.status == ApprovalStatus.PENDING.value,
                    sa.true()
                    if not_makers is None
                    else sa.func.lower(approvals.c.maker).not_in(list(not_makers)),
                )
                .values(
                    status=ApprovalStatus(status).value,
                    decided_by=decider,
                    decided_at=datetime.now(UTC),
                    comment=comment,
                )
            )
        return changed.rowcount == 1

    def withdraw_approval(
        self, subject_kind: str, subject: str, *, actor: str, comment: str
    ) -> bool:
        """Close a pending request as rejected (its subject went away); ``False`` if none."""
        with self.writing() as conn:
            changed = conn.execute(
                approvals.update()
                .where(
                    approvals.c.subject_kind == subject_kind,
                    approvals.c.subject == subject,
                    approvals.c.status == ApprovalStatus.PENDING.value,
                )
                .values(
                    status=ApprovalStatus.REJECTED.value,
                    decided_by=actor,
                    decided_at=datetime.now(UTC),
                    comment=comment,
                )
            )
        return changed.rowcount == 1
