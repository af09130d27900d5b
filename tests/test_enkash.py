"""The EnKash client against the real sandbox over loopback HTTP, and against a tiny recording
HTTP server where the exact wire format (headers, form encoding, JSON types) is the point or the
sandbox cannot produce the situation (a refresh before expiry, a connection dropped after sending).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pydantic import SecretStr

from services import enkash
from services.config import EnkashConfig, sandbox_enkash_config
from services.enkash import (
    BusinessRefusal,
    EnkashClient,
    LoginRefused,
    NotSent,
    OutcomeUnknown,
    ReferenceMismatch,
)
from services.models import Allocation, Employee
from services.sandbox import SandboxIdentity, start_sandbox

TOKEN_PATH = "/oauth/token"
ALLOCATE_PATH = "/api/v0/partner/enKashCard/points/allocate"


# --- helpers and fixtures -----------------------------------------------------------------------


class CountingSession(requests.Session):
    """A real session that remembers every request it sent and every status it got back."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, bytes | str | None]] = []
        self.statuses: list[int] = []

    def send(self, request, **kwargs):
        self.sent.append((urlsplit(request.url).path, request.body))
        response = super().send(request, **kwargs)
        self.statuses.append(response.status_code)
        return response

    def paths(self) -> list[str]:
        return [path for path, _ in self.sent]

    def logins(self) -> int:
        return self.paths().count(TOKEN_PATH)


@pytest.fixture(autouse=True)
def _forget_login_refusals() -> Iterator[None]:
    # Refusals are shared process-wide per credentials; a reused loopback port must not inherit one.
    yield
    enkash._REFUSED_LOGINS.clear()


@pytest.fixture
def sandbox():
    server = start_sandbox()
    server.knobs.drop_hang_seconds = 3  # a hang outlives the client's 1 s read timeout, no more
    yield server
    server.stop()
    server.store.close()


def make_client(
    server, *, encrypt: bool = False, clock: Callable[[], float] = time.monotonic, **changes: Any
) -> tuple[EnkashClient, CountingSession]:
    config = dataclasses.replace(
        sandbox_enkash_config(server.url, server.identity, encrypt), **changes
    )
    session = CountingSession()
    return EnkashClient(config, session=session, clock=clock), session


def employee(n: int = 1) -> Employee:
    return Employee(
        email=f"asha.{n}@example.com",
        mobile=f"96000988{n:02d}",
        title="Ms",
        first_name="Asha",
        gender="F",
    )


def reference() -> str:
    return f"PD-{uuid.uuid4().hex[:20].upper()}"


def create(amount: str = "1500.50", n: int = 1) -> Allocation:
    return Allocation(reference=reference(), kind="create", amount=amount, employee=employee(n))


def credit(card_id: str, amount: str = "10") -> Allocation:
    return Allocation(reference=reference(), kind="credit", amount=amount, card_id=card_id)


def debit(card_id: str, amount: str) -> Allocation:
    return Allocation(reference=reference(), kind="debit", amount=amount, card_id=card_id)


def dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Seen:
    def __init__(self, path: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.path = path
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body, parse_float=Decimal)

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode(), keep_blank_values=True)


DROP = object()  # a responder returns this to close the connection without answering


class Recorder:
    """A loopback HTTP server that records raw requests and answers with ``responder(seen)``."""

    def __init__(self, responder: Callable[[Seen], Any]) -> None:
        self.seen: list[Seen] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seen = Seen(self.path, list(self.headers.items()), body)
                recorder.seen.append(seen)
                answer = responder(seen)
                if answer is DROP:
                    self.close_connection = True
                    return
                status, reply = answer
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def api(self) -> list[Seen]:
        return [seen for seen in self.seen if seen.path != TOKEN_PATH]

    def tokens(self) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == TOKEN_PATH]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def token_reply(n: int = 1, expires_in: int = 300) -> tuple[int, dict]:
    return 200, {
        "access_token": f"access-{n}",
        "token_type": "bearer",
        "refresh_token": f"refresh-{n}",
        "expires_in": expires_in,
        "scope": "read write",
    }


def echo_success(seen: Seen) -> tuple[int, dict]:
    body = seen.json()
    return 200, {
        "code": 0,
        "message": "Success",
        "payload": {
            "enKashCardId": body.get("enkashCardId", "EKC04AZHXP"),
            "enkashCardTxnId": "ECTRSZJ8CRJ2E",
            "pgReferenceNumber": body.get("uniqueReferenceNumber"),
            "otbBalance": 92415.44,
            "cardStatus": {"name": "UL", "label": "UnLocked"},
            "kycStatus": {"name": "VERIFIED", "label": "Verified"},
        },
    }


@pytest.fixture
def recorder_factory() -> Iterator[Callable[[Callable[[Seen], Any]], Recorder]]:
    made: list[Recorder] = []

    def build(responder: Callable[[Seen], Any]) -> Recorder:
        made.append(Recorder(responder))
        return made[-1]

    yield build
    for recorder in made:
        recorder.close()


def recorder_config(url: str, **changes: Any) -> EnkashConfig:
    config = EnkashConfig(
        base_url=url,
        token_url=f"{url}{TOKEN_PATH}",
        allocate_path=ALLOCATE_PATH,
        partner_id="CRMXWB3ZM",
        company_id="CEK1PU9AOO",
        card_account_id="CAQL8YCV3",
        client_id="desk-client",
        client_secret=SecretStr("s3cret-value"),
        username="9600098867",
        password=SecretStr("pa ss&word=1"),
        timeout_seconds=2.0,
        connect_timeout_seconds=1.0,
    )
    return dataclasses.replace(config, **changes)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- sign-in and token lifecycle ----------------------------------------------------------------


def test_one_sign_in_serves_many_calls(sandbox):
    client, session = make_client(sandbox)
    result = client.allocate(create())
    client.allocate(credit(result.card_id))
    client.account_details()
    client.search_users(card_id=result.card_id)
    client.find_transaction(result.reference)
    assert session.logins() == 1
    assert len(session.sent) == 6


def test_the_embedded_sandbox_is_reached_directly_whatever_proxy_the_environment_names(
    sandbox, monkeypatch
):
    # A proxy that answers nothing: a loopback call that went through it would fail.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    config = sandbox_enkash_config(sandbox.url, sandbox.identity)
    client = EnkashClient(config)
    assert client.allocate(create()).card_id
    # A real EnKash host still honours the environment (proxies, CA bundles).
    remote = EnkashClient(dataclasses.replace(config, base_url="https://enkash.example.com/"))
    assert remote._session.trust_env


def test_an_expired_token_is_replaced_before_the_call(sandbox):
    sandbox.knobs.token_lifetime_seconds = 1
    client, session = make_client(sandbox)
    card_id = client.allocate(create()).card_id
    time.sleep(1.2)
    client.allocate(credit(card_id))
    assert session.logins() == 2
    assert 401 not in session.statuses  # renewed before sending, not after a refusal
    assert sandbox.store.commit_count() == 2


def test_a_401_mid_use_signs_in_once_and_resends_the_same_request(sandbox):
    sandbox.knobs.token_lifetime_seconds = 1
    # A frozen clock: the client still trusts its token after the sandbox has expired it.
    client, session = make_client(sandbox, clock=lambda: 0.0)
    card_id = client.allocate(create()).card_id
    time.sleep(1.2)
    allocation = credit(card_id, "25.00")
    result = client.allocate(allocation)
    assert result.reference == allocation.reference
    assert session.statuses == [200, 200, 401, 200, 200]
    assert session.paths() == [TOKEN_PATH, ALLOCATE_PATH, ALLOCATE_PATH, TOKEN_PATH, ALLOCATE_PATH]
    assert session.sent[2][1] == session.sent[4][1]  # byte-identical resend
    assert sandbox.store.commit_count() == 2
    assert sandbox.store.card_balance(card_id) == Decimal("1525.50")


def test_a_second_401_after_a_fresh_sign_in_is_not_sent(recorder_factory):
    tokens = iter(range(1, 10))
    recorder = recorder_factory(
        lambda seen: token_reply(next(tokens)) if seen.path == TOKEN_PATH else (401, {})
    )
    client = EnkashClient(recorder_config(recorder.url))
    with pytest.raises(NotSent) as caught:
        client.allocate(credit("EKC04AZHXP"))
    assert caught.value.http_status == 401
    assert [s.path for s in recorder.seen] == [TOKEN_PATH, ALLOCATE_PATH, TOKEN_PATH, ALLOCATE_PATH]
    assert [s.header("Authorization") for s in recorder.api()] == [
        "Bearer access-1",
        "Bearer access-2",
    ]


def test_a_refused_sign_in_is_never_retried(sandbox):
    client, session = make_client(sandbox, password=SecretStr("wrong-password"))
    with pytest.raises(LoginRefused) as caught:
        client.allocate(create())
    assert caught.value.http_status == 401
    assert "Bad credentials" in str(caught.value)
    for call in (client.account_details, lambda: client.allocate(create()), client.search_users):
        with pytest.raises(LoginRefused):
            call()
    assert session.sent == [(TOKEN_PATH, session.sent[0][1])]  # one sign-in, nothing else
    assert client.login_refused
    # A second client for the same credentials does not try either (it would count towards the
    # lockout); the sandbox saw one failure, so the right credentials still work.
    other, other_session = make_client(sandbox, password=SecretStr("wrong-password"))
    with pytest.raises(LoginRefused):
        other.account_details()
    assert other_session.sent == []
    assert not sandbox.store.is_locked()
    good, _ = make_client(sandbox)
    assert good.account_details().available_balance == Decimal("10000000.00")


def test_three_refusals_from_three_clients_lock_the_account(sandbox):
    messages = []
    for _ in range(3):
        client, session = make_client(sandbox, password=SecretStr("wrong-password"))
        client.reset_login()  # a person retried after "fixing" the credentials
        with pytest.raises(LoginRefused) as caught:
            client.account_details()
        messages.append(str(caught.value))
        assert session.logins() == 1
    assert sandbox.store.is_locked()
    good, _ = make_client(sandbox)
    with pytest.raises(LoginRefused, match="locked"):
        good.account_details()
    assert "password" not in " ".join(messages).lower().replace("wrong-password", "")


def test_reset_login_allows_one_more_attempt(sandbox):
    client, session = make_client(sandbox, password=SecretStr("wrong-password"))
    with pytest.raises(LoginRefused):
        client.account_details()
    client.reset_login()
    assert not client.login_refused
    with pytest.raises(LoginRefused):
        client.account_details()
    assert session.logins() == 2


def test_a_sign_in_server_error_is_not_a_refusal(recorder_factory):
    answers = iter([(503, {"error": "busy"}), token_reply()])
    recorder = recorder_factory(
        lambda seen: next(answers) if seen.path == TOKEN_PATH else echo_success(seen)
    )
    client = EnkashClient(recorder_config(recorder.url))
    with pytest.raises(NotSent):
        client.allocate(credit("EKC04AZHXP"))
    assert recorder.api() == []
    assert not client.login_refused
    assert client.allocate(credit("EKC04AZHXP")).transaction_id == "ECTRSZJ8CRJ2E"


def test_the_token_is_refreshed_shortly_before_it_expires(recorder_factory):
    grants: list[dict[str, list[str]]] = []

    def respond(seen: Seen):
        if seen.path != TOKEN_PATH:
            return echo_success(seen)
        grants.append(seen.form())
        return token_reply(len(grants), expires_in=100)

    recorder = recorder_factory(respond)
    clock = FakeClock()
    client = EnkashClient(recorder_config(recorder.url), clock=clock)
    client.allocate(credit("EKC04AZHXP"))
    clock.now += 89  # 11 s left: more than min(30 s, 10 % of 100 s), keep the token
    client.allocate(credit("EKC04AZHXP"))
    clock.now += 2  # 9 s left: refresh before sending
    client.allocate(credit("EKC04AZHXP"))
    assert [g["grant_type"] for g in grants] == [["password"], ["refresh_token"]]
    assert grants[1]["refresh_token"] == ["refresh-1"]
    assert grants[1]["clientId"] == ["desk-client"]
    assert "password" not in grants[1]
    assert [s.header("Authorization") for s in recorder.api()] == [
        "Bearer access-1",
        "Bearer access-1",
        "Bearer access-2",
    ]


def _signed_in_with_refresh_refused(recorder_factory, error: str):
    """A client signed in with a 100 s token, 95 s later: its refresh will be refused with
    ``error``. Returns the client and the grant types the token endpoint saw so far."""
    grants: list[str] = []

    def respond(seen: Seen):
        if seen.path != TOKEN_PATH:
            return echo_success(seen)
        grant = seen.form()["grant_type"][0]
        grants.append(grant)
        if grant == "refresh_token":
            return 401, {"error": error, "error_description": "refused"}
        return token_reply(len(grants), expires_in=100)

    recorder = recorder_factory(respond)
    clock = FakeClock()
    client = EnkashClient(recorder_config(recorder.url), clock=clock)
    client.allocate(credit("EKC04AZHXP"))
    clock.now += 95
    return client, grants, recorder


def test_a_refused_refresh_falls_back_to_a_password_sign_in(recorder_factory):
    client, grants, recorder = _signed_in_with_refresh_refused(recorder_factory, "invalid_grant")
    client.allocate(credit("EKC04AZHXP"))
    assert grants == ["password", "refresh_token", "password"]
    assert not client.login_refused
    assert recorder.api()[-1].header("Authorization") == "Bearer access-3"


def test_threads_sharing_a_token_have_one_sign_in_in_flight(recorder_factory):
    """The token endpoint fails slowly: the waiting threads do not each send a sign-in at once,
    and the next call after the failure signs in (the sandbox cannot answer a sign-in slowly)."""
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most at once
    failing = threading.Event()
    failing.set()

    def respond(seen: Seen):
        if seen.path != TOKEN_PATH:
            return echo_success(seen)
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        time.sleep(0.3)
        with lock:
            in_flight[0] -= 1
        return (503, {"error": "busy"}) if failing.is_set() else token_reply()

    recorder = recorder_factory(respond)
    first = EnkashClient(recorder_config(recorder.url))
    clients = [first, *(first.clone() for _ in range(7))]
    start = threading.Barrier(len(clients))
    errors: list[BaseException] = []

    def work(client: EnkashClient) -> None:
        start.wait()
        try:
            client.allocate(credit("EKC04AZHXP"))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(errors) == len(clients)
    assert all(isinstance(error, NotSent) for error in errors)
    assert in_flight[1] == 1
    assert recorder.api() == []
    failing.clear()
    sign_ins = len(recorder.tokens())
    assert all(c.allocate(credit("EKC04AZHXP")).transaction_id for c in clients)
    assert len(recorder.tokens()) == sign_ins + 1  # one new sign-in serves all eight
    assert not first.login_refused


# --- the wire format ----------------------------------------------------------------------------


def test_sign_in_wire_format(recorder_factory):
    recorder = recorder_factory(
        lambda seen: token_reply() if seen.path == TOKEN_PATH else echo_success(seen)
    )
    EnkashClient(recorder_config(recorder.url)).allocate(credit("EKC04AZHXP"))
    login = recorder.tokens()[0]
    assert login.header("Content-Type") == "application/x-www-form-urlencoded"
    expected = base64.b64encode(b"desk-client:s3cret-value").decode()
    assert login.header("Authorization") == f"Basic {expected}"
    assert login.form() == {
        "username": ["9600098867"],
        "password": ["pa ss&word=1"],  # form-encoded, so & and = survive
        "grant_type": ["password"],
        "clientId": ["desk-client"],
    }


def test_allocate_wire_format_for_a_new_account(recorder_factory):
    recorder = recorder_factory(
        lambda seen: token_reply() if seen.path == TOKEN_PATH else echo_success(seen)
    )
    allocation = create("0.10")
    EnkashClient(recorder_config(recorder.url)).allocate(allocation)
    sent = recorder.api()[0]
    assert sent.path == ALLOCATE_PATH
    assert sent.header("partnerId") == "CRMXWB3ZM"
    assert ("partnerId", "CRMXWB3ZM") in sent.headers  # spelled exactly as documented
    assert sent.header("Authorization") == "Bearer access-1"
    assert sent.header("Content-Type") == "application/json"
    assert b'"loadAmount":0.10,' in sent.body  # a JSON number with its cents, not "0.10"
    body = json.loads(sent.body)  # plain json: the type must be a number
    assert isinstance(body["loadAmount"], float)
    assert sent.json() == {
        "companyId": "CEK1PU9AOO",
        "cardAccountId": "CAQL8YCV3",
        "transactionCode": "ALLOCATION",
        "transactionType": "CR",
        "type": "ALLOCATE_POINT",
        "email": "asha.1@example.com",
        "mobile": "9600098801",
        "title": "Ms",
        "firstName": "Asha",
        "gender": "F",
        "loadAmount": Decimal("0.10"),
        "uniqueReferenceNumber": allocation.reference,
    }


def test_a_debit_by_card_id_sends_no_employee_fields(recorder_factory):
    recorder = recorder_factory(
        lambda seen: token_reply() if seen.path == TOKEN_PATH else echo_success(seen)
    )
    allocation = debit("EKC04AZHXP", "1500.5")
    result = EnkashClient(recorder_config(recorder.url)).allocate(allocation)
    body = recorder.api()[0].json()
    assert body == {
        "companyId": "CEK1PU9AOO",
        "cardAccountId": "CAQL8YCV3",
        "transactionCode": "ALLOCATION",
        "transactionType": "DR",
        "type": "UNALLOCATE_POINT",
        "loadAmount": Decimal("1500.50"),
        "uniqueReferenceNumber": allocation.reference,
        "enkashCardId": "EKC04AZHXP",
    }
    assert b'"loadAmount":1500.50' in recorder.api()[0].body
    assert result.balance_after == Decimal("92415.44")
    assert (result.card_status, result.kyc_status) == ("UnLocked", "Verified")


def test_encrypted_wire_format(recorder_factory):
    key = hashlib.sha256(b"s3cret-value").digest()[:16]

    def aes(data: bytes, encrypt: bool) -> bytes:
        cipher = Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305 (the peer's scheme)
        worker = cipher.encryptor() if encrypt else cipher.decryptor()
        return worker.update(data) + worker.finalize()

    def respond(seen: Seen):
        if seen.path == TOKEN_PATH:
            return token_reply()
        plain = aes(base64.b64decode(json.loads(seen.body)["request"]), encrypt=False)
        request = json.loads(plain[: -plain[-1]])
        reply = json.dumps(echo_success(Seen(seen.path, [], json.dumps(request).encode()))[1])
        pad = 16 - len(reply) % 16
        cipher = aes(reply.encode() + bytes([pad]) * pad, encrypt=True)
        return 200, {"request": base64.b64encode(cipher).decode()}

    recorder = recorder_factory(respond)
    allocation = credit("EKC04AZHXP", "12.30")
    result = EnkashClient(recorder_config(recorder.url, encrypt=True)).allocate(allocation)
    sent = recorder.api()[0]
    assert sent.header("Content-Type") == "application/json"
    assert set(json.loads(sent.body)) == {"request"}
    assert b"uniqueReferenceNumber" not in sent.body
    assert result.reference == allocation.reference


# --- the sandbox: envelopes, encryption, refusals -----------------------------------------------


@pytest.mark.parametrize("envelope", ["documented", "code", "response_code"])
def test_both_envelope_spellings_are_read(sandbox, envelope):
    sandbox.knobs.envelope = envelope
    client, _ = make_client(sandbox)
    result = client.allocate(create("200"))
    assert result.balance_after == Decimal("200.00")
    with pytest.raises(BusinessRefusal) as caught:
        client.allocate(debit(result.card_id, "500"))
    assert caught.value.message == "Insufficient balance in card"
    assert caught.value.code == 1
    assert caught.value.http_status == 200
    assert sandbox.store.card_balance(result.card_id) == Decimal("200.00")


def test_encrypted_round_trip_with_the_sandbox(sandbox):
    sandbox.knobs.encrypt = True
    client, session = make_client(sandbox, encrypt=True)
    result = client.allocate(create("75.25"))
    assert result.balance_after == Decimal("75.25")
    assert client.find_transaction(result.reference).transaction_id == result.transaction_id
    assert client.search_users(card_id=result.card_id)[0].balance == Decimal("75.25")
    assert client.account_details().available_card_balance == Decimal("75.25")
    with pytest.raises(BusinessRefusal, match="Insufficient balance in card"):
        client.allocate(debit(result.card_id, "100"))  # an encrypted refusal is read too
    api_bodies = [body for path, body in session.sent if path != TOKEN_PATH]
    assert all(set(json.loads(body)) == {"request"} for body in api_bodies)


def test_a_plaintext_client_against_an_encrypting_host_fails_clearly(sandbox):
    sandbox.knobs.encrypt = True
    client, _ = make_client(sandbox, encrypt=False)
    with pytest.raises(BusinessRefusal) as caught:
        client.allocate(create())
    assert caught.value.http_status == 400
    assert "Encrypted request required" in str(caught.value)
    assert sandbox.store.commit_count() == 0


def test_a_success_for_another_reference_is_a_mismatch(sandbox):
    sandbox.knobs.wrong_reference_rate = 1
    client, _ = make_client(sandbox)
    allocation = create()
    with pytest.raises(ReferenceMismatch) as caught:
        client.allocate(allocation)
    assert isinstance(caught.value, OutcomeUnknown)
    assert caught.value.reference == allocation.reference
    assert caught.value.payload["pgReferenceNumber"] != allocation.reference
    assert caught.value.payload["enKashCardId"]
    assert sandbox.store.commit_count() == 1


# --- the sandbox: odd values in a confirmed success ----------------------------------------------


@pytest.mark.parametrize(
    ("reported", "stored"),
    [
        (92415.44, Decimal("92415.44")),  # a JSON number with 2 decimals
        (92415, Decimal("92415.00")),
        ("92415.44", Decimal("92415.44")),  # plain decimal text is still exact
        (92415.440, Decimal("92415.44")),
    ],
)
def test_a_balance_with_at_most_two_decimals_is_kept_exactly(sandbox, reported, stored):
    sandbox.knobs.reply_payload = {"otbBalance": reported}
    client, _ = make_client(sandbox)
    confirmed = client.allocate(create())
    assert confirmed.balance_after == stored
    assert confirmed.notes == ()


@pytest.mark.parametrize(
    ("reported", "shown"),
    [
        (92415.445, "'92415.445'"),  # a JSON number with 3 decimals
        ("92415.445", "'92415.445'"),
        ("92,415.44", "'92,415.44'"),
        ("abc", "'abc'"),
        ("", "''"),
        (True, "'true'"),
        ({"amount": 5}, """'{"amount": 5}'"""),
        (1e20, "'1E+20'"),
        ("1\x00", "'1\\x00'"),
    ],
)
def test_a_balance_that_is_not_a_two_decimal_number_is_unknown_and_named(sandbox, reported, shown):
    sandbox.knobs.reply_payload = {"otbBalance": reported}
    client, _ = make_client(sandbox)
    allocation = create()
    confirmed = client.allocate(allocation)
    assert confirmed.reference == allocation.reference
    assert confirmed.balance_after is None
    assert confirmed.notes == (f"EnKash reported balance {shown}, not stored as a number",)
    assert confirmed.card_id.startswith("EKC") and confirmed.transaction_id


def test_a_long_transaction_id_is_kept_whole(sandbox):
    long_id = "ECTR" + "7" * 296
    sandbox.knobs.reply_payload = {"enkashCardTxnId": long_id}
    client, _ = make_client(sandbox)
    confirmed = client.allocate(create())
    assert confirmed.transaction_id == long_id
    assert confirmed.notes == ()


def test_a_card_id_that_is_not_one_is_not_kept_and_is_named(sandbox):
    client, _ = make_client(sandbox)
    card_id = client.allocate(create()).card_id
    sandbox.knobs.reply_payload = {"enKashCardId": "EKC 12/" + "Z" * 100}
    confirmed = client.allocate(credit(card_id))
    assert confirmed.card_id == card_id  # the card the credit was sent for
    assert len(confirmed.notes) == 1
    assert confirmed.notes[0].startswith("EnKash reported card id 'EKC 12/ZZZ")
    assert confirmed.notes[0].endswith("…', not a valid card id; not stored")
    fresh = client.allocate(create(n=2))  # a new account: no card id to fall back on
    assert fresh.card_id == "" and fresh.notes


def test_a_transaction_id_not_shaped_like_one_is_not_kept_and_is_named(sandbox):
    sandbox.knobs.reply_payload = {"enkashCardTxnId": "ECTR\x00\x1b9"}
    client, _ = make_client(sandbox)
    confirmed = client.allocate(create())
    assert confirmed.transaction_id == ""  # the success stands; the id is in the lookup
    assert confirmed.notes == (
        "EnKash reported transaction id 'ECTR\\x00\\x1b9', not shaped like one; not stored",
    )


def test_odd_values_in_a_lookup_are_kept_as_far_as_they_can_be(recorder_factory):
    reference_sent = reference()
    row = {
        "pgReferenceNumber": reference_sent,
        "enkashCardTxnId": "T" * 150,
        "enKashCardId": "not a card!",
        "otbBalance": "1,00,000.005",
        "status": "SUCCESS",
    }
    # The sandbox's lookup lists what it committed, so an odd lookup reply comes from a recorder.
    recorder = recorder_factory(
        lambda seen: (
            token_reply() if seen.path == TOKEN_PATH else (200, {"code": 0, "payload": [row]})
        )
    )
    record = EnkashClient(recorder_config(recorder.url)).find_transaction(reference_sent)
    assert record is not None
    assert record.transaction_id == "T" * 150
    assert record.card_id == ""
    assert record.balance_after is None
    assert record.notes == (
        "EnKash reported card id 'not a card!', not a valid card id; not stored",
        "EnKash reported balance '1,00,000.005', not stored as a number",
    )


def test_an_empty_pool_is_a_business_refusal_with_enkash_message():
    server = start_sandbox(identity=SandboxIdentity(opening_pool=Decimal("100.00")))
    try:
        client, _ = make_client(server)
        with pytest.raises(BusinessRefusal) as caught:
            client.allocate(create("500"))
        assert caught.value.message == "Insufficient balance in card account"
        assert "Insufficient balance in card account" in str(caught.value)
        assert server.store.pool_balance() == Decimal("100.00")
    finally:
        server.stop()
        server.store.close()


def test_a_validation_refusal_keeps_the_status_and_message(sandbox):
    client, _ = make_client(sandbox, company_id="CWRONG0001")
    with pytest.raises(BusinessRefusal) as caught:
        client.account_details()
    assert caught.value.http_status == 422
    assert caught.value.message == "Company not linked to this partner"


# --- the sandbox: unknown outcomes --------------------------------------------------------------


def test_a_reply_dropped_after_commit_is_an_unknown_outcome(sandbox):
    sandbox.knobs.drop_after_commit_rate = 1
    client, session = make_client(sandbox, timeout_seconds=1.0)
    allocation = create()
    with pytest.raises(OutcomeUnknown) as caught:
        client.allocate(allocation)
    assert "read timeout" in str(caught.value)
    assert sandbox.store.commit_count() == 1  # EnKash did commit it
    assert session.paths().count(ALLOCATE_PATH) == 1  # and it was not sent twice
    sandbox.knobs.drop_after_commit_rate = 0
    record = client.find_transaction(allocation.reference)
    assert record is not None and record.amount == Decimal("1500.50")


def test_a_hang_before_commit_is_an_unknown_outcome(sandbox):
    sandbox.knobs.hang_before_commit_rate = 1
    client, _ = make_client(sandbox, timeout_seconds=1.0)
    allocation = create()
    with pytest.raises(OutcomeUnknown):
        client.allocate(allocation)
    sandbox.knobs.hang_before_commit_rate = 0
    assert sandbox.store.commit_count() == 0
    assert client.find_transaction(allocation.reference) is None


@pytest.mark.parametrize(
    ("knob", "status", "commits"),
    [("fail_before_commit_rate", 503, 0), ("error_after_commit_rate", 500, 1)],
)
def test_a_server_error_is_an_unknown_outcome(sandbox, knob, status, commits):
    setattr(sandbox.knobs, knob, 1)
    client, _ = make_client(sandbox)
    with pytest.raises(OutcomeUnknown) as caught:
        client.allocate(create())
    assert caught.value.http_status == status
    assert sandbox.store.commit_count() == commits
    assert sandbox.store.allocate_requests() == 1  # never retried


def test_a_malformed_reply_is_an_unknown_outcome(sandbox):
    sandbox.knobs.malformed_rate = 1
    client, _ = make_client(sandbox)
    with pytest.raises(OutcomeUnknown, match="not JSON"):
        client.allocate(create())
    assert sandbox.store.commit_count() == 1


def test_a_connection_dropped_after_sending_is_not_retried(recorder_factory):
    recorder = recorder_factory(lambda seen: token_reply() if seen.path == TOKEN_PATH else DROP)
    client = EnkashClient(recorder_config(recorder.url))
    with pytest.raises(OutcomeUnknown) as caught:
        client.allocate(credit("EKC04AZHXP"))
    assert not isinstance(caught.value, NotSent)
    assert len(recorder.api()) == 1


@pytest.mark.parametrize(
    ("status", "reply", "error"),
    [
        (200, {"code": 0, "message": "Success"}, OutcomeUnknown),  # success with no payload
        (200, {"status": "ok"}, OutcomeUnknown),  # not an envelope
        (200, {"code": 0, "response_code": 1, "payload": {}}, OutcomeUnknown),
        (200, {"request": "bm90IGEgY2lwaGVydGV4dA=="}, OutcomeUnknown),  # does not decrypt
        (502, b"<html>Bad gateway</html>", OutcomeUnknown),
        (429, {"error": "slow down"}, OutcomeUnknown),
        (404, {"response_code": 1, "response_message": "Card account not found"}, BusinessRefusal),
        (400, b"not json", BusinessRefusal),
        (
            200,
            {"code": "1", "message": "Card not found", "payload": "Card not found"},
            BusinessRefusal,
        ),
    ],
)
def test_replies_are_classified_by_what_they_prove(recorder_factory, status, reply, error):
    recorder = recorder_factory(
        lambda seen: token_reply() if seen.path == TOKEN_PATH else (status, reply)
    )
    with pytest.raises(error) as caught:
        EnkashClient(recorder_config(recorder.url)).allocate(credit("EKC04AZHXP"))
    assert type(caught.value) is error
    assert len(recorder.api()) == 1


def test_a_string_zero_code_is_a_success(recorder_factory):
    def respond(seen: Seen):
        if seen.path == TOKEN_PATH:
            return token_reply()
        status, reply = echo_success(seen)
        return status, {"response_code": "0", "response_message": "Success", **reply}

    recorder = recorder_factory(respond)
    result = EnkashClient(recorder_config(recorder.url)).allocate(credit("EKC04AZHXP"))
    assert result.transaction_id == "ECTRSZJ8CRJ2E"


# --- not sent -----------------------------------------------------------------------------------


def test_nothing_listening_is_not_sent_after_the_bounded_retries():
    url = f"http://127.0.0.1:{dead_port()}"
    config = dataclasses.replace(recorder_config(url), connect_retries=2)
    session = CountingSession()
    client = EnkashClient(config, session=session)
    client.retry_backoff_seconds = 0.01
    with pytest.raises(NotSent) as caught:
        client.allocate(credit("EKC04AZHXP"))
    assert len(session.sent) == 3  # connect_retries + 1 attempts at the sign-in
    assert "nothing was sent" in str(caught.value)
    assert not client.login_refused  # an unreachable host is not a refused sign-in


def test_an_unreachable_api_host_is_not_sent_with_the_same_body(recorder_factory):
    tokens = recorder_factory(lambda seen: token_reply())
    config = dataclasses.replace(
        recorder_config(f"http://127.0.0.1:{dead_port()}"),
        token_url=f"{tokens.url}{TOKEN_PATH}",
        connect_retries=3,
    )
    session = CountingSession()
    client = EnkashClient(config, session=session)
    client.retry_backoff_seconds = 0.01
    allocation = credit("EKC04AZHXP")
    with pytest.raises(NotSent) as caught:
        client.allocate(allocation)
    assert caught.value.reference == allocation.reference
    api_bodies = [body for path, body in session.sent if path == ALLOCATE_PATH]
    assert len(api_bodies) == 4
    assert len(set(api_bodies)) == 1


# --- lookups ------------------------------------------------------------------------------------


def test_find_transaction_found_and_absent(sandbox):
    client, session = make_client(sandbox)
    first = client.allocate(create("40"))
    second = client.allocate(credit(first.card_id, "2.50"))
    record = client.find_transaction(second.reference)
    assert record is not None
    assert (record.reference, record.transaction_id) == (second.reference, second.transaction_id)
    assert (record.card_id, record.transaction_type) == (first.card_id, "CR")
    assert (record.amount, record.balance_after) == (Decimal("2.50"), Decimal("42.50"))
    assert record.status == "SUCCESS" and record.happened_at is not None
    assert client.find_transaction("PD-NEVER-SENT-1") is None
    lookup = json.loads(session.sent[-1][1])
    assert lookup["pgReferenceNumber"] == "PD-NEVER-SENT-1"
    assert lookup["pgReferenceNumbers"] == ["PD-NEVER-SENT-1"]


@pytest.mark.parametrize(
    ("payload", "found"),
    [
        ([{"pgReferenceNumber": "REF-123456", "enkashCardTxnId": "T1", "amount": 5}], True),
        ({"content": [{"pgReferenceNumber": "REF-123456", "enkashCardTxnId": "T1"}]}, True),
        ({"transactions": [{"uniqueReferenceNum": "REF-123456", "enkashCardTxnId": "T1"}]}, True),
        ({"records": []}, False),
        ({"recordsCount": 0}, False),
    ],
)
def test_find_transaction_accepts_the_likely_reply_shapes(recorder_factory, payload, found):
    recorder = recorder_factory(
        lambda seen: (
            token_reply()
            if seen.path == TOKEN_PATH
            else (200, {"code": 0, "message": "Success", "payload": payload})
        )
    )
    record = EnkashClient(recorder_config(recorder.url)).find_transaction("REF-123456")
    assert (record is not None) is found
    if found:
        assert record.transaction_id == "T1"


@pytest.mark.parametrize(
    "payload",
    [
        None,
        "No records",
        {"unexpected": True},
        # Other transactions listed for a lookup by this reference: the filter was ignored, so a
        # partial listing cannot prove the reference absent.
        {"transactions": [{"pgReferenceNumber": "OTHER-1", "enkashCardTxnId": "T2"}]},
    ],
)
def test_a_lookup_reply_not_understood_proves_nothing(recorder_factory, payload):
    recorder = recorder_factory(
        lambda seen: (
            token_reply()
            if seen.path == TOKEN_PATH
            else (200, {"code": 0, "message": "Success", "payload": payload})
        )
    )
    with pytest.raises(OutcomeUnknown):
        EnkashClient(recorder_config(recorder.url)).find_transaction("REF-123456")


def test_a_failed_lookup_raises(sandbox):
    sandbox.knobs.fail_before_commit_rate = 1  # applies to every API call
    client, _ = make_client(sandbox)
    with pytest.raises(OutcomeUnknown):
        client.find_transaction("PD-ANY-REFERENCE")


@pytest.mark.parametrize("error", ["invalid_client", "invalid_token"])
def test_any_refused_refresh_falls_back_to_one_password_sign_in(recorder_factory, error):
    # A refresh names no user: however it is refused, it is not a refused login.
    client, grants, recorder = _signed_in_with_refresh_refused(recorder_factory, error)
    client.allocate(credit("EKC04AZHXP"))
    assert grants == ["password", "refresh_token", "password"]
    assert not client.login_refused
    assert recorder.api()[-1].header("Authorization") == "Bearer access-3"


def test_search_sends_only_documented_fields_and_filters_the_reply(recorder_factory):
    cards = [
        {"enKashCardId": "EKC1", "email": "asha@example.com", "mobile": "9600098801"},
        {"enKashCardId": "EKC2", "email": "ravi@example.com", "mobile": "+91 96000 98802"},
        {"enKashCardId": "EKC3", "email": None, "mobile": 9600098803},
    ]
    recorder = recorder_factory(
        lambda seen: (
            token_reply()
            if seen.path == TOKEN_PATH
            else (200, {"code": 0, "message": "Success", "payload": {"data": cards}})
        )
    )
    client = EnkashClient(recorder_config(recorder.url))
    assert [h.card_id for h in client.search_users(email="RAVI@example.com")] == ["EKC2"]
    assert [h.card_id for h in client.search_users(mobile="9600098802")] == ["EKC2"]
    assert client.search_users(mobile="9999999999") == []
    assert [h.card_id for h in client.search_users(mobile="9600098803")] == ["EKC3"]
    assert [h.card_id for h in client.search_users()] == ["EKC1", "EKC2", "EKC3"]
    for search in recorder.api():  # every search sends only the documented fields
        assert set(json.loads(search.body)) == {"companyId", "cardAccountId"}


@pytest.mark.parametrize(
    "odd",
    [
        "not a card",
        None,
        {"email": "ravi@example.com", "mobile": "9600098802"},  # no card id
        {"enKashCardId": "EKC4", "email": ["ravi@example.com"], "mobile": "9600098804"},
        {"enKashCardId": "EKC4", "email": "x@example.com", "mobile": {"n": 1}},
        {"enKashCardId": "EKC1 [x](https://evil.example)", "email": "ravi@example.com"},
    ],
)
def test_a_search_listing_with_a_malformed_row_proves_nothing(recorder_factory, odd):
    # One row that cannot be matched could be the holder the caller is looking for: "nobody has
    # this email" must not rest on such a listing, so it is refused whole.
    cards = [{"enKashCardId": "EKC1", "email": "asha@example.com", "mobile": "9600098801"}, odd]
    recorder = recorder_factory(
        lambda seen: (
            token_reply()
            if seen.path == TOKEN_PATH
            else (200, {"code": 0, "message": "Success", "payload": {"data": cards}})
        )
    )
    with pytest.raises(OutcomeUnknown, match="proves nothing"):
        EnkashClient(recorder_config(recorder.url)).search_users(email="ravi@example.com")


def test_search_users_and_account_details(sandbox):
    client, _ = make_client(sandbox)
    asha = client.allocate(create("100", n=1))
    client.allocate(create("250.75", n=2))
    everyone = client.search_users()
    assert len(everyone) == 2
    by_email = client.search_users(email="ASHA.2@example.com")
    assert [(h.mobile, h.first_name, h.balance) for h in by_email] == [
        ("9600098802", "Asha", Decimal("250.75"))
    ]
    (holder,) = client.search_users(card_id=asha.card_id)
    assert (holder.card_id, holder.email, holder.title, holder.gender) == (
        asha.card_id,
        "asha.1@example.com",
        "Ms",
        "F",
    )
    assert holder.user_id
    assert client.search_users(mobile="9999999999") == []
    details = client.account_details()
    assert details.available_balance == Decimal("9999649.25")
    assert details.available_card_balance == Decimal("350.75")
    assert (details.total_cards, details.active_cards) == (2, 2)
    assert details.total_allocation == Decimal("350.75")
    assert details.company_name == sandbox.identity.company_name


# --- secrets stay out of logs and messages ------------------------------------------------------


def test_no_secret_or_token_reaches_a_log_line_or_message(sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    client, _ = make_client(sandbox)
    result = client.allocate(create())
    errors = []
    try:
        client.allocate(debit(result.card_id, "99999"))
    except BusinessRefusal as refusal:
        errors.append(str(refusal))
    bad, _ = make_client(sandbox, password=SecretStr("wrong-password"))
    try:
        bad.account_details()
    except LoginRefused as refusal:
        errors.append(str(refusal) + repr(refusal))
    token = client._token.access_token
    text = caplog.text + " ".join(errors) + repr(client)
    for secret in (sandbox.identity.client_secret, sandbox.identity.password, "wrong-password"):
        assert secret not in text
    assert token not in text
    assert "Bearer" not in caplog.text and "Basic" not in caplog.text
    assert result.reference in caplog.text  # the reference is logged
    assert f"{ALLOCATE_PATH} -> 200" in caplog.text


def test_clone_shares_the_token_but_not_the_session(sandbox):
    client, _ = make_client(sandbox)
    client.account_details()
    twin = client.clone()
    assert twin.config is client.config
    assert twin._session is not client._session
    assert twin.tokens is client.tokens
    assert twin.account_details().available_balance == Decimal("10000000.00")
    assert sandbox.store.token_requests()["password"] == 1  # the twin did not sign in


def test_a_token_cannot_be_shared_with_other_credentials(sandbox):
    client, _ = make_client(sandbox)
    other = dataclasses.replace(client.config, username="someone-else")
    with pytest.raises(ValueError):
        EnkashClient(other, tokens=client.tokens)
