"""The sandbox's state: cards, the company pool, committed transactions, stored replies, logins.

One sqlite3 connection (stdlib) guarded by one lock; ``path=None`` keeps everything in memory, a
file path uses WAL and survives restarts (cards, balances, pool, transactions, stored replies and
the login lockout). Access tokens live only in memory: a restart forces a new login.

Amounts are integer hundredths in the database and ``Decimal`` with two places outside it.

**Assumed** (not documented by EnKash, chosen for the sandbox):

- A reused ``uniqueReferenceNumber`` with the same allocation fields (compared in a canonical form)
  returns the original stored outcome, success or refusal, and commits nothing; with different
  fields it is refused (HTTP 200, ``response_code: 1``, "Duplicate uniqueReferenceNumber").
  Only outcomes decided by business rules are stored (success, the ``response_code: 1`` refusals,
  the 422 KYC refusal); a request rejected as malformed (400) stores nothing, so it can be
  corrected and sent again with the same reference.
- An existing card is found by ``enkashCardId``, else by email (case-insensitive), else by mobile.
  Email and mobile matching two different cards is refused ("Email and mobile belong to different
  cards"). A card id that does not exist is refused with "Card not found" (HTTP 200).
- A debit returns the points to the company pool.
- An email containing ``kyc-pending`` is a demo hook: such a card is "KYC under review" (HTTP 422).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import string
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

CENT = Decimal("0.01")
LOCK_AFTER_FAILURES = 3
_TOKEN_REQUEST_KINDS = (
    "password",
    "password_refused",
    "refresh_token",
    "refresh_token_refused",
    "other",
    "other_refused",
)
KYC_PENDING_MARK = "kyc-pending"
NEW_CARD_FIELDS = ("email", "mobile", "title", "firstName", "gender")

_ALNUM = string.ascii_uppercase + string.digits

CARD_STATUS = {"name": "UL", "label": "UnLocked"}
KYC_VERIFIED = {"name": "VERIFIED", "label": "Verified"}
BIN_TYPE = {"name": "REWARD", "label": "Reward"}


@dataclass(frozen=True)
class SandboxIdentity:
    """The onboarding identifiers and credentials the sandbox accepts."""

    partner_id: str = "CRMXWB3ZM"
    company_id: str = "CEK1PU9AOO"
    card_account_id: str = "CAQL8YCV3"
    client_id: str = "points-desk-sandbox"
    client_secret: str = "sandbox-client-secret"  # noqa: S105 (public sandbox default)
    username: str = "9600098867"
    password: str = "sandbox-password"  # noqa: S105 (public sandbox default)
    company_name: str = "Sandbox Company Pvt Ltd"
    opening_pool: Decimal = Decimal("10000000.00")

    def __repr__(self) -> str:  # keep the secret and password out of logs and tracebacks
        return (
            f"SandboxIdentity(partner_id={self.partner_id!r}, company_id={self.company_id!r}, "
            f"card_account_id={self.card_account_id!r}, client_id={self.client_id!r})"
        )


@dataclass(frozen=True)
class AllocationRequest:
    """One validated allocate call (validation of the wire format happens in ``app.py``)."""

    reference: str
    transaction_type: str  # "CR" or "DR"
    amount: Decimal
    card_id: str | None = None
    email: str | None = None
    mobile: str | None = None
    title: str | None = None
    first_name: str | None = None
    gender: str | None = None
    canonical: str = ""  # canonical form of the allocation fields, compared on a reused reference


@dataclass(frozen=True)
class Outcome:
    """What an allocate call decided: a success payload or a refusal message, with its status."""

    http_status: int
    ok: bool
    payload: dict[str, Any] | None = None
    message: str | None = None
    replayed: bool = False

    def to_json(self) -> str:
        return to_json(
            {
                "http_status": self.http_status,
                "ok": self.ok,
                "payload": self.payload,
                "message": self.message,
            }
        )

    @classmethod
    def from_json(cls, text: str, *, replayed: bool) -> Outcome:
        data = json.loads(text, parse_float=Decimal)
        return cls(data["http_status"], data["ok"], data["payload"], data["message"], replayed)


class NeedsFields(Exception):
    """A credit for a new card lacks some of the fields a new card needs (HTTP 400, not stored)."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__("Missing fields for a new card: " + ", ".join(missing))
        self.missing = missing


def to_json(value: Any) -> str:
    """JSON text in which every ``Decimal`` is a number with exactly two decimals.

    The standard encoder writes the text (a whole account's card listing, 20,000 cards, is
    encoded in C, not value by value): it hands each amount to ``default``, which gives it back
    as a string holding a marker, and the markers' quotes are then taken off. When the text holds
    more markers than there were amounts, an incoming string held one, and the value is written
    value by value instead."""
    amounts = 0

    def amount(item: Any) -> str:
        nonlocal amounts
        if not isinstance(item, Decimal):
            raise TypeError(f"{type(item).__name__} is not JSON")
        if not item.is_finite():
            raise ValueError("not a finite amount")
        amounts += 1
        return _MARKER + format(item.quantize(CENT), "f")

    try:
        text = json.dumps(value, default=amount, separators=(",", ":"))
    except TypeError:  # a key the encoder does not take (the slow way writes str(key))
        return _to_json_slowly(value)
    if text.count(_MARKER_JSON) != amounts:
        return _to_json_slowly(value)
    return _MARKED.sub(r"\1", text)


_MARKER = "\x00amount:"
_MARKER_JSON = json.dumps(_MARKER)[1:-1]  # how json.dumps writes it: \u0000amount:
_MARKED = re.compile('"' + re.escape(_MARKER_JSON) + r'(-?[0-9]+\.[0-9]{2})"')


def _to_json_slowly(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("not a finite amount")
        return format(value.quantize(CENT), "f")
    if isinstance(value, dict):
        items = (json.dumps(str(k)) + ":" + _to_json_slowly(v) for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_to_json_slowly(v) for v in value) + "]"
    return json.dumps(value)


def cents_to_amount(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(CENT)


def amount_to_cents(amount: Decimal) -> int:
    return int(amount.quantize(CENT) * 100)


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_utc(moment: datetime) -> str:
    """The one timestamp format stored and served: ``2025-01-31T09:30:00.123Z`` (sorts as text)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _random_id(prefix: str, length: int, alphabet: str = _ALNUM) -> str:
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cards (
    card_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    email_lc TEXT NOT NULL UNIQUE,
    mobile TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    first_name TEXT NOT NULL,
    gender TEXT NOT NULL,
    balance_cents INTEGER NOT NULL CHECK (balance_cents >= 0),
    virtual_account TEXT NOT NULL,
    masked_number TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    txn_id TEXT NOT NULL UNIQUE,
    reference TEXT NOT NULL UNIQUE,
    card_id TEXT NOT NULL REFERENCES cards (card_id),
    txn_type TEXT NOT NULL CHECK (txn_type IN ('CR', 'DR')),
    amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
    balance_after_cents INTEGER NOT NULL CHECK (balance_after_cents >= 0),
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replies (
    reference TEXT PRIMARY KEY,
    canonical TEXT NOT NULL,
    outcome TEXT NOT NULL,
    created TEXT NOT NULL
);
"""

_TXN_COLUMNS = (
    "t.txn_id, t.reference, t.card_id, t.txn_type, t.amount_cents, t.balance_after_cents, "
    "t.created, c.email, c.mobile, c.first_name"
)


class SandboxStore:
    """Thread-safe sqlite3 state of one sandbox EnKash partner account."""

    def __init__(self, path: str | os.PathLike[str] | None, identity: SandboxIdentity) -> None:
        self.identity = identity
        self._lock = threading.RLock()
        target = ":memory:" if path is None else os.fspath(path)
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA foreign_keys = ON")
        if path is not None:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.executescript(_SCHEMA)  # outside a transaction: executescript commits first
        with self._lock, self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('pool_cents', ?)",
                (str(amount_to_cents(identity.opening_pool)),),
            )
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('failed_logins', '0')")
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('locked', '0')")
        self._allocate_requests = 0
        self._allocate_window: list[float] = []  # [first call's arrival, last call's reply]
        self._token_requests: Counter[str] = Counter()
        self._access_tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._refresh_tokens: dict[str, float] = {}

    # -- plumbing -------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One sqlite transaction; the caller holds the lock. Rolls back on any exception."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta_int(self, key: str) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("UPDATE meta SET value = ? WHERE key = ?", (str(value), key))

    def close(self) -> None:
        """Close the database connection (the store is unusable afterwards)."""
        with self._lock:
            self._db.close()

    def reset(self) -> None:
        """Wipe cards, transactions, stored replies, lockout and tokens; refill the pool."""
        with self._lock:
            with self._transaction() as db:
                db.execute("DELETE FROM replies")
                db.execute("DELETE FROM transactions")
                db.execute("DELETE FROM cards")
                self._set_meta("pool_cents", amount_to_cents(self.identity.opening_pool))
                self._set_meta("failed_logins", 0)
                self._set_meta("locked", 0)
            self._allocate_requests = 0
            self._allocate_window = []
            self._token_requests.clear()
            self._access_tokens.clear()
            self._refresh_tokens.clear()

    def set_pool_balance(self, amount: Decimal) -> None:
        """Set the company pool (tests and demos: an almost empty pool, a pool top-up)."""
        with self._lock, self._transaction():
            self._set_meta("pool_cents", amount_to_cents(amount))

    # -- read side --------------------------------------------------------------------------------

    def pool_balance(self) -> Decimal:
        """Points left in the company pool (the card account)."""
        with self._lock:
            return cents_to_amount(self._meta_int("pool_cents"))

    def card_balance(self, card_id: str) -> Decimal:
        """Balance of one card; ``KeyError`` when there is no such card."""
        with self._lock:
            row = self._db.execute(
                "SELECT balance_cents FROM cards WHERE card_id = ?", (card_id,)
            ).fetchone()
        if row is None:
            raise KeyError(card_id)
        return cents_to_amount(row[0])

    def cards(self) -> list[dict[str, Any]]:
        """Every card, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM cards ORDER BY rowid").fetchall()
        return [self._card_dict(row) for row in rows]

    def card_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM cards").fetchone()[0]

    def find_cards(
        self, card_id: str | None = None, email: str | None = None, mobile: str | None = None
    ) -> list[dict[str, Any]]:
        """Cards matching every given filter (email case-insensitive), oldest first."""
        clauses, params = [], []
        if card_id is not None:
            clauses.append("card_id = ?")
            params.append(card_id)
        if email is not None:
            clauses.append("email_lc = ?")
            params.append(email.lower())
        if mobile is not None:
            clauses.append("mobile = ?")
            params.append(mobile)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        with self._lock:
            sql = f"SELECT * FROM cards{where} ORDER BY rowid"  # noqa: S608 (constant clauses)
            rows = self._db.execute(sql, params).fetchall()
        return [self._card_dict(row) for row in rows]

    @staticmethod
    def _card_dict(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "enKashCardId": row["card_id"],
            "userId": row["user_id"],
            "email": row["email"],
            "mobile": row["mobile"],
            "title": row["title"],
            "firstName": row["first_name"],
            "gender": row["gender"],
            "balance": cents_to_amount(row["balance_cents"]),
            "virtualAccountNumber": row["virtual_account"],
            "maskedNumber": row["masked_number"],
            "created": row["created"],
        }

    def redate(self, moments: dict[str, datetime]) -> int:
        """Move transactions (by reference) to the given moments: demo data only, so that the
        sandbox's "this month" agrees with a ledger whose demo rows were spread over months.
        Returns how many transactions moved."""
        with self._lock, self._transaction() as db:
            before = db.total_changes
            db.executemany(
                "UPDATE transactions SET created = ? WHERE reference = ?",
                [(iso_utc(moment), reference) for reference, moment in moments.items()],
            )
            return db.total_changes - before

    def transactions(self) -> list[dict[str, Any]]:
        """Committed (successful) transactions, oldest first."""
        return self.find_transactions()

    def find_transactions(
        self,
        *,
        card_id: str | None = None,
        references: list[str] | None = None,
        txn_ids: list[str] | None = None,
        txn_type: str | None = None,
        amount_from: Decimal | None = None,
        amount_to: Decimal | None = None,
        created_from: str | None = None,
        created_to: str | None = None,
    ) -> list[dict[str, Any]]:
        """Committed transactions matching every given filter (dates as ``iso_utc`` text)."""
        if references == [] or txn_ids == []:  # "any of none" matches nothing
            return []
        clauses: list[str] = []
        params: list[Any] = []
        if card_id is not None:
            clauses.append("t.card_id = ?")
            params.append(card_id)
        if references is not None:
            clauses.append(f"t.reference IN ({','.join('?' * len(references))})")
            params.extend(references)
        if txn_ids is not None:
            clauses.append(f"t.txn_id IN ({','.join('?' * len(txn_ids))})")
            params.extend(txn_ids)
        if txn_type is not None:
            clauses.append("t.txn_type = ?")
            params.append(txn_type)
        if amount_from is not None:
            clauses.append("t.amount_cents >= ?")
            params.append(amount_to_cents(amount_from))
        if amount_to is not None:
            clauses.append("t.amount_cents <= ?")
            params.append(amount_to_cents(amount_to))
        if created_from is not None:
            clauses.append("t.created >= ?")
            params.append(created_from)
        if created_to is not None:
            clauses.append("t.created <= ?")
            params.append(created_to)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        sql = (
            f"SELECT {_TXN_COLUMNS} FROM transactions t"  # noqa: S608 (constant clauses)
            f" JOIN cards c ON c.card_id = t.card_id{where} ORDER BY t.seq"
        )
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [
            {
                "enkashCardTxnId": row["txn_id"],
                "pgReferenceNumber": row["reference"],
                "enKashCardId": row["card_id"],
                "transactionType": row["txn_type"],
                "amount": cents_to_amount(row["amount_cents"]),
                "balance_after": cents_to_amount(row["balance_after_cents"]),
                "created": row["created"],
                "email": row["email"],
                "mobile": row["mobile"],
                "firstName": row["first_name"],
            }
            for row in rows
        ]

    def commit_count(self) -> int:
        """Number of committed allocate transactions (credits and debits)."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]

    def allocate_requests(self) -> int:
        """Number of allocate HTTP requests received since this store was opened or reset."""
        with self._lock:
            return self._allocate_requests

    def note_allocate_request(self) -> None:
        with self._lock:
            self._allocate_requests += 1
            if not self._allocate_window:
                self._allocate_window = [time.time(), time.time()]

    def note_allocate_reply(self) -> None:
        """An allocate request has been answered (its latency and work included)."""
        with self._lock:
            if self._allocate_window:
                self._allocate_window[1] = time.time()

    def allocate_window(self) -> tuple[float, float] | None:
        """Wall-clock seconds (epoch) of the first allocate request's arrival and the last one's
        reply since this store was opened or reset; ``None`` before any. A benchmark divides the
        calls by this span: throughput as EnKash would see it."""
        with self._lock:
            return (
                (self._allocate_window[0], self._allocate_window[1])
                if self._allocate_window
                else None
            )

    def token_requests(self) -> dict[str, int]:
        """Token-endpoint requests since this store was opened or reset, by grant and outcome.

        Keys: ``password`` and ``refresh_token`` (granted), the same with ``_refused`` (any
        refusal), and ``other`` / ``other_refused`` for a missing or unknown grant type.
        """
        with self._lock:
            counts = dict.fromkeys(_TOKEN_REQUEST_KINDS, 0)
            counts.update(self._token_requests)
            return counts

    def note_token_request(self, grant: str, granted: bool) -> None:
        kind = grant if grant in ("password", "refresh_token") else "other"
        with self._lock:
            self._token_requests[kind if granted else f"{kind}_refused"] += 1

    def account_summary(self, now: datetime | None = None) -> dict[str, Any]:
        """Totals for the card-account details call."""
        now = now or utc_now()
        month_start = iso_utc(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
        with self._lock:
            pool = self._meta_int("pool_cents")
            cards_total, card_cents = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(balance_cents), 0) FROM cards"
            ).fetchone()
            sums = self._db.execute(
                "SELECT"
                " COALESCE(SUM(CASE WHEN txn_type = 'CR' THEN amount_cents END), 0),"
                " COALESCE(SUM(CASE WHEN txn_type = 'DR' THEN amount_cents END), 0),"
                " COALESCE(SUM(CASE WHEN txn_type = 'CR' AND created >= ?"
                " THEN amount_cents END), 0),"
                " COALESCE(SUM(CASE WHEN txn_type = 'DR' AND created >= ?"
                " THEN amount_cents END), 0)"
                " FROM transactions",
                (month_start, month_start),
            ).fetchone()
        return {
            "availableBalance": cents_to_amount(pool),
            "availableCardBalance": cents_to_amount(card_cents),
            "totalCards": cards_total,
            "activeCards": cards_total,  # every sandbox card is active (UnLocked)
            "totalAllocationPoint": cents_to_amount(sums[0]),
            "totalRedemptionPoint": cents_to_amount(sums[1]),
            "currentMonthAllocationPoint": cents_to_amount(sums[2]),
            "currentMonthRedemptionPoint": cents_to_amount(sums[3]),
        }

    # -- logins and tokens ---------------------------------------------------------------------

    def is_locked(self) -> bool:
        with self._lock:
            return self._meta_int("locked") == 1

    def record_login(self, credentials_ok: bool) -> str:
        """Count a password login: returns ``"ok"``, ``"bad"`` or ``"locked"``.

        Three consecutive bad ones lock the partner until ``reset()``; a good one resets the count.
        """
        with self._lock, self._transaction():
            if self._meta_int("locked"):
                return "locked"
            if credentials_ok:
                self._set_meta("failed_logins", 0)
                return "ok"
            failures = self._meta_int("failed_logins") + 1
            self._set_meta("failed_logins", failures)
            if failures >= LOCK_AFTER_FAILURES:
                self._set_meta("locked", 1)
            return "bad"

    def issue_tokens(self, lifetime_seconds: float) -> tuple[str, str]:
        """A new (access token, refresh token) pair, both valid for ``lifetime_seconds``."""
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = time.monotonic() + lifetime_seconds
        with self._lock:
            self._access_tokens[access] = expires
            self._refresh_tokens[refresh] = expires
        return access, refresh

    def access_token_valid(self, token: str) -> bool:
        with self._lock:
            expires = self._access_tokens.get(token)
            if expires is None:
                return False
            if time.monotonic() >= expires:
                del self._access_tokens[token]
                return False
            return True

    def redeem_refresh_token(self, token: str) -> bool:
        """Use up a refresh token (each one works once); False when unknown or expired."""
        with self._lock:
            expires = self._refresh_tokens.pop(token, None)
        return expires is not None and time.monotonic() < expires

    # -- the allocate call ----------------------------------------------------------------------

    def allocate(self, request: AllocationRequest) -> Outcome:
        """Decide and commit one allocate call atomically, or replay the stored outcome.

        Raises ``NeedsFields`` (nothing stored) when a credit would create a card but lacks fields.
        """
        with self._lock, self._transaction() as db:
            stored = db.execute(
                "SELECT canonical, outcome FROM replies WHERE reference = ?", (request.reference,)
            ).fetchone()
            if stored is not None:
                if stored["canonical"] == request.canonical:
                    return Outcome.from_json(stored["outcome"], replayed=True)
                return Outcome(200, False, message="Duplicate uniqueReferenceNumber")
            outcome = self._decide(db, request)
            db.execute(
                "INSERT INTO replies (reference, canonical, outcome, created) VALUES (?, ?, ?, ?)",
                (request.reference, request.canonical, outcome.to_json(), iso_utc(utc_now())),
            )
            return outcome

    def _decide(self, db: sqlite3.Connection, request: AllocationRequest) -> Outcome:
        card = self._find_card(db, request)
        if isinstance(card, Outcome):
            return card
        if card is None and request.transaction_type == "DR":
            return Outcome(200, False, message="Card not found")
        if card is None:
            given = {
                "email": request.email,
                "mobile": request.mobile,
                "title": request.title,
                "firstName": request.first_name,
                "gender": request.gender,
            }
            missing = [name for name in NEW_CARD_FIELDS if not given[name]]
            if missing:
                raise NeedsFields(missing)
        email = card["email"] if card is not None else request.email
        if KYC_PENDING_MARK in (email or "").lower():
            return Outcome(422, False, message="KYC under review")

        amount = amount_to_cents(request.amount)
        pool = self._meta_int("pool_cents")
        now = iso_utc(utc_now())
        if request.transaction_type == "CR":
            if amount > pool:
                return Outcome(200, False, message="Insufficient balance in card account")
            if card is None:
                card = self._create_card(db, request, now)
            balance = card["balance_cents"] + amount
            pool -= amount
        else:
            if amount > card["balance_cents"]:
                return Outcome(200, False, message="Insufficient balance in card")
            balance = card["balance_cents"] - amount
            pool += amount
        self._set_meta("pool_cents", pool)
        db.execute(
            "UPDATE cards SET balance_cents = ? WHERE card_id = ?", (balance, card["card_id"])
        )
        txn_id = self._unused_id(db, "transactions", "txn_id", "ECTR", 9)
        db.execute(
            "INSERT INTO transactions (txn_id, reference, card_id, txn_type, amount_cents,"
            " balance_after_cents, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                txn_id,
                request.reference,
                card["card_id"],
                request.transaction_type,
                amount,
                balance,
                now,
            ),
        )
        payload = {
            "enKashCardId": card["card_id"],
            "enkashCardTxnId": txn_id,
            "pgReferenceNumber": request.reference,
            "cardAccountId": self.identity.card_account_id,
            "companyId": self.identity.company_id,
            "email": card["email"],
            "mobile": card["mobile"],
            "title": card["title"],
            "firstName": card["first_name"],
            "gender": card["gender"],
            "otbBalance": cents_to_amount(balance),
            "cardStatus": dict(CARD_STATUS),
            "kycStatus": dict(KYC_VERIFIED),
            "binType": dict(BIN_TYPE),
            "cardActivated": True,
            "virtualAccountNumber": card["virtual_account"],
            "rewardPointsReceived": request.amount.quantize(CENT),
            "userId": card["user_id"],
            "maskedNumber": card["masked_number"],
        }
        return Outcome(200, True, payload=payload)

    @staticmethod
    def _find_card(
        db: sqlite3.Connection, request: AllocationRequest
    ) -> sqlite3.Row | Outcome | None:
        if request.card_id is not None:
            row = db.execute("SELECT * FROM cards WHERE card_id = ?", (request.card_id,)).fetchone()
            return row if row is not None else Outcome(200, False, message="Card not found")
        by_email = by_mobile = None
        if request.email:
            by_email = db.execute(
                "SELECT * FROM cards WHERE email_lc = ?", (request.email.lower(),)
            ).fetchone()
        if request.mobile:
            by_mobile = db.execute(
                "SELECT * FROM cards WHERE mobile = ?", (request.mobile,)
            ).fetchone()
        if (
            by_email is not None
            and by_mobile is not None
            and by_email["card_id"] != by_mobile["card_id"]
        ):
            return Outcome(200, False, message="Email and mobile belong to different cards")
        return by_email if by_email is not None else by_mobile

    def _create_card(
        self, db: sqlite3.Connection, request: AllocationRequest, now: str
    ) -> sqlite3.Row:
        card_id = self._unused_id(db, "cards", "card_id", "EKC", 7)
        user_id = self._unused_id(db, "cards", "user_id", "EKU", 8, string.digits)
        assert request.email and request.mobile  # checked by the caller (NeedsFields)
        db.execute(
            "INSERT INTO cards (card_id, user_id, email, email_lc, mobile, title, first_name,"
            " gender, balance_cents, virtual_account, masked_number, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
            (
                card_id,
                user_id,
                request.email,
                request.email.lower(),
                request.mobile,
                request.title,
                request.first_name,
                request.gender,
                _random_id("EKRW", 12, string.digits),
                "XXXX XXXX XXXX " + _random_id("", 4, string.digits),
                now,
            ),
        )
        return db.execute("SELECT * FROM cards WHERE card_id = ?", (card_id,)).fetchone()

    @staticmethod
    def _unused_id(
        db: sqlite3.Connection,
        table: str,
        column: str,
        prefix: str,
        length: int,
        alphabet: str = _ALNUM,
    ) -> str:
        while True:
            candidate = _random_id(prefix, length, alphabet)
            sql = f"SELECT 1 FROM {table} WHERE {column} = ?"  # noqa: S608 (constant names)
            if db.execute(sql, (candidate,)).fetchone() is None:
                return candidate
