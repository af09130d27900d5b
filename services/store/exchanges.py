"""The ``exchanges`` table: every call to EnKash made for a transaction, kept with its reference.

What is stored was redacted by the client before it got here (``services/enkash.py``); the store
redacts once more, so no path writes a configured secret or a credential-shaped value. Pruning
deletes exchanges only: a ledger row and its audit trail are never touched by it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.redact import redact
from services.store.engine import Database
from services.store.schema import exchanges


@dataclass(frozen=True)
class ExchangeRecord:
    """One call to EnKash for one transaction, as the inspector shows it."""

    id: int
    reference: str
    at: datetime
    endpoint: str
    request: str  # JSON as sent, before encryption; redacted
    reply: str  # the reply as read (decrypted when it came encrypted); redacted
    http_status: int | None
    enkash_code: str | None
    enkash_message: str | None
    latency_ms: int | None
    encrypted: bool  # the request went out in the AES envelope
    error: str  # no reply: why (a timeout, a refused connection)


def _record(m: Any) -> ExchangeRecord:
    return ExchangeRecord(
        id=m["id"],
        reference=m["reference"],
        at=m["at"],
        endpoint=m["endpoint"],
        request=m["request"] or "",
        reply=m["reply"] or "",
        http_status=m["http_status"],
        enkash_code=m["enkash_code"],
        enkash_message=m["enkash_message"],
        latency_ms=m["latency_ms"],
        encrypted=bool(m["encrypted"]),
        error=m["error"] or "",
    )


def _clip(text: str | None, limit: int) -> str:
    text = redact(text or "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: Longest request or reply kept: a reply is a few hundred bytes; a huge one is kept in part.
MAX_BODY = 64_000


def exchange_values(
    *,
    reference: str,
    at: datetime,
    endpoint: str,
    request: str,
    reply: str,
    http_status: int | None,
    enkash_code: str | None,
    enkash_message: str | None,
    latency_ms: int | None,
    encrypted: bool,
    error: str = "",
) -> dict[str, Any]:
    """The ``exchanges`` row of one call, every text redacted again and clipped to fit."""
    return {
        "reference": reference[:64],
        "at": at,
        "endpoint": endpoint[:255],
        "request": _clip(request, MAX_BODY),
        "reply": _clip(reply, MAX_BODY),
        "http_status": http_status,
        "enkash_code": _clip(enkash_code, 200) if enkash_code is not None else None,
        "enkash_message": _clip(enkash_message, 1000) if enkash_message is not None else None,
        "latency_ms": latency_ms,
        "encrypted": encrypted,
        "error": _clip(error, 1000),
    }


def insert_exchanges(conn: Connection, kept: Sequence[Mapping[str, Any]]) -> None:
    """Keep these exchanges (``exchange_values`` fields) inside the caller's write transaction:
    a batch row's calls commit with its outcome (``TransactionStore.transition_many``)."""
    if kept:
        conn.execute(_INSERT, [exchange_values(**fields) for fields in kept])


_INSERT = exchanges.insert()  # built once: executed with parameters, compiled once


class ExchangeStore(Database):
    """Writes and reads of ``exchanges``; nothing here reads or writes ``transactions``."""

    def record_exchange(self, **fields: Any) -> None:
        """Keep one exchange (``exchange_values`` fields; every text redacted again here)."""
        with self.writing() as conn:
            insert_exchanges(conn, [fields])

    def exchanges_for(self, reference: str) -> list[ExchangeRecord]:
        """Every exchange kept for a reference, oldest first."""
        with self.reading() as conn:
            found = conn.execute(
                sa.select(exchanges)
                .where(exchanges.c.reference == reference)
                .order_by(exchanges.c.at, exchanges.c.id)
            )
            return [_record(m) for m in found.mappings()]

    def prune_exchanges(self, before: datetime) -> int:
        """Delete exchanges older than ``before``; how many went. Ledger rows are not touched."""
        with self.writing() as conn:
            return conn.execute(exchanges.delete().where(exchanges.c.at < before)).rowcount
