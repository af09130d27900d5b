"""The exchange inspector's use cases: a transaction's calls to EnKash, and the support bundle.

Every call made for a transaction (allocate, look-ups) is kept by the client's exchange hook
(``services/enkash.py`` -> ``Ledger.record_exchange``), redacted; a batch row's calls are kept in
the same transaction as the outcome they led to (``services/bulk.py``, ``_HeldExchanges``). The
support bundle is one JSON file to hand to EnKash support: the row, its audit trail, its reversal
links and every exchange, with the request and reply as JSON objects where they are JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.errors import NotFound
from services.redact import redact
from services.store import ExchangeRecord, Ledger


def for_transaction(ledger: Ledger, reference: str) -> list[ExchangeRecord]:
    """Every call to EnKash kept for ``reference``, oldest first."""
    return ledger.exchanges_for(reference)


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "value"):  # enums
        return value.value
    return value


def support_bundle(ledger: Ledger, reference: str) -> str:
    """One JSON document about ``reference`` for EnKash support (``NotFound`` if unknown)."""
    row = ledger.get(reference)
    if row is None:
        raise NotFound(f"There is no transaction {reference}.")
    bundle = {
        "reference": reference,
        "transaction": {key: _plain(value) for key, value in asdict(row).items()},
        "reverses": row.reverses,
        "reversed_by": [r.reference for r in ledger.reversed_by(reference)],
        "audit_trail": [
            {
                "at": event.at.isoformat(),
                "actor": event.actor,
                "kind": event.kind.value,
                "from": event.from_status.value if event.from_status else None,
                "to": event.to_status.value,
                "detail": event.detail,
            }
            for event in ledger.audit_trail(reference)
        ],
        "exchanges": [
            {
                "at": kept.at.isoformat(),
                "endpoint": kept.endpoint,
                "http_status": kept.http_status,
                "enkash_code": kept.enkash_code,
                "enkash_message": kept.enkash_message,
                "latency_ms": kept.latency_ms,
                "sent_encrypted": kept.encrypted,
                "error": kept.error,
                "request": _json_or_text(kept.request),
                "reply": _json_or_text(kept.reply),
            }
            for kept in ledger.exchanges_for(reference)
        ],
    }
    # Everything in it was redacted when stored; once more, whole, costs nothing.
    return redact(json.dumps(bundle, indent=2, ensure_ascii=False, default=str))
