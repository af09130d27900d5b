"""The sandbox's HTTP face: a Starlette app modelling EnKash's reward API as ENKASH_API.md has it.

Strict on purpose, so a client that is wrong fails here first. Status codes and the ones chosen
where the documentation is silent (**assumed**):

``POST /oauth/token`` (form-encoded; replies in the OAuth style ``{"error", "error_description"}``)
  - 400 ``invalid_request``: not ``application/x-www-form-urlencoded``, or a required field missing;
    400 ``unsupported_grant_type`` for anything but ``password`` / ``refresh_token``.
  - 401 ``invalid_client``: Basic header missing/wrong, or body ``clientId`` != the Basic client id.
  - 401 ``invalid_grant``: wrong username/password (counts towards the lockout), unknown/expired
    refresh token (does not count), and "User account is locked" after three consecutive failed
    password logins, for every later login and refresh, until ``store.reset()``.
    With ``knobs.echo_login_errors`` a refused password login's ``error_description`` quotes the
    request, password and Authorization header included (a careless server, for leak tests).
  - Success: ``access_token``, ``token_type: "bearer"``, ``refresh_token``, ``expires_in`` (int
    seconds = ``knobs.token_lifetime_seconds``), ``scope``. A refresh token works once.

API calls under ``/api/v0/partner/enKashCard/`` (checked in this order)
  - 401 ``{"error": "invalid_token", ...}``: Bearer token missing, unknown or expired.
  - 422 failure envelope "Card account not linked to this partner": ``partnerId`` header missing
    or different.
  - 415 failure envelope: ``Content-Type`` is not ``application/json``.
  - 413 for a body over 64 KiB; 400 for a body that is not a JSON object (or, with
    ``knobs.encrypt``, not a decryptable ``{"request": "<base64>"}``).
  - 422 "Company id is missing" / "Company not linked to this partner" for ``companyId``;
    400 when ``cardAccountId`` is missing, 404 "Card account not found" when it is wrong.
  - Error replies are failure envelopes with the HTTP status; once a request has decrypted, every
    reply to it is encrypted too (errors before that point are plain JSON).

Allocate (``/points/allocate`` and the older ``/create-allocate-points``)
  - 400: ``transactionCode`` != ``ALLOCATION``; ``transactionType``/``type`` not CR+ALLOCATE_POINT
    or DR+UNALLOCATE_POINT; ``loadAmount`` not a JSON number, not > 0, more than 2 decimals, or
    1e12 or more; reference missing (``uniqueReferenceNumber``, or ``uniqueReferenceNum``; both
    given and different is 400), over 100 characters; ``mobile`` not a string of exactly 10
    digits; ``email`` without ``@``; ``title`` not Mr/Mrs/Ms; ``gender`` not M/F; a CR for a new
    card without email, mobile, title, firstName, gender (the message names the missing ones).
    Empty strings count as absent. Unknown fields are ignored.
  - 200 ``response_code: 1``: "Insufficient balance in card account" (pool), "Insufficient
    balance in card" (debit), "Card not found" (DR for an unknown card, or an unknown
    ``enkashCardId``), "Duplicate uniqueReferenceNumber" (reused reference, different fields),
    "Email and mobile belong to different cards".
  - 422 "KYC under review": the card's email contains ``kyc-pending`` (a demo hook).

Transaction lookup (``/transaction/all``), payload **assumed** (the portal shows none):
  ``{"recordsCount": n, "data": [{"enkashCardTxnId", "pgReferenceNumber", "enKashCardId",
  "cardTransactionType", "amount", "otbBalance", "status": "SUCCESS", "txnDate", "email",
  "mobile", "firstName"}]}``, oldest first, only committed transactions (refusals are never
  listed, so a ``status`` filter other than ``SUCCESS`` finds nothing). Filters: ``enKashCardId``,
  ``pgReferenceNumber``, ``pgReferenceNumbers[]``, ``enKashTransactionIds[]``,
  ``cardTransactionType`` (CR/DR), ``amountFrom``/``amountTo`` (numbers, inclusive),
  ``txnDateFrom``/``txnDateTo`` (ISO-8601; no zone means UTC; a plain date as ``txnDateTo``
  includes that whole day), ``status``. A filter of the wrong type is 400.

User search (``/search``): ``{"recordsCount", "data": [{"enKashCardId", "userId", "email",
  "mobile", "title", "firstName", "gender", "otbBalance", "cardStatus", "kycStatus", "binType",
  "cardActivated"}]}`` filtered by ``enKashCardId`` / ``email`` (case-insensitive) / ``mobile``.

Faults (``Knobs``): one random draw per API call picks at most one fault (the rates are
cumulative, so they should sum to at most 1). ``latency_ms`` and ``fail_before_commit_rate`` apply
to every API call; the others only to allocate. Neither touches ``/oauth/token`` or ``/_sandbox/``.
Fault replies (503, 500, 504) are plain JSON ``{"error": ...}``, never encrypted.
``refuse_with`` (text) refuses every allocate with that message, as a business refusal.
``next_fault`` (one of ``SCRIPTED_FAULTS``) with ``next_fault_calls`` = N scripts a fault for the
next N allocate calls, whatever the rates (a demo of a bad day): ``timeout_after_commit`` commits
and answers 504 at once, as a gateway that gave up; ``refusal`` refuses (nothing committed);
``malformed`` commits and answers a truncated body; ``wrong_reference`` commits and echoes another
reference. Each allocate call takes one (under a lock) until the counter reaches 0.

Admin (sandbox only): ``GET /_sandbox/health`` (open), ``GET /_sandbox/stats``, ``GET|POST
/_sandbox/knobs``, ``POST /_sandbox/reset``. All but health need the header ``X-Sandbox-Token``
with the per-run control token (random at start; ``SandboxServer.control_token``), compared in
constant time (403 without it); the POSTs also need ``Content-Type: application/json`` (415). So
another web page open in the same browser cannot turn faults on or wipe the state: its
``text/plain`` form POST carries neither, and it cannot add them without a CORS preflight.
The stats count token requests by grant and outcome (``token_requests``), so a test or
benchmark can see how many sign-ins a client made; ``allocate_window`` gives the epoch seconds
of the first allocate request's arrival and the last one's reply (throughput as EnKash sees it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hmac
import json
import random
import re
import secrets
import string
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .crypto import decrypt_text, encrypt_text
from .store import (
    BIN_TYPE,
    CARD_STATUS,
    CENT,
    KYC_VERIFIED,
    AllocationRequest,
    NeedsFields,
    Outcome,
    SandboxIdentity,
    SandboxStore,
    iso_utc,
    to_json,
)

API_PREFIX = "/api/v0/partner/enKashCard"
ALLOCATE_PATHS = (f"{API_PREFIX}/points/allocate", f"{API_PREFIX}/create-allocate-points")
ENVELOPES = ("documented", "code", "response_code")
MAX_BODY_BYTES = 64 * 1024
MAX_AMOUNT = Decimal("1e12")
MAX_REFERENCE_LENGTH = 100
MAX_REFUSAL_LENGTH = 500
FAULTS = (
    "fail_before_commit",
    "hang_before_commit",
    "error_after_commit",
    "drop_after_commit",
    "malformed",
    "wrong_reference",
)
SCRIPTED_FAULTS = ("timeout_after_commit", "refusal", "malformed", "wrong_reference")
MAX_SCRIPTED_CALLS = 10_000
SCRIPTED_REFUSAL = "Refused by the sandbox (a scripted demo fault); nothing was credited or debited"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_MOBILE = re.compile(r"^[0-9]{10}$")
CONTROL_HEADER = "X-Sandbox-Token"
_MALFORMED_BODY = b'{"code":0,"message":"Success","payload":{"enKashCardId":"EKC'


@dataclass
class Knobs:
    """Runtime behaviour of the sandbox, read per request (plain attribute reads)."""

    latency_ms: float = 0
    fail_before_commit_rate: float = 0
    error_after_commit_rate: float = 0
    drop_after_commit_rate: float = 0
    drop_hang_seconds: float = 30
    hang_before_commit_rate: float = 0
    malformed_rate: float = 0
    wrong_reference_rate: float = 0
    token_lifetime_seconds: float = 300
    envelope: str = "documented"
    encrypt: bool = False
    seed: int | None = None
    # A careless server: a refused password sign-in's ``error_description`` quotes the request
    # (username, password, the form as sent, the Authorization header). Tests use it to prove the
    # client never stores or shows what such a reply echoes.
    echo_login_errors: bool = False
    # When set, every allocate is refused (HTTP 200, nothing committed) with this message: what
    # EnKash says is shown to people, so tests can make it say anything.
    refuse_with: str = ""
    # Odd replies EnKash might send, for tests: fields merged into every successful allocate
    # reply's payload (e.g. {"otbBalance": "92,415.44"}), and into every refused allocate reply's
    # envelope (e.g. {"response_code": "<a 100-character code>"}). The store is unchanged.
    reply_payload: dict[str, Any] = dataclasses.field(default_factory=dict)
    refusal_envelope: dict[str, Any] = dataclasses.field(default_factory=dict)
    # A scripted fault for the next ``next_fault_calls`` allocate calls (one of SCRIPTED_FAULTS,
    # or "" for none), taken before the random draw: a demo turns a bad day on and off.
    next_fault: str = ""
    next_fault_calls: int = 0


class _Stop(Exception):
    """Abort the request with a ready response (plain, never encrypted)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class _Refuse(Exception):
    """Abort the request with a failure envelope (encrypted when the request was)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _oauth_error(status: int, error: str, description: str) -> _Stop:
    headers = {"WWW-Authenticate": "Basic"} if error == "invalid_client" else None
    body = {"error": error, "error_description": description}
    return _Stop(JSONResponse(body, status_code=status, headers=headers))


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Refuse(400, f"{name} must be a string")
    value = value.strip()
    return value or None


def _amount(value: Any, name: str) -> Decimal:
    """A JSON number (never a string or boolean) as a Decimal with at most two places."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise _Refuse(400, f"{name} must be a number")
    amount = Decimal(value)
    if not amount.is_finite() or amount <= 0:
        raise _Refuse(400, f"{name} must be greater than 0")
    if amount >= MAX_AMOUNT:
        raise _Refuse(400, f"{name} is too large")
    if amount != amount.quantize(CENT):
        raise _Refuse(400, f"{name} may have at most 2 decimals")
    return amount.quantize(CENT)


def parse_allocation(body: dict[str, Any]) -> AllocationRequest:
    """Validate an allocate body (account fields already checked) into an ``AllocationRequest``."""
    if body.get("transactionCode") != "ALLOCATION":
        raise _Refuse(400, "transactionCode must be ALLOCATION")
    txn_type, kind = body.get("transactionType"), body.get("type")
    if (txn_type, kind) not in (("CR", "ALLOCATE_POINT"), ("DR", "UNALLOCATE_POINT")):
        raise _Refuse(400, "transactionType/type must be CR/ALLOCATE_POINT or DR/UNALLOCATE_POINT")
    if "loadAmount" not in body:
        raise _Refuse(400, "loadAmount is required")
    amount = _amount(body["loadAmount"], "loadAmount")

    long_ref = _optional_text(body, "uniqueReferenceNumber")
    short_ref = _optional_text(body, "uniqueReferenceNum")
    if long_ref and short_ref and long_ref != short_ref:
        raise _Refuse(400, "uniqueReferenceNumber and uniqueReferenceNum differ")
    reference = long_ref or short_ref
    if reference is None:
        raise _Refuse(400, "uniqueReferenceNumber is required")
    if len(reference) > MAX_REFERENCE_LENGTH:
        raise _Refuse(400, f"uniqueReferenceNumber is longer than {MAX_REFERENCE_LENGTH}")

    card_id = _optional_text(body, "enkashCardId")
    email = _optional_text(body, "email")
    if email is not None and not _EMAIL.match(email):
        raise _Refuse(400, "email is not valid")
    mobile = _optional_text(body, "mobile")
    if mobile is not None and not _MOBILE.match(mobile):
        raise _Refuse(400, "mobile must be exactly 10 digits")
    title = _optional_text(body, "title")
    if title is not None and title not in ("Mr", "Mrs", "Ms"):
        raise _Refuse(400, "title must be Mr, Mrs or Ms")
    gender = _optional_text(body, "gender")
    if gender is not None and gender not in ("M", "F"):
        raise _Refuse(400, "gender must be M or F")
    first_name = _optional_text(body, "firstName")

    canonical_fields = {
        "companyId": body.get("companyId"),
        "cardAccountId": body.get("cardAccountId"),
        "transactionCode": "ALLOCATION",
        "transactionType": txn_type,
        "type": kind,
        "loadAmount": format(amount, "f"),
        "enkashCardId": card_id,
        "email": email.lower() if email else None,
        "mobile": mobile,
        "title": title,
        "firstName": first_name,
        "gender": gender,
    }
    canonical = json.dumps(
        {k: v for k, v in canonical_fields.items() if v is not None}, sort_keys=True
    )
    return AllocationRequest(
        reference=reference,
        transaction_type=txn_type,
        amount=amount,
        card_id=card_id,
        email=email,
        mobile=mobile,
        title=title,
        first_name=first_name,
        gender=gender,
        canonical=canonical,
    )


def _parse_moment(value: Any, name: str, *, end_of_day: bool) -> str:
    if not isinstance(value, str):
        raise _Refuse(400, f"{name} must be an ISO-8601 string")
    text = value.strip()
    try:
        if len(text) == 10:  # a plain date
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time.min, tzinfo=UTC)
            if end_of_day:
                moment += timedelta(days=1) - timedelta(milliseconds=1)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError as exc:
        raise _Refuse(400, f"{name} must be an ISO-8601 date or date-time") from exc
    return iso_utc(moment)


def _text_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Refuse(400, f"{name} must be a list of strings")
    return value


class _Sandbox:
    """Request handlers bound to one identity, store and set of knobs."""

    def __init__(
        self, identity: SandboxIdentity, store: SandboxStore, knobs: Knobs, control_token: str
    ) -> None:
        self.identity = identity
        self.store = store
        self.knobs = knobs
        self.control_token = control_token
        self.stopping = threading.Event()  # set by the server: cut hangs short on shutdown
        self._rng_lock = threading.Lock()
        self._rng_seed = knobs.seed
        self._rng = random.Random(knobs.seed)

    # -- faults ------------------------------------------------------------------------------

    def _draw_fault(self) -> str | None:
        knobs = self.knobs
        rates = (
            knobs.fail_before_commit_rate,
            knobs.hang_before_commit_rate,
            knobs.error_after_commit_rate,
            knobs.drop_after_commit_rate,
            knobs.malformed_rate,
            knobs.wrong_reference_rate,
        )
        if not any(rates):
            return None
        with self._rng_lock:
            if knobs.seed != self._rng_seed:
                self._rng_seed = knobs.seed
                self._rng = random.Random(knobs.seed)
            draw = self._rng.random()
        threshold = 0.0
        for fault, rate in zip(FAULTS, rates, strict=True):
            threshold += rate
            if draw < threshold:
                return fault
        return None

    def _take_scripted_fault(self) -> str | None:
        """The scripted fault for this allocate call, if any calls are left (one per call)."""
        knobs = self.knobs
        with self._rng_lock:
            if not knobs.next_fault or knobs.next_fault_calls <= 0:
                return None
            knobs.next_fault_calls -= 1
            return knobs.next_fault

    def reseed(self) -> None:
        with self._rng_lock:
            self._rng_seed = self.knobs.seed
            self._rng = random.Random(self.knobs.seed)

    async def _hang(self) -> None:
        """Sleep ``drop_hang_seconds`` (in small steps, so a shutdown is not held up)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.knobs.drop_hang_seconds
        while not self.stopping.is_set():
            left = deadline - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))

    # -- replies ---------------------------------------------------------------------------------

    def _envelope(self, ok: bool, payload: Any = None, message: str | None = None) -> dict:
        style = self.knobs.envelope
        if ok:
            if style == "response_code":
                return {"response_code": 0, "response_message": "Success", "payload": payload}
            return {"code": 0, "message": "Success", "payload": payload}
        if style == "code":
            return {"code": 1, "message": message, "payload": message}
        return {"response_code": 1, "response_message": message, "payload": message}

    def _reply(self, status: int, envelope: dict, encrypted: bool) -> Response:
        text = to_json(envelope)
        if encrypted:
            text = json.dumps({"request": encrypt_text(text, self.identity.client_secret)})
        return Response(text, status_code=status, media_type="application/json")

    def _refusal(self, status: int, message: str, encrypted: bool) -> Response:
        return self._reply(status, self._envelope(False, message=message), encrypted)

    # -- /oauth/token ----------------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        try:
            response = await self._token(request)
        except _Stop as stop:
            response = stop.response
        self.store.note_token_request(await _grant_type(request), response.status_code == 200)
        return response

    async def _token(self, request: Request) -> Response:
        identity = self.identity
        if _media_type(request) != "application/x-www-form-urlencoded":
            raise _oauth_error(
                400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
            )
        basic = self._basic_client(request.headers.get("authorization", ""))
        if basic is None or not (
            hmac.compare_digest(basic[0].encode(), identity.client_id.encode())
            and hmac.compare_digest(basic[1].encode(), identity.client_secret.encode())
        ):
            raise _oauth_error(401, "invalid_client", "Bad client credentials")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise _oauth_error(400, "invalid_request", "Request body too large")
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError as exc:
            raise _oauth_error(400, "invalid_request", "Body is not UTF-8") from exc
        field = {name: values[0] for name, values in form.items()}
        client_id = field.get("clientId")
        if client_id is not None and client_id != identity.client_id:
            raise _oauth_error(401, "invalid_client", "clientId does not match the client")

        grant = field.get("grant_type")
        if grant == "password":
            missing = [n for n in ("username", "password", "clientId") if not field.get(n)]
            if missing:
                raise _oauth_error(400, "invalid_request", "Missing " + ", ".join(missing))
            credentials_ok = hmac.compare_digest(
                field["username"].encode(), identity.username.encode()
            ) & hmac.compare_digest(field["password"].encode(), identity.password.encode())
            result = self.store.record_login(credentials_ok)
            if result == "locked":
                raise _oauth_error(401, "invalid_grant", "User account is locked")
            if result == "bad":
                if self.knobs.echo_login_errors:
                    raise _oauth_error(
                        401,
                        "invalid_grant",
                        f"Bad credentials for {field['username']} / {field['password']} "
                        f"(request {body.decode('utf-8')!r}, Authorization: "
                        f"{request.headers.get('authorization', '')})",
                    )
                raise _oauth_error(401, "invalid_grant", "Bad credentials")
        elif grant == "refresh_token":
            if self.store.is_locked():
                raise _oauth_error(401, "invalid_grant", "User account is locked")
            refresh = field.get("refresh_token")
            if not refresh:
                raise _oauth_error(400, "invalid_request", "Missing refresh_token")
            if not self.store.redeem_refresh_token(refresh):
                raise _oauth_error(401, "invalid_grant", "Invalid refresh token")
        else:
            raise _oauth_error(400, "unsupported_grant_type", "Use password or refresh_token")

        lifetime = self.knobs.token_lifetime_seconds
        access, refresh_token = self.store.issue_tokens(lifetime)
        return JSONResponse(
            {
                "access_token": access,
                "token_type": "bearer",
                "refresh_token": refresh_token,
                "expires_in": int(lifetime),
                "scope": "read write",
            },
            headers={"Cache-Control": "no-store"},
        )

    @staticmethod
    def _basic_client(header: str) -> tuple[str, str] | None:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        client_id, sep, secret = decoded.partition(":")
        return (client_id, secret) if sep else None

    # -- API calls ---------------------------------------------------------------------------

    def api(
        self,
        handler: Callable[[dict[str, Any], str | None, bool], Awaitable[Response]],
        *,
        allocate: bool = False,
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler with latency, faults, authentication, headers and the body envelope."""

        async def endpoint(request: Request) -> Response:
            if not allocate:
                return await answer(request)
            self.store.note_allocate_request()
            try:
                return await answer(request)
            finally:
                self.store.note_allocate_reply()

        async def answer(request: Request) -> Response:
            encrypted = self.knobs.encrypt  # one decision per request
            fault = (self._take_scripted_fault() if allocate else None) or self._draw_fault()
            if self.knobs.latency_ms > 0:
                await asyncio.sleep(self.knobs.latency_ms / 1000)
            if fault == "fail_before_commit":
                return JSONResponse({"error": "service_unavailable"}, status_code=503)
            try:
                body = await self._authorise_and_read(request, encrypted)
                try:
                    self._check_account(body)
                    return await handler(body, fault, encrypted)
                except _Refuse as refuse:
                    return self._refusal(refuse.status, refuse.message, encrypted)
            except _Stop as stop:
                return stop.response

        return endpoint

    async def _authorise_and_read(self, request: Request, encrypted: bool) -> dict[str, Any]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.store.access_token_valid(token.strip()):
            raise _Stop(
                JSONResponse(
                    {"error": "invalid_token", "error_description": "Access token missing/expired"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            )
        partner = request.headers.get("partnerid")
        if partner is None or not hmac.compare_digest(
            partner.encode(), self.identity.partner_id.encode()
        ):
            raise _Stop(self._refusal(422, "Card account not linked to this partner", False))
        if _media_type(request) != "application/json":
            raise _Stop(self._refusal(415, "Content-Type must be application/json", False))
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise _Stop(self._refusal(413, "Request body too large", False))
        body = self._json_object(raw)
        if encrypted:
            cipher = body.get("request")
            if set(body) != {"request"} or not isinstance(cipher, str):
                raise _Stop(self._refusal(400, "Encrypted request required", False))
            try:
                plain = decrypt_text(cipher, self.identity.client_secret)
            except ValueError as exc:
                raise _Stop(self._refusal(400, "Request does not decrypt", False)) from exc
            body = self._json_object(plain.encode("utf-8"))
        return body

    def _json_object(self, raw: bytes) -> dict[str, Any]:
        def no_constants(name: str) -> Any:
            raise ValueError(f"{name} is not JSON")

        try:
            body = json.loads(raw, parse_float=Decimal, parse_constant=no_constants)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise _Stop(self._refusal(400, "Request body is not valid JSON", False)) from exc
        if not isinstance(body, dict):
            raise _Stop(self._refusal(400, "Request body must be a JSON object", False))
        return body

    def _check_account(self, body: dict[str, Any]) -> None:
        company = body.get("companyId")
        if company in (None, ""):
            raise _Refuse(422, "Company id is missing")
        if company != self.identity.company_id:
            raise _Refuse(422, "Company not linked to this partner")
        account = body.get("cardAccountId")
        if account in (None, ""):
            raise _Refuse(400, "cardAccountId is required")
        if account != self.identity.card_account_id:
            raise _Refuse(404, "Card account not found")

    async def allocate(self, body: dict[str, Any], fault: str | None, encrypted: bool) -> Response:
        allocation = parse_allocation(body)
        if self.knobs.refuse_with:
            raise _Refuse(200, self.knobs.refuse_with)
        if fault == "refusal":
            raise _Refuse(200, SCRIPTED_REFUSAL)
        if fault == "hang_before_commit":
            await self._hang()
            return JSONResponse({"error": "gateway_timeout"}, status_code=504)
        try:
            outcome = self.store.allocate(allocation)
        except NeedsFields as exc:
            raise _Refuse(400, str(exc)) from exc
        if fault == "error_after_commit":
            return JSONResponse({"error": "internal_server_error"}, status_code=500)
        if fault == "timeout_after_commit":
            return JSONResponse({"error": "gateway_timeout"}, status_code=504)
        if fault == "drop_after_commit":
            await self._hang()
            return JSONResponse({"error": "gateway_timeout"}, status_code=504)
        if fault == "malformed":
            return Response(_MALFORMED_BODY, status_code=200, media_type="application/json")
        return self._outcome_reply(outcome, encrypted, wrong_reference=fault == "wrong_reference")

    def _outcome_reply(
        self, outcome: Outcome, encrypted: bool, *, wrong_reference: bool
    ) -> Response:
        if not outcome.ok:
            envelope = self._envelope(False, message=outcome.message or "")
            envelope.update(self.knobs.refusal_envelope)
            return self._reply(outcome.http_status, envelope, encrypted)
        payload = dict(outcome.payload or {})
        payload.update(self.knobs.reply_payload)
        if wrong_reference:
            alphabet = string.ascii_uppercase + string.digits
            payload["pgReferenceNumber"] = "SBX" + "".join(
                secrets.choice(alphabet) for _ in range(12)
            )
        return self._reply(outcome.http_status, self._envelope(True, payload), encrypted)

    async def account(self, body: dict[str, Any], fault: str | None, encrypted: bool) -> Response:
        payload = self.store.account_summary()
        payload.update(
            {
                "creditLimit": Decimal(0),
                "usedCreditLimit": Decimal(0),
                "companyName": self.identity.company_name,
                "cardAccountId": self.identity.card_account_id,
                "companyId": self.identity.company_id,
            }
        )
        return self._reply(200, self._envelope(True, payload), encrypted)

    async def transactions(
        self, body: dict[str, Any], fault: str | None, encrypted: bool
    ) -> Response:
        filters: dict[str, Any] = {}
        card_id = _optional_text(body, "enKashCardId")
        if card_id is not None:
            filters["card_id"] = card_id
        references: list[str] | None = None
        single = _optional_text(body, "pgReferenceNumber")
        if single is not None:
            references = [single]
        if body.get("pgReferenceNumbers") is not None:
            many = _text_list(body["pgReferenceNumbers"], "pgReferenceNumbers")
            references = many if references is None else [r for r in references if r in many]
        if references is not None:
            filters["references"] = references
        if body.get("enKashTransactionIds") is not None:
            filters["txn_ids"] = _text_list(body["enKashTransactionIds"], "enKashTransactionIds")
        txn_type = _optional_text(body, "cardTransactionType")
        if txn_type is not None:
            if txn_type not in ("CR", "DR"):
                raise _Refuse(400, "cardTransactionType must be CR or DR")
            filters["txn_type"] = txn_type
        for name, key in (("amountFrom", "amount_from"), ("amountTo", "amount_to")):
            if body.get(name) is not None:
                value = body[name]
                if isinstance(value, bool) or not isinstance(value, int | Decimal):
                    raise _Refuse(400, f"{name} must be a number")
                try:
                    filters[key] = Decimal(value).quantize(CENT)
                except InvalidOperation as exc:
                    raise _Refuse(400, f"{name} is out of range") from exc
        if body.get("txnDateFrom") is not None:
            filters["created_from"] = _parse_moment(
                body["txnDateFrom"], "txnDateFrom", end_of_day=False
            )
        if body.get("txnDateTo") is not None:
            filters["created_to"] = _parse_moment(body["txnDateTo"], "txnDateTo", end_of_day=True)
        status = _optional_text(body, "status")

        rows = [] if status not in (None, "SUCCESS") else self.store.find_transactions(**filters)
        data = [
            {
                "enkashCardTxnId": row["enkashCardTxnId"],
                "pgReferenceNumber": row["pgReferenceNumber"],
                "enKashCardId": row["enKashCardId"],
                "cardTransactionType": row["transactionType"],
                "amount": row["amount"],
                "otbBalance": row["balance_after"],
                "status": "SUCCESS",
                "txnDate": row["created"],
                "email": row["email"],
                "mobile": row["mobile"],
                "firstName": row["firstName"],
            }
            for row in rows
        ]
        return self._reply(
            200, self._envelope(True, {"recordsCount": len(data), "data": data}), encrypted
        )

    async def search(self, body: dict[str, Any], fault: str | None, encrypted: bool) -> Response:
        cards = self.store.find_cards(
            card_id=_optional_text(body, "enKashCardId"),
            email=_optional_text(body, "email"),
            mobile=_optional_text(body, "mobile"),
        )
        data = [
            {
                "enKashCardId": card["enKashCardId"],
                "userId": card["userId"],
                "email": card["email"],
                "mobile": card["mobile"],
                "title": card["title"],
                "firstName": card["firstName"],
                "gender": card["gender"],
                "otbBalance": card["balance"],
                "cardStatus": dict(CARD_STATUS),
                "kycStatus": dict(KYC_VERIFIED),
                "binType": dict(BIN_TYPE),
                "cardActivated": True,
            }
            for card in cards
        ]
        return self._reply(
            200, self._envelope(True, {"recordsCount": len(data), "data": data}), encrypted
        )

    # -- admin ---------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def control(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Only the process that started the sandbox may use ``handler``: it must send the
        control token, and a POST must be JSON (not a form a web page could send)."""

        async def guarded(request: Request) -> Response:
            given = request.headers.get(CONTROL_HEADER, "")
            if not hmac.compare_digest(given.encode(), self.control_token.encode()):
                return JSONResponse(
                    {"error": f"the {CONTROL_HEADER} header must carry this run's control token"},
                    status_code=403,
                )
            if request.method == "POST" and _media_type(request) != "application/json":
                return JSONResponse(
                    {"error": "Content-Type must be application/json"}, status_code=415
                )
            return await handler(request)

        return guarded

    async def stats(self, request: Request) -> Response:
        body = to_json(
            {
                "pool_balance": self.store.pool_balance(),
                "cards": self.store.card_count(),
                "commit_count": self.store.commit_count(),
                "allocate_requests": self.store.allocate_requests(),
                "allocate_window": self.store.allocate_window(),
                "token_requests": self.store.token_requests(),
            }
        )
        return Response(body, media_type="application/json")

    async def knobs_endpoint(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = json.loads(await request.body())
            except ValueError:
                return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
            try:
                apply_knob_changes(self.knobs, changes)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(dataclasses.asdict(self.knobs))

    async def reset(self, request: Request) -> Response:
        self.store.reset()
        self.reseed()
        return JSONResponse({"status": "reset"})


async def _grant_type(request: Request) -> str:
    """The ``grant_type`` a token request asked for ("" when it cannot be read)."""
    try:
        form = parse_qs((await request.body()).decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return ""
    return (form.get("grant_type") or [""])[0]


def apply_knob_changes(knobs: Knobs, changes: Any) -> None:
    """Validate every change first, then apply them all (``ValueError`` names the bad one)."""
    if not isinstance(changes, dict):
        raise ValueError("body must be a JSON object")
    names = {f.name for f in dataclasses.fields(Knobs)}
    checked: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in names:
            raise ValueError(f"unknown knob {name!r}")
        if name == "envelope":
            if value not in ENVELOPES:
                raise ValueError(f"envelope must be one of {', '.join(ENVELOPES)}")
        elif name in ("encrypt", "echo_login_errors"):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
        elif name == "refuse_with":
            if not isinstance(value, str) or len(value) > MAX_REFUSAL_LENGTH:
                raise ValueError(
                    f"refuse_with must be text of at most {MAX_REFUSAL_LENGTH} characters"
                )
        elif name in ("reply_payload", "refusal_envelope"):
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ValueError(f"{name} must be a JSON object")
            value = dict(value)
        elif name == "next_fault":
            if value not in ("", *SCRIPTED_FAULTS):
                raise ValueError(f"next_fault must be empty or one of {', '.join(SCRIPTED_FAULTS)}")
        elif name == "next_fault_calls":
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 0 <= value <= (MAX_SCRIPTED_CALLS)
            ):
                raise ValueError(
                    f"next_fault_calls must be a whole number from 0 to {MAX_SCRIPTED_CALLS}"
                )
        elif name == "seed":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError("seed must be an integer or null")
        else:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")
            if name.endswith("_rate") and value > 1:
                raise ValueError(f"{name} must be between 0 and 1")
        checked[name] = value
    for name, value in checked.items():
        setattr(knobs, name, value)


def new_control_token() -> str:
    return secrets.token_urlsafe(32)


def create_app(
    identity: SandboxIdentity, store: SandboxStore, knobs: Knobs, control_token: str | None = None
) -> Starlette:
    """The sandbox ASGI app; ``app.state.sandbox`` holds the handlers (and the stop flag).

    ``control_token`` guards the admin endpoints; None makes a random one
    (``app.state.sandbox.control_token``)."""
    if control_token is not None and len(control_token) < 16:
        raise ValueError("a sandbox control token has at least 16 characters")
    sandbox = _Sandbox(identity, store, knobs, control_token or new_control_token())
    post = ["POST"]
    routes = [
        Route("/oauth/token", sandbox.token, methods=post),
        *(
            Route(path, sandbox.api(sandbox.allocate, allocate=True), methods=post)
            for path in ALLOCATE_PATHS
        ),
        Route(f"{API_PREFIX}/cardAccount/get", sandbox.api(sandbox.account), methods=post),
        Route(f"{API_PREFIX}/transaction/all", sandbox.api(sandbox.transactions), methods=post),
        Route(f"{API_PREFIX}/search", sandbox.api(sandbox.search), methods=post),
        Route("/_sandbox/health", sandbox.health, methods=["GET"]),
        Route("/_sandbox/stats", sandbox.control(sandbox.stats), methods=["GET"]),
        Route("/_sandbox/knobs", sandbox.control(sandbox.knobs_endpoint), methods=["GET", "POST"]),
        Route("/_sandbox/reset", sandbox.control(sandbox.reset), methods=post),
    ]
    app = Starlette(routes=routes)
    app.state.sandbox = sandbox
    return app
