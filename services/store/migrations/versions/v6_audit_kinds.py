"""Typed audit events: ``audit_events.event`` holds what an event records (``AuditKind``).

Code used to infer "proved absent", "held for approval" and the like from the text of
``detail``; now every writer stores the kind and the text is for people only. Existing events get
their kind from their statuses and the words their writers used (best effort, in this order):

* no from-status -> ``INTENT``; a move to ``SENDING`` -> ``CLAIM``
* ``SENDING -> UNKNOWN`` saying "interrupted" (a restart found it in flight) -> ``RECOVERED``
* ``QUEUED -> FAILED``: "rejected by ..." -> ``REJECTED``, else ``CANCELLED``
* any other move -> ``OUTCOME``
* an event that moves nothing: "lookup: proved absent" -> ``LOOKUP_ABSENT``, "lookup: EnKash
  reports status" -> ``LOOKUP_UNREADABLE``, "held for approval" -> ``APPROVAL_REQUESTED``,
  "approved by" -> ``APPROVED``, anything else -> ``NOTE``

The detail text is kept unchanged.

Revision ID: v6
Revises: v5
"""

import sqlalchemy as sa
from alembic import op

revision = "v6"
down_revision = "v5"
branch_labels = None
depends_on = None

_KINDS = """
UPDATE audit_events SET event = CASE
    WHEN from_status IS NULL THEN 'INTENT'
    WHEN from_status <> to_status AND to_status = 'SENDING' THEN 'CLAIM'
    WHEN from_status = 'SENDING' AND to_status = 'UNKNOWN' AND detail LIKE 'interrupted%'
         THEN 'RECOVERED'
    WHEN from_status = 'QUEUED' AND to_status = 'FAILED' AND lower(detail) LIKE 'rejected by%'
         THEN 'REJECTED'
    WHEN from_status = 'QUEUED' AND to_status = 'FAILED' THEN 'CANCELLED'
    WHEN from_status <> to_status THEN 'OUTCOME'
    WHEN detail LIKE 'lookup: proved absent%' THEN 'LOOKUP_ABSENT'
    WHEN detail LIKE 'lookup: EnKash reports status%' THEN 'LOOKUP_UNREADABLE'
    WHEN detail LIKE 'held for approval%' THEN 'APPROVAL_REQUESTED'
    WHEN detail LIKE 'approved by%' THEN 'APPROVED'
    ELSE 'NOTE'
END
"""


def upgrade() -> None:
    op.add_column(
        "audit_events",
        sa.Column("event", sa.String(24), nullable=False, server_default="NOTE"),
    )
    op.execute(_KINDS)
