"""Local sign-in attempts: the durable record behind the lockout (``services/auth.py``).

Never a password; the caller stores an unknown username as a keyed hash of it.

An attempt is reserved before its password is checked (``reserve_sign_in``), in one transaction
that is the only one deciding about its username until it commits, so guesses sent all at once
get no more passwords checked than the lockout allows, across threads and processes.
"""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

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

    def sign_in_locked_until(
        self, username: str, now: datetime, *, attempts: int, lockout: timedelta
    ) -> datetime | None:
        """When the account unlocks, if a lockout is in force at ``now``."""
        with self.reading() as conn:
            return _locked_until(conn, username, now, attempts, lockout)

    def reserve_sign_in(
        self, username: str, now: datetime, *, attempts: int, lockout: timedelta
    ) -> tuple[int | None, datetime | None]:
        """Count one attempt before its password is checked: ``(row id, None)`` for an attempt
        that may be checked (kept as ``bad`` until ``mark_sign_in_ok``), ``(None, until)`` when
        the account is locked (kept as ``locked``)."""
        with self.writing() as conn:
            self._serialise_sign_in(conn, username)
            until = _locked_until(conn, username, now, attempts, lockout)
            outcome = "locked" if until is not None else "bad"
            inserted = conn.execute(
                sign_in_attempts.insert().values(username=username, at=now, outcome=outcome)
            )
            if until is not None:
                return None, until
            return int(inserted.inserted_primary_key[0]), None

    def mark_sign_in_ok(self, attempt: int) -> None:
        """The reserved attempt ``attempt`` had the right password."""
        with self.writing() as conn:
            conn.execute(
                sign_in_attempts.update()
                .where(sign_in_attempts.c.id == attempt)
                .values(outcome="ok")
            )

    def _serialise_sign_in(self, conn: Connection, username: str) -> None:
        """Make this transaction the only one deciding about ``username`` until it commits.

        SQLite: ``writing()`` already holds the database's write lock (``BEGIN IMMEDIATE``) and
        this process's write lock. PostgreSQL: a transaction-scoped advisory lock on (this
        ledger's schema, the username), taken before the count is read, so a second transaction
        reads the count only after the first one's attempt is committed.
        """
        if conn.dialect.name != "postgresql":
            return
        space = _int32(f"points-desk-sign-in:{self.schema or ''}")
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:space, :key)"),
            {"space": space, "key": _int32(username)},
        )


def _locked_until(
    conn: Connection, username: str, now: datetime, attempts: int, lockout: timedelta
) -> datetime | None:
    """The lockout in force at ``now``, read on ``conn``.

    The wrong passwords since the last right one run in groups of ``attempts``: each full group
    started a lockout at its last attempt. While an account is locked no wrong password is
    recorded (attempts are refused unchecked, as ``locked``), so the group in progress is the
    count modulo ``attempts``, whatever the spacing; two numbers, not the whole history.
    """
    t = sign_in_attempts
    last_ok = (
        sa.select(sa.func.max(t.c.id))
        .where(t.c.username == username, t.c.outcome == "ok")
        .scalar_subquery()
    )
    wrong, latest = conn.execute(
        sa.select(sa.func.count(), sa.func.max(t.c.at)).where(
            t.c.username == username,
            t.c.outcome == "bad",
            t.c.id > sa.func.coalesce(last_ok, 0),
        )
    ).one()
    if not wrong or wrong % attempts:
        return None
    until = latest + lockout
    return until if until > now else None


def _int32(text: str) -> int:
    """A signed 32-bit number for ``text`` (a PostgreSQL advisory lock key)."""
    value = zlib.crc32(text.encode("utf-8"))
    return value - (1 << 32) if value >= 1 << 31 else value
