"""Alert states: which alerts are active, which episode of each, and what was delivered.

One row per alert key (``pool_low``, ``runway:14d``, ``run_wont_fit:<schedule>:<due>``, ...).
An alert that becomes active starts an *episode*; it is delivered once per episode on each
channel (``webhook``, ``email``); when it clears the row is marked cleared, and when it returns
the episode number goes up and both channels are due again. What was delivered is kept here, so a
restarted worker does not send a delivered alert again, and a channel that failed is retried on a
later pass once its ``next_at`` has come.

Several workers may evaluate and deliver at once (PostgreSQL): a worker delivers an alert only
after taking its lease (``claim_alert``, one compare-and-set UPDATE), so no two send it together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from services.models import Status
from services.store.engine import Database, UTCDateTime
from services.store.schema import metadata, transactions

CHANNELS = ("webhook", "email")

alert_states = sa.Table(
    "alert_states",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(24), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("episode", sa.Integer, nullable=False),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),  # of this episode
    sa.Column("last_seen_at", UTCDateTime, nullable=False),
    sa.Column("cleared_at", UTCDateTime),
    sa.Column("lease_until", UTCDateTime),  # a worker is delivering it until then
    sa.Column("webhook_sent_at", UTCDateTime),
    sa.Column("webhook_attempts", sa.Integer, nullable=False),
    sa.Column("webhook_next_at", UTCDateTime),
    sa.Column("webhook_error", sa.Text, nullable=False),
    sa.Column("email_sent_at", UTCDateTime),
    sa.Column("email_attempts", sa.Integer, nullable=False),
    sa.Column("email_next_at", UTCDateTime),
    sa.Column("email_error", sa.Text, nullable=False),
    sa.Index("ix_alert_states_active", "active"),
)


@dataclass(frozen=True)
class Delivery:
    """One channel's delivery of the current episode."""

    sent_at: datetime | None
    attempts: int
    next_at: datetime | None
    error: str


@dataclass(frozen=True)
class AlertState:
    key: str
    kind: str
    title: str
    detail: str
    active: bool
    episode: int
    first_seen_at: datetime
    last_seen_at: datetime
    cleared_at: datetime | None
    webhook: Delivery
    email: Delivery

    def delivery(self, channel: str) -> Delivery:
        return getattr(self, channel)


def _fresh_channels() -> dict[str, object]:
    values: dict[str, object] = {}
    for channel in CHANNELS:
        values.update(
            {
                f"{channel}_sent_at": None,
                f"{channel}_attempts": 0,
                f"{channel}_next_at": None,
                f"{channel}_error": "",
            }
        )
    return values


def _state(m: sa.RowMapping) -> AlertState:
    def channel(name: str) -> Delivery:
        return Delivery(
            m[f"{name}_sent_at"], m[f"{name}_attempts"], m[f"{name}_next_at"], m[f"{name}_error"]
        )

    return AlertState(
        key=m["key"],
        kind=m["kind"],
        title=m["title"],
        detail=m["detail"],
        active=bool(m["active"]),
        episode=m["episode"],
        first_seen_at=m["first_seen_at"],
        last_seen_at=m["last_seen_at"],
        cleared_at=m["cleared_at"],
        webhook=channel("webhook"),
        email=channel("email"),
    )


class AlertStore(Database):
    """Rows of ``alert_states`` (services/alerts.py decides what is active and delivers)."""

    def sync_alerts(
        self,
        active: Iterable[tuple[str, str, str, str]],
        *,
        evaluated_kinds: Iterable[str],
        now: datetime,
    ) -> None:
        """Record what is active now: ``(key, kind, title, detail)`` for each active alert.

        A new key starts episode 1; a cleared key that is active again starts the next episode
        with nothing delivered; an active key keeps its episode (its words may change). An active
        key of a kind in ``evaluated_kinds`` that is not in ``active`` is cleared (kinds that could
        not be evaluated this time, say the pool when EnKash did not answer, stay as they were).
        """
        found = {key: (kind, title, detail) for key, kind, title, detail in active}
        kinds = list(evaluated_kinds)
        t = alert_states
        with self.writing() as conn:
            insert = (
                pg_dialect.insert if conn.dialect.name == "postgresql" else sqlite_dialect.insert
            )
            for key in sorted(found):
                kind, title, detail = found[key]
                conn.execute(
                    insert(t)
                    .values(
                        key=key,
                        kind=kind,
                        title=title,
                        detail=detail,
                        active=True,
                        episode=1,
                        first_seen_at=now,
                        last_seen_at=now,
                        **_fresh_channels(),
                    )
                    .on_conflict_do_nothing(index_elements=["key"])
                )
                # Back after clearing: a new episode, due on every channel again.
                conn.execute(
                    t.update()
                    .where(t.c.key == key, t.c.active.is_(False))
                    .values(
                        active=True,
                        episode=t.c.episode + 1,
                        first_seen_at=now,
                        cleared_at=None,
                        lease_until=None,
                        **_fresh_channels(),
                    )
                )
                conn.execute(
                    t.update()
                    .where(t.c.key == key)
                    .values(title=title, detail=detail, last_seen_at=now)
                )
            if kinds:
                conn.execute(
                    t.update()
                    .where(
                        t.c.active.is_(True),
                        t.c.kind.in_(kinds),
                        t.c.key.not_in(list(found)) if found else sa.true(),
                    )
                    .values(active=False, cleared_at=now, lease_until=None)
                )

    def alert_states(self, *, active_only: bool = False) -> list[AlertState]:
        """Every alert state (or only the active ones), the newest episode first."""
        query = sa.select(alert_states).order_by(
            alert_states.c.first_seen_at.desc(), alert_states.c.key
        )
        if active_only:
            query = query.where(alert_states.c.active.is_(True))
        with self.reading() as conn:
            return [_state(m) for m in conn.execute(query).mappings()]

    def claim_alert(self, key: str, episode: int, *, now: datetime, lease: timedelta) -> bool:
        """Take the right to deliver ``key``'s ``episode`` until ``now + lease``; ``False`` when
        another worker holds it, or the episode is over. One UPDATE: of racing callers one wins."""
        t = alert_states
        with self.writing() as conn:
            changed = conn.execute(
                t.update()
                .where(
                    t.c.key == key,
                    t.c.episode == episode,
                    t.c.active.is_(True),
                    sa.or_(t.c.lease_until.is_(None), t.c.lease_until < now),
                )
                .values(lease_until=now + lease)
            )
            return changed.rowcount == 1

    def record_alert_delivery(
        self,
        key: str,
        episode: int,
        channel: str,
        *,
        sent_at: datetime | None,
        attempts: int,
        next_at: datetime | None,
        error: str,
    ) -> None:
        """What one channel's delivery of ``episode`` came to (``sent_at`` None: not delivered,
        try again from ``next_at``)."""
        if channel not in CHANNELS:
            raise ValueError(f"unknown alert channel {channel!r}")
        t = alert_states
        with self.writing() as conn:
            conn.execute(
                t.update()
                .where(t.c.key == key, t.c.episode == episode)
                .values(
                    {
                        f"{channel}_sent_at": sent_at,
                        f"{channel}_attempts": attempts,
                        f"{channel}_next_at": next_at,
                        f"{channel}_error": error[:500],
                    }
                )
            )

    def release_alert(self, key: str, episode: int) -> None:
        """Give the delivery lease back (the pass is over)."""
        t = alert_states
        with self.writing() as conn:
            conn.execute(
                t.update().where(t.c.key == key, t.c.episode == episode).values(lease_until=None)
            )

    def unknown_since(self, before: datetime) -> tuple[int, datetime | None]:
        """How many rows are UNKNOWN and were last changed before ``before``, and the oldest
        such change (``None`` when there is none)."""
        t = transactions
        query = sa.select(sa.func.count(), sa.func.min(t.c.updated_at)).where(
            t.c.status == Status.UNKNOWN.value, t.c.updated_at < before
        )
        with self.reading() as conn:
            n, oldest = conn.execute(query).one()
        if oldest is not None and not isinstance(oldest, datetime):
            oldest = datetime.fromisoformat(str(oldest))
        return int(n), UTCDateTime().process_result_value(oldest, self.engine.dialect)
