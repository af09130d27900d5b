"""Local sign-in attempts: the durable record behind the lockout (``services/auth.py``).

Never a password; the caller stores an unknown username as a keyed hash of it.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from services.store.engine import Database
from services.store.schema import sign_in_attempts


class SignInStore(Database):
    """Rows of ``sign_in_attempts``."""

    def record_sign_in(self, username: str, outcome: str, at: datetime) -> None:
        """Keep one attempt: ``ok``, ``bad`` or ``locked``."""
        with self.writing() as conn:
            conn.execute(
                sign_in_attempts.insert().values(username=username, at=at, outcome=outcome)
            )

    def recent_sign_ins(
        self, username: str, *, since: datetime, outcomes: tuple[str, ...], limit: int
    ) -> list[tuple[str, datetime]]:
        """The user's latest attempts since ``since`` with one of ``outcomes``, newest first."""
        t = sign_in_attempts
        with self.reading() as conn:
            found = conn.execute(
                sa.select(t.c.outcome, t.c.at)
                .where(t.c.username == username, t.c.at >= since, t.c.outcome.in_(outcomes))
                .order_by(t.c.at.desc(), t.c.id.desc())
                .limit(limit)
            ).all()
        return [(outcome, at) for outcome, at in found]
