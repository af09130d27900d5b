"""The worker registry: every process that sends registers, beats while alive and leaves.

A ``SENDING`` row whose ``claimed_by`` names a worker with a stale heartbeat (or none) was left
mid-call by a process that died; only such rows are recovered (``recover_interrupted``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from services.models import Status
from services.store.engine import Database
from services.store.schema import transactions, workers
from services.store.transactions import WORKER_STALE_AFTER


class WorkerStore(Database):
    """Rows of ``workers``: who is alive, and which worker owns a row in flight."""

    def register_worker(self, worker_id: str, *, host: str, pid: int) -> None:
        """Record this process as a live worker; rows it moves to SENDING carry ``worker_id``."""
        now = datetime.now(UTC)
        with self.writing() as conn:
            conn.execute(workers.delete().where(workers.c.id == worker_id))
            conn.execute(
                workers.insert().values(
                    id=worker_id, host=host[:255], pid=pid, started_at=now, heartbeat_at=now
                )
            )
        self.worker_id = worker_id

    def worker_heartbeat(self, worker_id: str, *, host: str, pid: int) -> None:
        """Say the worker is alive (registering it again if a peer removed it as dead)."""
        now = datetime.now(UTC)
        with self.writing() as conn:
            changed = conn.execute(
                workers.update().where(workers.c.id == worker_id).values(heartbeat_at=now)
            )
            if changed.rowcount == 0:
                conn.execute(
                    workers.insert().values(
                        id=worker_id, host=host[:255], pid=pid, started_at=now, heartbeat_at=now
                    )
                )

    def deregister_worker(self, worker_id: str) -> None:
        """A clean stop: the worker is gone (anything it still had in flight is then settled)."""
        with self.writing() as conn:
            conn.execute(workers.delete().where(workers.c.id == worker_id))

    def forget_dead_workers(self, older_than: timedelta) -> int:
        """Remove workers silent for longer than ``older_than`` that own no SENDING row."""
        t = transactions
        owning = sa.select(t.c.claimed_by).where(
            t.c.status == Status.SENDING.value, t.c.claimed_by.is_not(None)
        )
        with self.writing() as conn:
            return conn.execute(
                workers.delete().where(
                    workers.c.heartbeat_at < datetime.now(UTC) - older_than,
                    workers.c.id.not_in(owning),
                )
            ).rowcount

    def live_workers(self, stale_after: timedelta = WORKER_STALE_AFTER) -> list[dict[str, Any]]:
        """Workers whose heartbeat is fresh: id, host, pid, started_at, heartbeat_at."""
        query = (
            sa.select(workers)
            .where(workers.c.heartbeat_at >= datetime.now(UTC) - stale_after)
            .order_by(workers.c.started_at)
        )
        with self.reading() as conn:
            return [dict(m) for m in conn.execute(query).mappings()]

    def claimed_by(self, reference: str) -> str | None:
        """The worker that last moved this row to SENDING (``None`` if none recorded)."""
        with self.reading() as conn:
            return conn.execute(
                sa.select(transactions.c.claimed_by).where(transactions.c.reference == reference)
            ).scalar_one_or_none()
