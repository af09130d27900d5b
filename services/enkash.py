"""The EnKash reward API client: sign-in and token lifecycle, allocate, account, lookup, search.

Built to ENKASH_API.md (the contract), not to the sandbox. The one rule that shapes everything
here: an allocate call moves value, so every failure is classified by what it proves.

- ``BusinessRefusal``: EnKash said no (failure envelope on HTTP 200, or HTTP 400/404/413/415/422):
  nothing moved.
- ``NotSent``: the request certainly never reached EnKash (connection refused, DNS, connect
  timeout, an invalid URL, a sign-in that failed): nothing moved, it may be sent again.
- ``OutcomeUnknown``: it was sent and no trustworthy answer came back (read timeout, a connection
  dropped after sending, 5xx, 429, a body that is not an envelope, a reply that does not decrypt,
  a reply that repeats a key, a code that is neither the documented success nor a refusal, a
  reply still arriving after the call's deadline or larger than ``MAX_REPLY_BYTES``, a success
  for another reference or another card): only a lookup of the reference can settle it.
- ``LoginRefused``: EnKash refused the credentials. Three refused sign-ins lock the partner account,
  so a refusal is never retried: every client in this process built for the same credentials stops
  calling EnKash (without touching the network) until a person calls ``reset_login()``.

An ``EnkashClient`` owns one ``requests.Session`` and is **not thread-safe**: each worker thread
uses its own client (``clone()`` makes one). What clients share is the sign-in: a ``TokenHolder``
keeps one access token for every client built with it (one per process, held by the ``Desk``), so
16 threads start with one sign-in, renew it once near expiry, and re-sign-in once after a 401. The
login refusal is shared process-wide too, so that many clients cannot add up to three refused
sign-ins.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import heapq
import itertools
import json
import logging
import re
import socket
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from services.config import EnkashConfig
from services.crypto import (
    DecryptError,
    DuplicateKey,
    compact_json,
    decrypt_body,
    encrypt_body,
    read_json,
)
from services.models import (
    AccountDetails,
    Allocation,
    AllocationResult,
    CardHolder,
    Kind,
    TransactionRecord,
    parse_card_id,
)
from services.redact import redact, remember_issued

log = logging.getLogger("points_desk.enkash")

API_PREFIX = "/api/v0/partner/enKashCard"
ACCOUNT_PATH = f"{API_PREFIX}/cardAccount/get"
TRANSACTIONS_PATH = f"{API_PREFIX}/transaction/all"
SEARCH_PATH = f"{API_PREFIX}/search"

REFRESH_MARGIN_SECONDS = 30.0  # refresh when less than min(30 s, 10 % of the lifetime) remains
REFRESH_MARGIN_FRACTION = 0.1
DEFAULT_TOKEN_LIFETIME_SECONDS = 300.0  # the reward docs' 5 minutes, if a reply omits expires_in
MAX_MESSAGE_LENGTH = 300
#: Largest reply read, decompressed (the ``Content-Length`` EnKash declares, or what it sends).
#: A whole account's user search of 20,000 cards is about 7 MB of JSON, 10 MB in the AES
#: envelope; 32 MB leaves room for three times that and bounds what a hostile or broken host can
#: make this process buffer. A larger reply is not read: the call's outcome is unknown.
MAX_REPLY_BYTES = 32 * 1024 * 1024
#: A call may take its connect and read timeouts plus this, in all, before its connection is cut:
#: the read timeout applies to each read of the socket, so a reply dripping a byte at a time would
#: otherwise never time out.
DEADLINE_MARGIN_SECONDS = 1.0
_READ_CHUNK_BYTES = 64 * 1024
#: Largest number read from a reply (points, counts, seconds): beyond this it is not a reading of
#: anything real, and turning ``1e1000000`` into an ``int`` alone takes a minute of CPU.
MAX_REPLY_NUMBER = Decimal(10) ** 15
_MAX_NUMBER_TEXT = 40  # characters of a number written as text
#: Longest text kept from a field of a reply (a name, an email, a status), after redaction.
MAX_FIELD_LENGTH = 200

# Documented (400, 404, 422) or refused-at-the-door (413 too large, 415 wrong media type) statuses:
# EnKash read the request and said no, so nothing moved. Any other non-2xx status (except 401,
# handled by one re-login) is not a definite answer and counts as an unknown outcome.
REFUSAL_STATUSES = frozenset({400, 404, 413, 415, 422})
_OAUTH_REFUSALS = frozenset({"invalid_client", "invalid_grant", "unauthorized_client"})
# A code spelled like success that is not the documented 0 ("00", "SUCCESS", 200): it contradicts
# any reading of the reply as a refusal, and it is not the success the contract documents.
_SUCCESS_WORDS = frozenset(
    {"SUCCESS", "SUCCEEDED", "SUCCESSFUL", "OK", "TRUE", "DONE", "COMPLETED", "APPROVED", "S"}
)
# An enkashCardTxnId as EnKash writes them (ECTRSZJ8CRJ2E): letters, digits and a few separators.
_TRANSACTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,299}")
# An access token that can go in an Authorization header as is: visible ASCII, no spaces.
_MAX_TOKEN_LENGTH = 8192
_HEADER_TOKEN = re.compile(r"[\x21-\x7e]{1,8192}")
# Where a lookup row may carry the reference: EnKash echoes it as ``pgReferenceNumber``; some
# portal examples spell the request field ``uniqueReferenceNum`` (ENKASH_API.md).
_REFERENCE_FIELDS = ("pgReferenceNumber", "uniqueReferenceNumber", "uniqueReferenceNum")
_LOOKUP_LIST_KEYS = ("data", "content", "transactions", "records")


# --- errors -------------------------------------------------------------------------------------


class EnkashError(Exception):
    """Base error: ``http_status``, EnKash's ``code`` and ``message``, and the ``reference``.

    ``str(error)`` is one readable sentence for a person; it never carries a secret, password or
    token: messages are built here or are EnKash's own short texts, and every one is redacted
    (``services/redact.py``), since EnKash may echo a request, password and all, in an error.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: int | str | None = None,
        reference: str | None = None,
    ) -> None:
        self.message = _short(redact(message)) or "EnKash call failed"
        self.http_status = http_status
        self.code = _clip(redact(code)) if isinstance(code, str) else code
        self.reference = reference
        super().__init__(self.message)

    def __str__(self) -> str:
        details = []
        if self.http_status is not None:
            details.append(f"HTTP {self.http_status}")
        if self.code is not None:
            details.append(f"EnKash code {self.code}")
        if self.reference:
            details.append(f"reference {self.reference}")
        sentence = self.message.rstrip(". ")
        return f"{sentence} ({', '.join(details)})." if details else f"{sentence}."

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, http_status={self.http_status!r}, "
            f"code={self.code!r}, reference={self.reference!r})"
        )


class LoginRefused(EnkashError):
    """EnKash refused the sign-in; no call is made until ``reset_login()`` (lockout after 3)."""


class BusinessRefusal(EnkashError):
    """A definite "no" from EnKash (failure envelope, or HTTP 400/404/422): nothing moved."""


class NotSent(EnkashError):
    """The request certainly did not reach EnKash (or was refused at the door): nothing moved."""


#: How the message of a call that got no answer at all begins (a read timeout, a dropped
#: connection): the outcome card says so rather than "no readable answer".
NO_ANSWER = "No answer from EnKash"
#: How the message of a call EnKash answered with HTTP 429 begins.
SLOW_DOWN = "EnKash asked to slow down (429)"
#: How the message of a sign-in EnKash answered without a usable token begins (an HTTP error, a
#: reply without a token): it was reached, so the outcome card must not say it could not be.
SIGN_IN_FAILED = "EnKash's sign-in answered without a usable token"
#: How the message of a success for another card than the one sent begins.
OTHER_CARD = "EnKash confirmed this transaction for another card"


class OutcomeUnknown(EnkashError):
    """Sent, but no readable, trustworthy answer: settle it by looking the reference up."""


class ReferenceMismatch(OutcomeUnknown):
    """A success whose ``pgReferenceNumber`` is not the reference sent; ``payload`` is kept."""

    def __init__(
        self,
        message: str,
        *,
        payload: dict[str, Any],
        received_reference: Any = None,
        http_status: int | None = None,
        code: int | str | None = None,
        reference: str | None = None,
    ) -> None:
        super().__init__(message, http_status=http_status, code=code, reference=reference)
        self.payload = payload
        self.received_reference = received_reference


class CardMismatch(ReferenceMismatch):
    """A success for the reference sent that names another card than the one sent: it is
    investigated like a reference mismatch (``REFERENCE_MISMATCH`` in the ledger), never taken
    as this transaction's success."""


class LookupMismatch(OutcomeUnknown):
    """A lookup lists the reference, but not as it was sent (another amount, type or card):
    it proves nothing about this transaction. ``record`` is what EnKash listed, ``differences``
    say how it differs, in words."""

    def __init__(
        self,
        message: str,
        *,
        record: TransactionRecord,
        differences: tuple[str, ...],
        reference: str | None = None,
    ) -> None:
        super().__init__(message, reference=reference)
        self.record = record
        self.differences = differences


def _short(text: Any) -> str:
    """One line of at most ``MAX_MESSAGE_LENGTH`` characters. Redact *before* calling this:
    a secret cut in two no longer matches."""
    text = " ".join(str(text or "").split())
    return _clip(text)


def _clip(text: str, limit: int = MAX_MESSAGE_LENGTH) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Exchange:
    """One call to EnKash made for a transaction, redacted, for the exchange inspector."""

    reference: str
    at: datetime
    endpoint: str
    request: str  # {"headers": {"partnerId"}, "body": ...} before encryption
    reply: str  # the reply as read: decrypted when it came in the AES envelope
    http_status: int | None
    enkash_code: str | None
    enkash_message: str | None
    latency_ms: int
    encrypted: bool
    error: str  # how the call failed, when it did


#: Longest unreadable reply kept for the inspector (a readable one is kept whole).
MAX_KEPT_REPLY = 16_000
_CUT_SLACK = 4_096  # read past a cut, redacted, then cut: longer than any secret


# --- login refusals shared across clients -------------------------------------------------------


@dataclass(frozen=True)
class _Refusal:
    http_status: int | None
    code: str | None
    description: str


# Keyed by a fingerprint of (token URL, client id, client secret, username, password): every
# client for the same credentials sees a refusal, and fixed credentials get a new fingerprint.
_REFUSED_LOGINS: dict[str, _Refusal] = {}
_REFUSED_LOCK = threading.Lock()


def _fingerprint(config: EnkashConfig) -> str:
    parts = (
        config.token_url,
        config.client_id,
        config.client_secret.get_secret_value(),
        config.username,
        config.password.get_secret_value(),
    )
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()


class _RefreshRefused(Exception):
    """A refresh-token grant was refused (does not count as a refused login: fall back)."""


@dataclass(frozen=True)
class _Token:
    access_token: str
    refresh_token: str | None
    obtained_at: float
    expires_in: float

    @property
    def expires_at(self) -> float:
        return self.obtained_at + self.expires_in

    @property
    def refresh_at(self) -> float:
        margin = min(REFRESH_MARGIN_SECONDS, REFRESH_MARGIN_FRACTION * self.expires_in)
        return self.expires_at - margin


# --- the shared token ---------------------------------------------------------------------------


class TokenHolder:
    """One EnKash access token shared by every client built with it. Thread-safe.

    - A usable token is handed out without waiting.
    - Shortly before it expires, one thread renews it (refresh grant first; a password sign-in
      when the refresh is refused, in whatever form, or there is no token); the others
      wait for that one sign-in and use its token. At most one sign-in is in flight.
    - Threads that waited for a sign-in take its outcome: its token, or the token still in hand if
      a refresh got no answer, or its ``NotSent`` failure; they do not queue up sign-ins of their
      own. The next call after a failure tries again.
    - A 401 on an API call drops the token only if it is still the one refused, so many threads
      refused with the same token cause one new sign-in, not one each.
    - A refused sign-in is recorded process-wide for these credentials (as before): every client
      sharing the holder, waiting or not, raises ``LoginRefused`` without touching the network.

    The HTTP call itself is made by the client asking (``EnkashClient._grant``, its own session).
    """

    def __init__(self, config: EnkashConfig, *, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.fingerprint = _fingerprint(config)
        self.clock = clock
        self._lock = threading.Lock()  # held for the whole sign-in: the others wait on it
        self._token: _Token | None = None
        self._finished = 0  # sign-ins finished, so a waiter can tell one ended while it waited
        self._failure: NotSent | None = None  # how the latest sign-in failed, if it did

    def __repr__(self) -> str:
        return f"TokenHolder(signed_in={self._token is not None})"

    @property
    def token(self) -> _Token | None:
        return self._token

    def access_token(self, client: EnkashClient) -> str:
        """A usable access token: the shared one, renewed first when it is close to expiry."""
        client._raise_if_refused()
        token = self._token
        if token is not None and self.clock() < token.refresh_at:
            return token.access_token
        finished_seen = self._finished
        with self._lock:
            client._raise_if_refused()  # refused while this thread waited
            token = self._token
            now = self.clock()
            if token is not None and now < token.refresh_at:
                return token.access_token  # renewed by another thread while this one waited
            if self._finished != finished_seen:
                # A sign-in ended while this thread waited for it: take its outcome.
                if self._failure is not None:
                    failure = self._failure
                    raise NotSent(failure.message, http_status=failure.http_status)
                if token is not None and now < token.expires_at:
                    return token.access_token  # its refresh got no answer; still valid
            try:
                self._token = self._renew(client, token, now)
                self._failure = None
            except NotSent as exc:
                self._failure = exc
                raise
            except BaseException:
                self._failure = None
                raise
            finally:
                self._finished += 1
            return self._token.access_token

    def _renew(self, client: EnkashClient, token: _Token | None, now: float) -> _Token:
        """Refresh before expiry, else sign in with the password (the lock is held)."""
        if token is not None and token.refresh_token and now < token.expires_at:
            try:
                return client._grant(
                    {
                        "grant_type": "refresh_token",
                        "refresh_token": token.refresh_token,
                        "clientId": self.config.client_id,
                    },
                    password_grant=False,
                )
            except _RefreshRefused:
                log.info("EnKash refused the refresh token; signing in with the password")
            except NotSent:
                # EnKash did not answer the refresh; the current token still works for now.
                if self.clock() < token.expires_at:
                    return token
        self._token = None
        return client._grant(
            {
                "username": self.config.username,
                "password": self.config.password.get_secret_value(),
                "grant_type": "password",
                "clientId": self.config.client_id,
            },
            password_grant=True,
        )

    def invalidate(self, access_token: str) -> None:
        """EnKash refused ``access_token`` (HTTP 401): drop it, unless already replaced."""
        with self._lock:
            if self._token is not None and self._token.access_token == access_token:
                self._token = None

    def forget(self) -> None:
        """Drop the token (after ``reset_login``): the next call signs in afresh."""
        with self._lock:
            self._token = None
            self._failure = None


# --- the client ---------------------------------------------------------------------------------


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def _session_for(base_url: str) -> requests.Session:
    """A session for ``base_url``. For a loopback host (the embedded sandbox) it does not read
    the proxy and CA-bundle environment: a loopback call never goes through a proxy, and
    ``requests`` reads that environment again on every call (0.3–0.8 ms each, measured while
    loading demo data)."""
    session = requests.Session()
    if urlsplit(base_url).hostname in _LOOPBACK_HOSTS:
        session.trust_env = False
    return session


class EnkashClient:
    """A client for one EnKash host. Not thread-safe: one instance per thread (see ``clone``).

    ``session`` may be given (tests count requests with a ``Session`` subclass); it must not carry
    an adapter with urllib3 ``Retry`` for POSTs, since a blind retry could send value twice.
    ``tokens`` is the ``TokenHolder`` to share with other clients (for the same configuration);
    without one the client gets its own. ``clock`` is a monotonic clock in seconds, used for token
    expiry by a holder the client makes (a shared holder keeps its own clock).
    """

    retry_backoff_seconds = 0.1  # first pause between connect attempts; doubles, capped at 1 s

    def __init__(
        self,
        config: EnkashConfig,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        tokens: TokenHolder | None = None,
        on_exchange: Callable[[Exchange], None] | None = None,
    ) -> None:
        self.config = config
        #: Called with every call made for a transaction (one with a reference): the exchange
        #: inspector keeps it with the row (``Ledger.record_exchange``). Errors in it are logged,
        #: never raised: keeping the record must not change what a call proves.
        self.on_exchange = on_exchange
        self._last_response: requests.Response | None = None  # of the call in progress
        if tokens is None:
            tokens = TokenHolder(config, clock=clock)
        elif tokens.fingerprint != _fingerprint(config):
            raise ValueError("a shared EnKash token must come from the same credentials and host")
        self.tokens = tokens
        self._session = session if session is not None else _session_for(config.base_url)
        self._clock = tokens.clock
        self._fingerprint = tokens.fingerprint
        self._timeout = (config.connect_timeout_seconds, config.timeout_seconds)

    def __repr__(self) -> str:
        return f"EnkashClient({self.config!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    def clone(self) -> EnkashClient:
        """A client for another thread: its own session, the same shared token."""
        return EnkashClient(self.config, tokens=self.tokens, on_exchange=self.on_exchange)

    def close(self) -> None:
        """Close the HTTP session (its pooled connections)."""
        self._session.close()

    def __enter__(self) -> EnkashClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def login_refused(self) -> bool:
        """True while a refused sign-in for these credentials blocks every call."""
        with _REFUSED_LOCK:
            return self._fingerprint in _REFUSED_LOGINS

    def reset_login(self) -> None:
        """Allow sign-in again after a person has fixed (or re-checked) the credentials.

        Each reset permits exactly one more attempt per refusal; three refused sign-ins in a row
        lock the partner account at EnKash.
        """
        with _REFUSED_LOCK:
            _REFUSED_LOGINS.pop(self._fingerprint, None)
        self.tokens.forget()

    @property
    def _token(self) -> _Token | None:
        """The shared token (read-only; tests look at it)."""
        return self.tokens.token

    # -- public calls --------------------------------------------------------------------------

    def allocate(self, allocation: Allocation) -> AllocationResult:
        """Credit (CR / ALLOCATE_POINT) or debit (DR / UNALLOCATE_POINT) one card.

        Returns EnKash's confirmation only when ``payload.pgReferenceNumber`` equals the
        reference sent and the card it names (if any) is the card sent. Raises
        ``BusinessRefusal`` (nothing moved), ``NotSent`` (never reached EnKash),
        ``LoginRefused`` (not sent; sign-in blocked), ``ReferenceMismatch`` (also its
        ``CardMismatch``: a success for another card) or ``OutcomeUnknown`` (settle with
        ``find_transaction``).
        """
        reference = allocation.reference
        payload = self._call(
            self.config.allocate_path, self._allocation_body(allocation), reference=reference
        )
        if not isinstance(payload, dict):
            raise OutcomeUnknown(
                "EnKash reported success but sent no transaction details", reference=reference
            )
        received = payload.get("pgReferenceNumber")
        if received is None or str(received) != reference:
            raise ReferenceMismatch(
                f"EnKash confirmed a transaction for reference {received!r} instead of the one "
                "sent; investigate before doing anything else with this transaction",
                payload=payload,
                received_reference=received,
                reference=reference,
            )
        # A confirmed success is recorded whatever else the reply holds: a value that cannot be
        # kept as given (a balance with 3 decimals, a card id that is not one) is left out and
        # named in ``notes`` for the audit trail, never allowed to stop the success being stored.
        notes: list[str] = []
        reported_card = _reported_card_id(payload.get("enKashCardId"), notes)
        if reported_card and allocation.card_id and reported_card != allocation.card_id:
            # Sent for one card, confirmed for another: not this transaction's success, and
            # never a reason to re-attribute the row. Investigated like another reference.
            raise CardMismatch(
                f"{OTHER_CARD} ({reported_card}), not the card it was sent for "
                f"({allocation.card_id}); investigate before doing anything else with it",
                payload=payload,
                received_reference=received,
                reference=reference,
            )
        card_id = reported_card or allocation.card_id
        return AllocationResult(
            reference=reference,
            card_id=card_id or "",
            transaction_id=_reported_id(payload.get("enkashCardTxnId"), "transaction id", notes),
            balance_after=_balance(payload.get("otbBalance"), notes),
            card_status=_label(payload.get("cardStatus")),
            kyc_status=_label(payload.get("kycStatus")),
            raw=payload,
            notes=tuple(notes),
        )

    def account_details(self) -> AccountDetails:
        """The company's reward account (pool balance and totals)."""
        payload = self._call(ACCOUNT_PATH, self._account_fields())
        if not isinstance(payload, dict):
            raise OutcomeUnknown("EnKash's account reply carried no account details")
        available = _decimal(payload.get("availableBalance"))
        if available is None:
            if payload.get("availableBalance") is None:
                raise OutcomeUnknown("EnKash's account reply has no availableBalance")
            # Not a number, or beyond any real pool (1e30): unknown, never a figure to show.
            raise OutcomeUnknown(
                f"EnKash's account reply has an availableBalance of "
                f"{_shown(payload.get('availableBalance'))}, which is not a balance"
            )
        zero = Decimal("0")
        return AccountDetails(
            available_balance=available,
            available_card_balance=_decimal(payload.get("availableCardBalance")) or zero,
            total_cards=_int(payload.get("totalCards")),
            active_cards=_int(payload.get("activeCards")),
            total_allocation=_decimal(payload.get("totalAllocationPoint")) or zero,
            total_redemption=_decimal(payload.get("totalRedemptionPoint")) or zero,
            current_month_allocation=_decimal(payload.get("currentMonthAllocationPoint")) or zero,
            current_month_redemption=_decimal(payload.get("currentMonthRedemptionPoint")) or zero,
            company_name=_field(payload.get("companyName")),
        )

    def find_transaction(
        self,
        reference: str,
        *,
        card_id: str | None = None,
        amount: Decimal | None = None,
        transaction_type: str | None = None,
    ) -> TransactionRecord | None:
        """Look a reference up at EnKash: its transaction, or None when proven absent.

        None only for a successful lookup whose listing is whole (its ``recordsCount``, when
        given, is the number of rows; every row is an object) and has no such reference. Any
        error raises (a failed lookup proves nothing); so does a reply whose shape is not
        understood. ``card_id`` narrows the lookup to one card when it is known.

        ``card_id``, ``amount`` and ``transaction_type`` (``CR``/``DR``) are also what was sent:
        a listing of this reference that reports another card, amount or type (or one that
        cannot be read) raises ``LookupMismatch``, since it is not proof of what happened to
        this transaction.
        """
        body: dict[str, Any] = self._account_fields()
        if card_id:
            body["enKashCardId"] = card_id
        body["pgReferenceNumber"] = reference
        body["pgReferenceNumbers"] = [reference]
        payload = self._call(TRANSACTIONS_PATH, body, reference=reference)
        rows = _listing(payload, "transaction lookup", reference)
        matches = [
            row for row in rows if reference in (_text(row.get(name)) for name in _REFERENCE_FIELDS)
        ]
        if not matches and rows:
            # Rows came back for a lookup by this reference, none of them it: the filter was not
            # applied, and a partial listing proves nothing about absence.
            raise OutcomeUnknown(
                "EnKash's transaction lookup listed other transactions, not this reference, so "
                "it proves nothing",
                reference=reference,
            )
        if not matches:
            return None
        differences: list[str] = []
        for row in matches:
            for difference in _differences(row, card_id, amount, transaction_type):
                if difference not in differences:
                    differences.append(difference)
        # Prefer a successful entry if EnKash lists several attempts for one reference.
        matches.sort(key=lambda row: _text(row.get("status")).upper() != "SUCCESS")
        record = _transaction_record(reference, matches[0])
        if differences:
            raise LookupMismatch(
                "EnKash lists this reference, but not as it was sent ("
                + "; ".join(differences)
                + "), so the lookup proves nothing; investigate with EnKash",
                record=record,
                differences=tuple(differences),
                reference=reference,
            )
        return record

    def search_users(
        self, card_id: str | None = None, email: str | None = None, mobile: str | None = None
    ) -> list[CardHolder]:
        """Cards at EnKash matching every filter given (all cards of the account when none).

        The search takes only the account and, for one card, ``enKashCardId`` (ENKASH_API.md);
        email and mobile are matched here, on the reply. A listing that is not whole and
        well-formed (a ``recordsCount`` other than its number of rows, a row that is not an
        object, a card id that is not one, an email or mobile that is not text) raises
        ``OutcomeUnknown``: "nobody has this email" must never rest on a partial listing.
        """
        body: dict[str, Any] = self._account_fields()
        if card_id:
            body["enKashCardId"] = card_id
        payload = self._call(SEARCH_PATH, body)
        rows = _listing(payload, "user search")
        holders = []
        wanted_email = email.lower() if email else None
        wanted_mobile = _national(mobile) if mobile else None
        for number, row in enumerate(rows, 1):
            card = _text(row.get("enKashCardId"))
            problem = _malformed_holder(row, card)
            if problem:
                raise OutcomeUnknown(
                    f"EnKash's user search listed a malformed card (row {number}: {problem}), "
                    "so the listing proves nothing"
                )
            # Matched on the raw row first: a whole account's listing can be 20,000 cards.
            if (
                (card_id and card.upper() != card_id.upper())
                or (wanted_email and _text(row.get("email")).lower() != wanted_email)
                or (wanted_mobile and _national(_text(row.get("mobile"))) != wanted_mobile)
            ):
                continue
            holders.append(
                CardHolder(
                    card_id=parse_card_id(card) or "",
                    email=_field(row.get("email")),
                    mobile=_field(row.get("mobile"), 40),
                    title=_field(row.get("title"), 20),
                    first_name=_field(row.get("firstName")),
                    gender=_field(row.get("gender"), 20),
                    user_id=_field(row.get("userId"), 100),
                    balance=_decimal(row.get("otbBalance")),
                )
            )
        return holders

    # -- request bodies ------------------------------------------------------------------------

    def _account_fields(self) -> dict[str, Any]:
        return {"companyId": self.config.company_id, "cardAccountId": self.config.card_account_id}

    def _allocation_body(self, allocation: Allocation) -> dict[str, Any]:
        debit = allocation.kind is Kind.DEBIT
        body: dict[str, Any] = {
            **self._account_fields(),
            "transactionCode": "ALLOCATION",
            "transactionType": "DR" if debit else "CR",
            "type": "UNALLOCATE_POINT" if debit else "ALLOCATE_POINT",
        }
        employee = allocation.employee
        if employee is not None:  # a credit/debit by card id alone sends no employee fields
            body.update(
                {
                    "email": employee.email,
                    "mobile": employee.mobile,
                    "title": str(employee.title.value),
                    "firstName": employee.first_name,
                    "gender": str(employee.gender.value),
                }
            )
        body["loadAmount"] = allocation.amount  # a Decimal: written as an exact JSON number
        body["uniqueReferenceNumber"] = allocation.reference
        if allocation.card_id:
            body["enkashCardId"] = allocation.card_id
        return body

    # -- the API call --------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.config.base_url.rstrip("/") + "/" + path.lstrip("/")

    def _call(self, path: str, body: dict[str, Any], *, reference: str | None = None) -> Any:
        """POST one API call and return the success payload (or raise a classified error)."""
        url = self._url(path)
        secret = self.config.client_secret.get_secret_value()
        # Serialised once: a resend after a 401 or a connect retry carries exactly these bytes.
        wire_body = encrypt_body(body, secret) if self.config.encrypt else body
        data = compact_json(wire_body).encode("utf-8")
        at, started = datetime.now(UTC), time.monotonic()
        try:
            payload = self._exchange(url, data, reference)
        except EnkashError as exc:
            self._keep(path, body, at, started, self._last_response, reference, error=exc)
            raise
        self._keep(path, body, at, started, self._last_response, reference)
        return payload

    def _exchange(self, url: str, data: bytes, reference: str | None) -> Any:
        """Send ``data`` (re-signing in once after a 401) and read the reply."""
        response: requests.Response | None = None
        self._last_response = None
        for attempt in (1, 2):
            try:
                token = self.tokens.access_token(self)
            except EnkashError as exc:
                exc.reference = exc.reference or reference  # the caller's row, for the ledger
                raise
            headers = {
                "partnerId": self.config.partner_id,
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
            }
            response = self._post(url, data=data, headers=headers, reference=reference)
            self._last_response = response
            if response.status_code != 401:
                break
            # A 401 is decided at the door, before the request is processed, so the same request
            # may be sent again after one fresh sign-in (shared: only if no other thread has
            # already replaced the refused token).
            self.tokens.invalidate(token)
            if attempt == 2:
                # Refused again with a brand-new token: the request was still refused at the door,
                # so nothing was processed -> NotSent (not LoginRefused: the sign-in itself worked,
                # and blocking sign-in would not help; not OutcomeUnknown: nothing can have moved).
                raise NotSent(
                    "EnKash refused the access token again right after a fresh sign-in; the "
                    "request was not processed (check the partner id and API permissions)",
                    http_status=401,
                    reference=reference,
                )
            log.info("EnKash refused the access token; signing in again once")
        assert response is not None
        return self._read_reply(response, reference)

    def _keep(
        self,
        path: str,
        body: dict[str, Any],
        at: datetime,
        started: float,
        response: requests.Response | None,
        reference: str | None,
        *,
        error: EnkashError | None = None,
    ) -> None:
        """Hand one call for a transaction to ``on_exchange``: the request as built (before
        encryption) with the partner id as its only header (never Authorization), the reply as
        read (decrypted), status, EnKash's code and message, latency. Everything redacted."""
        if self.on_exchange is None or not reference:
            return
        try:
            request = compact_json({"headers": {"partnerId": self.config.partner_id}, "body": body})
            reply, code, message = "", None, None
            if response is not None:
                envelope, _ = self._parse_body(response)
                try:
                    reply = redact(compact_json(envelope)) if envelope is not None else ""
                except (ArithmeticError, ValueError, TypeError, RecursionError):
                    reply = ""  # a number it cannot write (1E+999999999): kept as it came
                if envelope is not None:
                    raw_code = envelope.get("response_code", envelope.get("code"))
                    code = None if raw_code is None else _clip(redact(str(raw_code)))
                    raw_message = envelope.get("response_message", envelope.get("message"))
                    message = _short(redact(raw_message)) if raw_message is not None else None
                if not reply:
                    # Redacted before it is cut (a secret across the cut would leak in part);
                    # the slack past the cut holds any secret that begins before it.
                    kept = response.content[: MAX_KEPT_REPLY + _CUT_SLACK]
                    reply = _clip(redact(kept.decode("utf-8", "replace")), MAX_KEPT_REPLY)
            if error is not None and message is None:
                message = error.message
            self.on_exchange(
                Exchange(
                    reference=reference,
                    at=at,
                    endpoint=urlsplit(path).path or path,
                    request=redact(request),
                    reply=reply,
                    http_status=response.status_code if response is not None else None,
                    enkash_code=code,
                    enkash_message=message,
                    latency_ms=round((time.monotonic() - started) * 1000),
                    encrypted=self.config.encrypt,
                    error=f"{type(error).__name__}: {error.message}" if error is not None else "",
                )
            )
        except Exception:
            log.exception("could not keep the exchange for reference %s", reference)

    def _read_reply(self, response: requests.Response, reference: str | None) -> Any:
        """The success payload of a reply, or the error that says what the reply proves.

        Only a refusal EnKash states (HTTP 400/404/413/415/422, or a failure code on HTTP 200)
        is a ``BusinessRefusal``. A code that is neither the documented success (0) nor a
        refusal (``null``, ``"00"``, ``200``, ``"SUCCESS"``, ``true``), a refusal that also
        says it succeeded (message "Success", a payload naming this reference or a transaction
        id), and a reply that repeats a key are ``OutcomeUnknown``: the request may have gone
        through, so it is settled by lookup, never resent.
        """
        status = response.status_code
        if status >= 500:
            raise OutcomeUnknown(
                f"EnKash answered with a server error (HTTP {status}); the request may or may "
                "not have been processed",
                http_status=status,
                reference=reference,
            )
        if status == 429:
            # ENKASH_API.md does not say a 429 comes before anything is processed.
            raise OutcomeUnknown(
                f"{SLOW_DOWN}; it is not known whether the request was processed",
                http_status=status,
                reference=reference,
            )
        envelope, problem = self._parse_body(response)
        if envelope is None and problem.startswith(_AMBIGUOUS):
            raise OutcomeUnknown(
                f"EnKash's reply could not be read ({problem}); the outcome is not known",
                http_status=status,
                reference=reference,
            )
        if status in REFUSAL_STATUSES:
            codes = _codes(envelope) if envelope else []
            if envelope and (
                _claims_success(envelope, reference)
                or any(_code_meaning(code) == "success" for code in codes)
            ):
                raise OutcomeUnknown(
                    f"EnKash refused the request (HTTP {status}) in a reply that says it "
                    "succeeded; the outcome is not known",
                    http_status=status,
                    reference=reference,
                )
            message = _refusal_message(envelope) or f"EnKash refused the request (HTTP {status})"
            code = envelope.get("response_code", envelope.get("code")) if envelope else None
            raise BusinessRefusal(
                message, http_status=status, code=_code(code), reference=reference
            )
        if not 200 <= status < 300:
            raise OutcomeUnknown(
                f"EnKash answered with an unexpected HTTP {status}; the outcome is not known",
                http_status=status,
                reference=reference,
            )
        if envelope is None:
            raise OutcomeUnknown(
                f"EnKash's reply could not be read ({problem})",
                http_status=status,
                reference=reference,
            )
        codes = _codes(envelope)
        if not codes:
            raise OutcomeUnknown(
                "EnKash's reply is not a response envelope (no code)",
                http_status=status,
                reference=reference,
            )
        meanings = {_code_meaning(code) for code in codes}
        if meanings == {"success"}:
            return envelope.get("payload")
        if meanings == {"refusal"}:
            if _claims_success(envelope, reference):
                raise OutcomeUnknown(
                    f"EnKash's reply has the failure code {_shown(codes[-1])} but says it "
                    "succeeded; the outcome is not known",
                    http_status=status,
                    reference=reference,
                )
            raise BusinessRefusal(
                _refusal_message(envelope) or "EnKash refused the request",
                http_status=status,
                code=_code(codes[-1]),
                reference=reference,
            )
        if {"success", "refusal"} <= meanings:
            raise OutcomeUnknown(
                "EnKash's reply says both success and failure",
                http_status=status,
                reference=reference,
            )
        unknown = next(code for code in codes if _code_meaning(code) == "unknown")
        raise OutcomeUnknown(
            f"EnKash's reply has the code {_shown(unknown)}, which is neither its success code "
            "(0) nor a refusal; the outcome is not known",
            http_status=status,
            reference=reference,
        )

    def _parse_body(self, response: requests.Response) -> tuple[dict[str, Any] | None, str]:
        """The reply's JSON object (decrypted when it is ``{"request": ...}``), or a reason.

        A reason that begins with ``_AMBIGUOUS`` (a key given twice) means the reply may say
        anything, success included; any other reason, that it says nothing readable.
        """
        try:
            body = read_json(response.content)
        except DuplicateKey as exc:
            return None, f"{_AMBIGUOUS}{exc}"
        except ValueError as exc:  # also UnicodeDecodeError; a nesting too deep to read
            return None, "not JSON" if "nested" not in str(exc) else f"not JSON ({exc})"
        if not isinstance(body, dict):
            return None, "not a JSON object"
        if set(body) == {"request"} and isinstance(body["request"], str):
            # Be liberal: an encrypted reply is read even if this client sends plaintext.
            try:
                body = decrypt_body(body, self.config.client_secret.get_secret_value())
            except DecryptError as exc:
                if isinstance(exc.__cause__, DuplicateKey):
                    return None, f"{_AMBIGUOUS}{exc.__cause__}"
                return None, str(exc)
        return body, ""

    # -- transport -----------------------------------------------------------------------------

    def _post(
        self,
        url: str,
        *,
        data: bytes | dict[str, str],
        headers: dict[str, str],
        reference: str | None = None,
    ) -> requests.Response:
        """POST with bounded retries for connect failures only (those never reached EnKash), and
        read the whole reply within the call's deadline and ``MAX_REPLY_BYTES``.

        The reply is read here, not by ``requests``: its read timeout applies to each read of the
        socket, so a host that drips a byte a second would hold the call forever, and a host that
        never stops sending would fill the memory. Past the deadline (the connect and read
        timeouts plus ``DEADLINE_MARGIN_SECONDS``, from the start of the attempt) the connection
        is cut, and a reply larger than the cap is not read on: either way the request was sent,
        so its outcome is unknown.
        """
        path = urlsplit(url).path
        attempts = max(0, self.config.connect_retries) + 1
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            allowed = sum(self._timeout) + DEADLINE_MARGIN_SECONDS
            deadline = started + allowed
            try:
                response = self._session.post(
                    url,
                    data=data,
                    headers=headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                    stream=True,
                )
            except UnicodeError:
                # A header value that is not Latin-1 fails as the header is written, before a byte
                # of the request is sent.
                raise NotSent(
                    "A header of the request cannot be sent (it is not plain text); nothing was "
                    "sent",
                    reference=reference,
                ) from None
            except (
                requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema,
                requests.exceptions.InvalidURL,
                requests.exceptions.InvalidHeader,
            ) as exc:
                raise NotSent(
                    f"The EnKash address or a header is not valid ({type(exc).__name__}); "
                    "nothing was sent",
                    reference=reference,
                ) from None
            except requests.exceptions.RequestException as exc:
                elapsed = (time.monotonic() - started) * 1000
                if not _never_reached(exc):
                    log.warning(
                        "POST %s failed after sending (%s) in %.0f ms reference=%s",
                        path,
                        type(exc).__name__,
                        elapsed,
                        reference,
                    )
                    raise OutcomeUnknown(
                        f"{NO_ANSWER} after the request was sent "
                        f"({_transport_reason(exc)}); it may or may not have been processed",
                        reference=reference,
                    ) from None
                log.warning(
                    "POST %s could not connect (%s), attempt %d of %d, reference=%s",
                    path,
                    type(exc).__name__,
                    attempt,
                    attempts,
                    reference,
                )
                if attempt == attempts:
                    raise NotSent(
                        f"Could not reach EnKash at {urlsplit(url).netloc} "
                        f"({_transport_reason(exc)}) after {attempts} attempt(s); nothing was sent",
                        reference=reference,
                    ) from None
                time.sleep(min(self.retry_backoff_seconds * 2 ** (attempt - 1), 1.0))
                continue
            _read_body(response, deadline, allowed, path, reference)
            log.info(
                "POST %s -> %d in %.0f ms reference=%s",
                path,
                response.status_code,
                (time.monotonic() - started) * 1000,
                reference,
            )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    # -- sign-in ---------------------------------------------------------------------------------

    def _raise_if_refused(self) -> None:
        with _REFUSED_LOCK:
            refusal = _REFUSED_LOGINS.get(self._fingerprint)
        if refusal is not None:
            raise LoginRefused(
                f"EnKash refused an earlier sign-in ({refusal.description}); no further attempt "
                "is made until the credentials are fixed and the sign-in is reset, because three "
                "refused sign-ins lock the partner account",
                http_status=refusal.http_status,
                code=refusal.code,
            )

    def _grant(self, form: dict[str, str], *, password_grant: bool) -> _Token:
        """POST the token endpoint; a refusal of a password grant blocks further sign-ins.

        A refusal of a refresh grant, whatever its form (``invalid_grant``, ``invalid_token``,
        a bare 401 page), raises ``_RefreshRefused``: a refresh names no user, so it is not a
        failed login, and the holder falls back to one password sign-in. Every token in the
        reply is remembered for redaction before anything else is done with it.
        """
        secret = self.config.client_secret.get_secret_value()
        basic = base64.b64encode(f"{self.config.client_id}:{secret}".encode()).decode("ascii")
        headers = {
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        started = self._clock()  # the token's lifetime began no earlier than this
        try:
            response = self._post(self.config.token_url, data=form, headers=headers)
        except OutcomeUnknown as exc:
            # A sign-in that got no usable answer moved no value; the next call may try again.
            if exc.message.startswith(NO_ANSWER):
                raise NotSent(f"EnKash's sign-in did not answer: {exc.message}") from None
            raise NotSent(f"{SIGN_IN_FAILED}: {exc.message}", http_status=exc.http_status) from None
        status = response.status_code
        unreadable = ""  # why the reply could not be read, when it could not
        try:
            reply = read_json(response.content)
        except DuplicateKey as exc:
            reply, unreadable = (
                None,
                f"{exc}, so which token it gave is not known",
            )
        except ValueError:
            reply, unreadable = None, "it is not JSON"
        if reply is not None and not isinstance(reply, dict):
            unreadable = "it is not a JSON object"
        reply = reply if isinstance(reply, dict) else {}
        # Remembered at once: a later reply (an error quoting the request) may echo them bare.
        remember_issued(
            *(
                value
                for value in (reply.get("access_token"), reply.get("refresh_token"))
                if isinstance(value, str) and len(value) <= _MAX_TOKEN_LENGTH
            )
        )
        error = _clip(redact(_text(reply.get("error"))), 100) or None
        if status in (400, 401, 403) or error in _OAUTH_REFUSALS:
            description = _short(
                redact(_text(reply.get("error_description") or reply.get("message")))
            )
            reason = ": ".join(part for part in (error, description) if part) or f"HTTP {status}"
            if not password_grant:
                # Only the refresh token was refused (expired, revoked, or a server that says so
                # its own way): forget it and sign in once with the password.
                raise _RefreshRefused(reason)
            with _REFUSED_LOCK:
                _REFUSED_LOGINS[self._fingerprint] = _Refusal(status, error, reason)
            log.error(
                "EnKash refused the sign-in (HTTP %d, %s); sign-in is now blocked", status, error
            )
            raise LoginRefused(
                f"EnKash refused the sign-in ({reason}); fix the credentials, then reset the "
                "sign-in: no further attempt is made automatically, because three refused "
                "sign-ins lock the partner account",
                http_status=status,
                code=error,
            )
        if not 200 <= status < 300:
            said = SLOW_DOWN if status == 429 else f"HTTP {status}"
            raise NotSent(f"{SIGN_IN_FAILED}: {said}; nothing was sent", http_status=status)
        if unreadable:
            raise NotSent(
                f"{SIGN_IN_FAILED}: its reply could not be read ({unreadable}); nothing was sent",
                http_status=status,
            )
        access_token = reply.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise NotSent(
                f"{SIGN_IN_FAILED}: its reply has no access token; nothing was sent",
                http_status=status,
            )
        if not _HEADER_TOKEN.fullmatch(access_token):
            # Spaces, line breaks or letters outside ASCII cannot go in an Authorization header:
            # refused here, before any request, rather than failing as one is being sent.
            raise NotSent(
                f"{SIGN_IN_FAILED}: its access token cannot be sent in a header (it is not "
                "plain ASCII text); nothing was sent",
                http_status=status,
            )
        refresh_token = reply.get("refresh_token")
        usable_refresh = isinstance(refresh_token, str) and 0 < len(refresh_token) <= (
            _MAX_TOKEN_LENGTH
        )
        return _Token(
            access_token=access_token,
            refresh_token=refresh_token if usable_refresh else None,
            obtained_at=started,
            expires_in=_lifetime(reply.get("expires_in")),
        )


# --- reading a reply within a deadline and a size ---------------------------------------------


class _Cut:
    """The deadline of one reply being read: past it, the watchdog shuts its socket down, which
    ends a read blocked on a host that drips the reply. ``finish`` disarms it."""

    __slots__ = ("_lock", "_response", "deadline", "finished", "fired")

    def __init__(self, deadline: float, response: requests.Response) -> None:
        self.deadline = deadline
        self.fired = False
        self.finished = False
        self._lock = threading.Lock()
        self._response: requests.Response | None = response

    def fire(self) -> None:
        with self._lock:
            if self.finished:
                return
            self.fired = True
            sock = _socket_of(self._response) if self._response is not None else None
            if sock is not None:
                # The plain socket's shutdown, also under TLS: it only ends the blocked read.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def finish(self) -> None:
        with self._lock:
            self.finished = True
            self._response = None  # not kept alive (and its reply with it) until the deadline


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket a streamed reply is read from (urllib3 2 keeps it on the response)."""
    raw = response.raw
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    if sock is None:
        reader = getattr(getattr(raw, "_fp", None), "fp", None)
        sock = getattr(getattr(reader, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


class _Watchdog:
    """One daemon thread for the process that fires each ``_Cut`` at its deadline."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._due: list[tuple[float, int, _Cut]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, cut: _Cut) -> None:
        with self._wake:
            heapq.heappush(self._due, (cut.deadline, next(self._order), cut))
            if self._thread is None or not self._thread.is_alive():  # none yet, or forked
                self._thread = threading.Thread(
                    target=self._run, name="enkash-reply-deadline", daemon=True
                )
                self._thread.start()
            if self._due[0][2] is cut:  # sooner than what the thread waits for
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while True:
                    while self._due and self._due[0][2].finished:
                        heapq.heappop(self._due)
                    if not self._due:
                        self._wake.wait()
                        continue
                    wait = self._due[0][0] - time.monotonic()
                    if wait <= 0:
                        cut = heapq.heappop(self._due)[2]
                        break
                    self._wake.wait(wait)
            cut.fire()


_WATCHDOG = _Watchdog()


def _read_body(
    response: requests.Response, deadline: float, allowed: float, path: str, reference: str | None
) -> None:
    """Read a streamed reply whole into ``response.content``, or raise ``OutcomeUnknown``: past
    ``deadline`` (``time.monotonic()``), beyond ``MAX_REPLY_BYTES`` (decompressed), on a body
    that does not decompress as its ``Content-Encoding`` says, or on a connection that drops.
    The request was sent in every case, so none of them proves anything."""
    limit = MAX_REPLY_BYTES
    status = response.status_code
    declared = (response.headers.get("Content-Length") or "").strip()
    problem = ""
    if declared.isdigit() and (len(declared) > 15 or int(declared) > limit):
        problem = "large"
    chunks: list[bytes] = []
    cut = _Cut(deadline, response)
    if not problem:
        _WATCHDOG.watch(cut)
        size = 0
        try:
            for chunk in response.iter_content(_READ_CHUNK_BYTES):
                size += len(chunk)
                if size > limit:
                    problem = "large"
                    break
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    problem = "late"
                    break
        except requests.exceptions.ContentDecodingError:
            problem = "undecodable"
        except Exception as exc:  # the connection dropped, or was cut at the deadline
            problem = "dropped"
            log.info("reading the reply to POST %s failed (%s)", path, type(exc).__name__)
        finally:
            cut.finish()
        if cut.fired:
            problem = "late"  # cut mid-reply: what was read may end anywhere
    if not problem:
        response._content = b"".join(chunks)
        return
    response.close()  # never back to the pool half read
    log.warning("POST %s: reply not read (%s) reference=%s", path, problem, reference)
    maybe = "the request may or may not have been processed"
    if problem == "late":
        message = (
            f"{NO_ANSWER} in time: its reply was still arriving {allowed:.0f} s after the call "
            f"began, so it was cut off; {maybe}"
        )
    elif problem == "large":
        message = (
            f"EnKash's reply was larger than {limit // (1024 * 1024)} MB, so it was not read; "
            f"{maybe}"
        )
    elif problem == "undecodable":
        message = (
            "EnKash's reply could not be read (it is marked as compressed but does not "
            f"decompress); {maybe}"
        )
    else:
        message = f"{NO_ANSWER} after the request was sent (connection dropped); {maybe}"
    raise OutcomeUnknown(message, http_status=status, reference=reference)


# --- helpers ------------------------------------------------------------------------------------


def _never_reached(exc: requests.exceptions.RequestException) -> bool:
    """True only for failures that happen before any byte of the request is sent.

    A connect timeout, a refused connection and a DNS failure qualify. A ``ConnectionError``
    raised later (the peer closed the connection, "Connection aborted", a TLS or proxy error)
    may follow a request EnKash received, so it does not.
    """
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.SSLError | requests.exceptions.ProxyError):
        return False
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    # NewConnectionError (refused, DNS via NameResolutionError) subclasses ConnectTimeoutError.
    return isinstance(reason, NewConnectionError | ConnectTimeoutError)


def _transport_reason(exc: requests.exceptions.RequestException) -> str:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read timeout"
    if _never_reached(exc):
        return "connection refused or host not found"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    return "connection dropped"


#: How the reason an unreadable reply gives begins when the reply may have said anything, success
#: included (a key given twice): even an HTTP refusal status does not settle it.
_AMBIGUOUS = "ambiguous: "


def _codes(envelope: dict[str, Any]) -> list[Any]:
    return [envelope[key] for key in ("code", "response_code") if key in envelope]


def _code_meaning(code: Any) -> str:
    """``success`` (the documented 0), ``refusal`` (a failure code, such as 1 or
    ``INSUFFICIENT_BALANCE``) or ``unknown``: ``null``, ``true``, a fraction, a code spelled
    like success that is not 0 (``"00"``, ``"SUCCESS"``, ``200``).
    """
    if code is None or isinstance(code, bool):
        return "unknown"
    if isinstance(code, int | Decimal):
        number = Decimal(code)
        if not number.is_finite():
            return "unknown"
        if number == 0:
            return "success"
        if number != number.to_integral_value() or 200 <= number < 300:
            return "unknown"
        return "refusal"
    if isinstance(code, str):
        text = code.strip()
        if text == "0":
            return "success"
        if not text or text.upper() in _SUCCESS_WORDS:
            return "unknown"
        digits = text.isascii() and text.isdigit()
        if digits and (not text.strip("0") or (len(text) == 3 and text.startswith("2"))):
            return "unknown"  # "00", "200": success in another spelling, or HTTP's
        return "refusal"
    return "unknown"


def _claims_success(envelope: dict[str, Any], reference: str | None) -> bool:
    """Whether a reply also reads as a success: its message or status says so, or its payload
    carries this reference or a transaction id (a refusal's payload is a plain sentence)."""
    for key in ("response_message", "message", "status"):
        value = envelope.get(key)
        if isinstance(value, str) and value.strip().rstrip(".!").upper() in _SUCCESS_WORDS:
            return True
    payload = envelope.get("payload")
    if isinstance(payload, dict):
        if reference and _text(payload.get("pgReferenceNumber")) == reference:
            return True
        if payload.get("enkashCardTxnId"):
            return True
    return False


def _code(code: Any) -> int | str | None:
    if code is None or isinstance(code, int | str):
        return code
    return str(code)


def _refusal_message(envelope: dict[str, Any] | None) -> str:
    """EnKash's own words for a refusal: redacted, then shortened (a secret cut in two by the
    shortening would no longer be recognised)."""
    if not envelope:
        return ""
    for key in ("response_message", "message", "error_description", "error"):
        value = envelope.get(key)
        if isinstance(value, str) and value.strip() and value.strip().lower() != "success":
            return _short(redact(value))
    payload = envelope.get("payload")
    return _short(redact(payload)) if isinstance(payload, str) else ""


def _text(value: Any) -> str:
    """A value of a reply as text, as given (compare with it; ``_field`` to keep or show it)."""
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**40:
        return ""  # no identifier is a number this long; str() of a huge int is slow
    return str(value).strip()


def _field(value: Any, limit: int = MAX_FIELD_LENGTH) -> str:
    """A text field of a reply as it may be kept or shown: redacted (a field may echo a secret),
    without control characters, on one line, then shortened to ``limit``."""
    text = redact(_text(value))
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text):
        text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cs"))
    return _clip(" ".join(text.split()), limit)


def _label(value: Any) -> str:
    """``cardStatus``/``kycStatus`` are ``{name, label}``; prefer the label, accept plain text."""
    if isinstance(value, dict):
        return _field(value.get("label"), 60) or _field(value.get("name"), 60)
    return _field(value, 60)


def _decimal(value: Any) -> Decimal | None:
    """A number of a reply (points, a count, seconds), or ``None`` when it is not one within
    ``MAX_REPLY_NUMBER``: ``1e1000000`` is not a reading of anything, and is never turned into
    an ``int`` (which alone would take a minute)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value) if abs(value) < MAX_REPLY_NUMBER else None
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str | float):
        text = str(value).strip().replace(",", "")
        if not text or len(text) > _MAX_NUMBER_TEXT:
            return None
        try:
            amount = Decimal(text)
        except (InvalidOperation, ValueError):
            return None
    else:
        return None
    if not amount.is_finite() or amount.copy_abs() >= MAX_REPLY_NUMBER:
        return None
    return amount


# A card balance beyond this is not a balance (and would not fit the ledger's integer cents).
MAX_BALANCE = Decimal(10) ** 13
_CENT = Decimal("0.01")
_PLAIN_AMOUNT = re.compile(r"-?\d{1,20}(?:\.\d{1,2})?")


def _shown(value: Any, limit: int = 60) -> str:
    """A value EnKash sent, quoted for an audit note: redacted, then clipped, control characters
    escaped."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**100:
        text = f"a number of {value.bit_length()} bits"
    elif isinstance(value, int | Decimal) and not isinstance(value, bool):
        text = str(value)
    else:
        try:
            text = json.dumps(value, default=str)
        except (ValueError, RecursionError):
            text = type(value).__name__
    text = redact(text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    visible = "".join(
        f"\\x{ord(ch):02x}" if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text
    )
    return f"'{visible}'"


def _balance(value: Any, notes: list[str]) -> Decimal | None:
    """A card balance kept exactly: a number (or plain decimal text) with at most 2 decimals.

    Anything else (3 decimals, grouping commas, words, an absurd size) is recorded as unknown
    (``None``) and named in ``notes``; a missing balance is simply unknown.
    """
    if value is None:
        return None
    amount: Decimal | None = None
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        amount = Decimal(value)
    elif isinstance(value, str) and _PLAIN_AMOUNT.fullmatch(value.strip()):
        amount = Decimal(value.strip())
    if (
        amount is not None
        and amount.is_finite()
        and amount.copy_abs() < MAX_BALANCE
        and amount == amount.quantize(_CENT)
    ):
        return amount.quantize(_CENT)
    notes.append(f"EnKash reported balance {_shown(value)}, not stored as a number")
    return None


def _reported_card_id(value: Any, notes: list[str]) -> str | None:
    """EnKash's ``enKashCardId`` when it is a card id (letters and digits); else ``None``."""
    text = _text(value)
    if not text:
        return None
    try:
        return parse_card_id(text)
    except ValueError:
        notes.append(f"EnKash reported card id {_shown(text)}, not a valid card id; not stored")
        return None


def _reported_id(value: Any, what: str, notes: list[str]) -> str:
    """An EnKash transaction id when it is shaped like one (letters, digits, ``.``, ``_``, ``-``;
    at most 300) and holds no secret; otherwise ``""``, named in ``notes`` (redacted first)."""
    text = _text(value)
    if not text:
        return ""
    if _TRANSACTION_ID.fullmatch(text) and redact(text) == text:
        return text
    notes.append(f"EnKash reported {what} {_shown(text)}, not shaped like one; not stored")
    return ""


def _int(value: Any) -> int:
    amount = _decimal(value)
    return int(amount) if amount is not None else 0


def _lifetime(value: Any) -> float:
    seconds = _decimal(value)
    if seconds is None or seconds <= 0:
        return DEFAULT_TOKEN_LIFETIME_SECONDS
    return float(seconds)


def _national(mobile: str) -> str:
    """The last ten digits of a mobile number, however EnKash or the user wrote it."""
    return "".join(ch for ch in mobile if ch.isdigit())[-10:]


def _listing(payload: Any, what: str, reference: str | None = None) -> list[dict[str, Any]]:
    """The rows of a list reply: a list, or a dict holding one under a known key (or a single
    record, unwrapped). ``OutcomeUnknown`` unless the listing is whole and well-formed: exactly
    one list, every row an object, and as many rows as its ``recordsCount`` says, when it says.
    A listing that is partial or contradicts itself proves nothing, absence least of all."""

    def unproved(problem: str) -> OutcomeUnknown:
        return OutcomeUnknown(
            f"EnKash's {what} reply {problem}, so it proves nothing", reference=reference
        )

    rows: Any = None
    count: Any = None
    if isinstance(payload, list):
        rows = payload
    elif isinstance(payload, dict):
        lists = [key for key in _LOOKUP_LIST_KEYS if isinstance(payload.get(key), list)]
        if len(lists) > 1:
            raise unproved(f"holds several listings ({', '.join(lists)})")
        count = payload.get("recordsCount")
        if lists:
            rows = payload[lists[0]]
        elif "pgReferenceNumber" in payload or "enKashCardId" in payload:
            rows, count = [payload], None  # a single record, unwrapped
        elif count is not None and _decimal(count) == 0:
            rows = []
    if rows is None:
        raise unproved("was not understood")
    if not all(isinstance(row, dict) for row in rows):
        raise unproved("lists rows that are not records")
    if count is not None:
        counted = _decimal(count)
        if counted is None or counted != len(rows):
            raise unproved(
                f"says it has {_shown(count)} records but lists {len(rows)}"
                if counted is not None
                else f"has a recordsCount of {_shown(count)}"
            )
    return rows


def _malformed_holder(row: dict[str, Any], card: str) -> str:
    """What makes a user search row unusable for matching (``""`` when nothing does)."""
    try:
        parse_card_id(card)
    except ValueError:
        return f"card id {_shown(card)}"
    if not card:
        return "no card id"
    email, mobile = row.get("email"), row.get("mobile")
    if email is not None and not isinstance(email, str):
        return f"email {_shown(email)}"
    if mobile is not None and (
        isinstance(mobile, bool | dict | list) or not isinstance(mobile, str | int)
    ):
        return f"mobile {_shown(mobile)}"
    return ""


def _differences(
    row: dict[str, Any],
    card_id: str | None,
    amount: Decimal | None,
    transaction_type: str | None,
) -> list[str]:
    """How a lookup row of this reference differs from what was sent (in words; [] if not)."""
    found: list[str] = []
    if amount is not None:
        key = next((k for k in ("amount", "loadAmount", "transactionAmount") if k in row), None)
        if key is not None:
            reported = _decimal(row.get(key))
            # A listing may sign a debit's amount (-100 for a debit of 100); nothing else.
            debit = (transaction_type or "").upper() == "DR"
            if reported is None or (reported != amount and not (debit and reported == -amount)):
                found.append(f"amount {_shown(row.get(key), 30)}, sent {amount}")
    if transaction_type:
        key = next((k for k in ("cardTransactionType", "transactionType") if k in row), None)
        if key is not None and _text(row.get(key)).upper() != transaction_type.upper():
            found.append(f"type {_shown(row.get(key), 30)}, sent {transaction_type}")
    if card_id:
        value = row.get("enKashCardId", row.get("enkashCardId"))
        if value is not None:
            try:
                reported_card = parse_card_id(_text(value))
            except ValueError:
                reported_card = None
            if reported_card != card_id.upper():
                found.append(f"card {_shown(value, 30)}, sent {card_id}")
    return found


def _moment(value: Any) -> datetime | None:
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value) / 1000, tz=UTC)  # epoch milliseconds
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        try:
            return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _transaction_record(reference: str, row: dict[str, Any]) -> TransactionRecord:
    amount = None
    for key in ("amount", "loadAmount", "transactionAmount"):
        amount = _decimal(row.get(key))
        if amount is not None:
            break
    notes: list[str] = []
    transaction_id = row.get("enkashCardTxnId") or row.get("enKashTransactionId")
    card_id = _reported_card_id(row.get("enKashCardId") or row.get("enkashCardId"), notes)
    return TransactionRecord(
        reference=reference,
        transaction_id=_reported_id(transaction_id, "transaction id", notes),
        card_id=card_id or "",
        transaction_type=_field(row.get("cardTransactionType") or row.get("transactionType"), 20),
        # The record's existence is what settles an unknown outcome; an amount EnKash omits is
        # shown as 0 rather than turning a proven "found" into an error.
        amount=amount if amount is not None else Decimal("0"),
        balance_after=_balance(row.get("otbBalance"), notes),
        status=_field(row.get("status"), 60),
        happened_at=_moment(row.get("txnDate")),
        notes=tuple(notes),
    )
