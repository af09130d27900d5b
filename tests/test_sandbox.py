"""The EnKash sandbox over real loopback HTTP, with plain ``requests`` (no project client code)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from services.sandbox import Knobs, SandboxIdentity, SandboxServer, start_sandbox

ALLOCATE = "/api/v0/partner/enKashCard/points/allocate"
OLD_ALLOCATE = "/api/v0/partner/enKashCard/create-allocate-points"
ACCOUNT = "/api/v0/partner/enKashCard/cardAccount/get"
TRANSACTIONS = "/api/v0/partner/enKashCard/transaction/all"
SEARCH = "/api/v0/partner/enKashCard/search"

ID = SandboxIdentity()


class Client:
    """A deliberately small, independent client: just enough HTTP to drive the sandbox."""

    def __init__(self, server: SandboxServer, timeout: float = 5) -> None:
        self.server = server
        self.url = server.url
        self.http = requests.Session()
        self.timeout = timeout
        self.token: str | None = None

    def login(self, username: str = ID.username, password: str = ID.password, **extra):
        form = {
            "grant_type": "password",
            "username": username,
            "password": password,
            "clientId": ID.client_id,
            **extra,
        }
        return self.http.post(
            self.url + "/oauth/token",
            data=form,
            auth=(ID.client_id, ID.client_secret),
            timeout=self.timeout,
        )

    def bearer(self) -> str:
        if self.token is None:
            reply = self.login()
            assert reply.status_code == 200, reply.text
            self.token = reply.json()["access_token"]
        return self.token

    def post(self, path: str, body: dict, *, headers: dict | None = None, timeout=None):
        sent = {
            "partnerId": ID.partner_id,
            "Authorization": f"Bearer {self.bearer()}",
            "Content-Type": "application/json",
            **(headers or {}),
        }
        return self.http.post(
            self.url + path,
            data=dumps(body).encode(),
            headers={k: v for k, v in sent.items() if v is not None},
            timeout=timeout or self.timeout,
        )

    def call(self, path: str, **fields):
        body = {"companyId": ID.company_id, "cardAccountId": ID.card_account_id, **fields}
        return self.post(path, body)

    def allocate(self, reference: str, amount, txn_type: str = "CR", timeout=None, **fields):
        body = allocation(reference, amount, txn_type, **fields)
        return self.post(ALLOCATE, body, timeout=timeout)


def allocation(reference: str, amount, txn_type: str = "CR", **fields) -> dict:
    return {
        "companyId": ID.company_id,
        "cardAccountId": ID.card_account_id,
        "transactionCode": "ALLOCATION",
        "transactionType": txn_type,
        "type": "ALLOCATE_POINT" if txn_type == "CR" else "UNALLOCATE_POINT",
        "loadAmount": amount,
        "uniqueReferenceNumber": reference,
        **fields,
    }


def dumps(body: dict) -> str:
    """JSON text in which a Decimal is written as a number with its exact digits (e.g. 0.50)."""

    def mark(value):
        if isinstance(value, Decimal):
            return f"@@{value}@@"
        raise TypeError(type(value))

    return re.sub(r'"@@([-0-9.]+)@@"', r"\1", json.dumps(body, default=mark))


def new_employee(n: int = 1) -> dict:
    return {
        "email": f"asha{n}@example.com",
        "mobile": f"98765{n:05d}",
        "title": "Ms",
        "firstName": f"Asha{n}",
        "gender": "F",
    }


def decimal_json(reply: requests.Response) -> dict:
    return json.loads(reply.text, parse_float=Decimal)


NO_TOKEN_REQUESTS = dict.fromkeys(
    (
        "password",
        "password_refused",
        "refresh_token",
        "refresh_token_refused",
        "other",
        "other_refused",
    ),
    0,
)


@pytest.fixture
def sandbox():
    server = start_sandbox()
    yield server
    server.stop()
    server.store.close()


@pytest.fixture
def client(sandbox):
    return Client(sandbox)


@pytest.fixture
def card(client):
    """A card created with a first credit of 500.00; returns its id."""
    reply = client.allocate("REF-SEED", 500, **new_employee())
    assert reply.json()["code"] == 0, reply.text
    return reply.json()["payload"]["enKashCardId"]


# -- login ---------------------------------------------------------------------------------------


def test_login_returns_bearer_tokens_with_the_configured_lifetime(client):
    reply = client.login()
    assert reply.status_code == 200
    body = reply.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 300
    assert body["access_token"] and body["refresh_token"] and body["scope"]
    assert body["access_token"] != client.login().json()["access_token"]


def test_wrong_client_credentials_are_invalid_client(client):
    reply = client.http.post(
        client.url + "/oauth/token",
        data={"grant_type": "password", "username": ID.username, "password": ID.password},
        auth=(ID.client_id, "wrong-secret"),
    )
    assert reply.status_code == 401
    assert reply.json()["error"] == "invalid_client"
    mismatched = client.login(clientId="someone-else")
    assert mismatched.status_code == 401
    assert mismatched.json()["error"] == "invalid_client"


def test_three_failed_logins_lock_the_partner_until_reset(sandbox, client):
    first = client.login(password="nope")
    assert first.status_code == 401
    assert first.json()["error"] == "invalid_grant"
    assert client.login(password="nope").status_code == 401
    assert client.login().status_code == 200  # a success resets the count
    for _ in range(3):
        assert client.login(password="nope").status_code == 401
    locked = client.login()
    assert locked.status_code == 401
    assert locked.json() == {
        "error": "invalid_grant",
        "error_description": "User account is locked",
    }
    sandbox.store.reset()
    assert client.login().status_code == 200


def test_login_must_be_form_encoded(client):
    reply = client.http.post(
        client.url + "/oauth/token",
        json={
            "grant_type": "password",
            "username": ID.username,
            "password": ID.password,
            "clientId": ID.client_id,
        },
        auth=(ID.client_id, ID.client_secret),
    )
    assert reply.status_code == 400
    assert reply.json()["error"] == "invalid_request"


def test_refresh_token_grants_a_new_token_once(sandbox, client):
    """A refresh token works once; the sandbox counts token requests by grant and outcome."""
    refresh = client.login().json()["refresh_token"]

    def use():
        return client.http.post(
            client.url + "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh},
            auth=(ID.client_id, ID.client_secret),
        )

    renewed = use()
    assert renewed.status_code == 200
    client.token = renewed.json()["access_token"]
    assert client.call(ACCOUNT).status_code == 200
    assert use().status_code == 401
    assert client.login(password="nope").status_code == 401
    assert client.login(grant_type="client_credentials").status_code == 400
    assert sandbox.store.token_requests() == {
        "password": 1,
        "password_refused": 1,
        "refresh_token": 1,
        "refresh_token_refused": 1,
        "other": 0,
        "other_refused": 1,
    }
    sandbox.store.reset()
    assert sandbox.store.token_requests() == NO_TOKEN_REQUESTS


def test_token_expires_after_its_lifetime(sandbox, client):
    sandbox.knobs.token_lifetime_seconds = 1
    assert client.login().json()["expires_in"] == 1
    client.token = None
    assert client.call(ACCOUNT).status_code == 200
    time.sleep(1.1)
    expired = client.call(ACCOUNT)
    assert expired.status_code == 401
    assert expired.json()["error"] == "invalid_token"


def test_api_call_without_or_with_a_bad_token_is_401(client):
    body = {"companyId": ID.company_id, "cardAccountId": ID.card_account_id}
    assert client.post(ACCOUNT, body, headers={"Authorization": None}).status_code == 401
    reply = client.post(ACCOUNT, body, headers={"Authorization": "Bearer forged"})
    assert reply.status_code == 401
    assert reply.json()["error"] == "invalid_token"


# -- headers and account fields -----------------------------------------------------------------


def test_partner_id_header_is_required_and_must_match(client):
    body = {"companyId": ID.company_id, "cardAccountId": ID.card_account_id}
    for partner in (None, "SOMEONE"):
        reply = client.post(ACCOUNT, body, headers={"partnerId": partner})
        assert reply.status_code == 422
        assert reply.json()["response_code"] == 1


def test_json_content_type_is_required(client):
    body = {"companyId": ID.company_id, "cardAccountId": ID.card_account_id}
    reply = client.post(ACCOUNT, body, headers={"Content-Type": "text/plain"})
    assert reply.status_code == 415


def test_company_and_card_account_are_checked(client):
    missing_company = client.post(ACCOUNT, {"cardAccountId": ID.card_account_id})
    assert missing_company.status_code == 422
    wrong_account = client.post(ACCOUNT, {"companyId": ID.company_id, "cardAccountId": "CAX"})
    assert wrong_account.status_code == 404
    assert wrong_account.json()["response_message"] == "Card account not found"


# -- allocate ------------------------------------------------------------------------------------


def test_first_credit_creates_the_card_and_draws_from_the_pool(sandbox, client):
    reply = client.allocate("REF-1", Decimal("1234.56"), **new_employee())
    assert reply.status_code == 200
    body = decimal_json(reply)
    assert body["code"] == 0 and body["message"] == "Success"
    payload = body["payload"]
    assert payload["pgReferenceNumber"] == "REF-1"
    assert payload["otbBalance"] == Decimal("1234.56")
    assert payload["rewardPointsReceived"] == Decimal("1234.56")
    assert payload["enKashCardId"].startswith("EKC") and len(payload["enKashCardId"]) == 10
    assert payload["enkashCardTxnId"].startswith("ECTR") and len(payload["enkashCardTxnId"]) == 13
    assert payload["cardStatus"] == {"name": "UL", "label": "UnLocked"}
    assert payload["kycStatus"]["name"] == "VERIFIED"
    assert payload["binType"]["name"] == "REWARD"
    assert payload["cardActivated"] is True
    assert payload["email"] == "asha1@example.com" and payload["mobile"] == "9876500001"
    assert '"otbBalance":1234.56' in reply.text  # a JSON number, not a string
    assert sandbox.store.pool_balance() == Decimal("10000000.00") - Decimal("1234.56")
    assert sandbox.store.card_balance(payload["enKashCardId"]) == Decimal("1234.56")
    assert sandbox.store.commit_count() == 1


def test_credit_existing_card_by_id_and_by_email(sandbox, client, card):
    by_id = client.allocate("REF-2", 100, enkashCardId=card)
    assert by_id.json()["payload"]["otbBalance"] == 600
    by_email = client.allocate("REF-3", Decimal("0.50"), email="ASHA1@example.com")
    assert by_email.json()["payload"]["enKashCardId"] == card
    assert decimal_json(by_email)["payload"]["otbBalance"] == Decimal("600.50")
    assert len(sandbox.store.cards()) == 1


def test_older_allocate_path_and_short_reference_spelling_work(client, card):
    body = {
        "companyId": ID.company_id,
        "cardAccountId": ID.card_account_id,
        "transactionCode": "ALLOCATION",
        "transactionType": "CR",
        "type": "ALLOCATE_POINT",
        "loadAmount": 10,
        "uniqueReferenceNum": "REF-OLD",
        "enkashCardId": card,
    }
    reply = client.post(OLD_ALLOCATE, body)
    assert reply.json()["payload"]["pgReferenceNumber"] == "REF-OLD"
    assert reply.json()["payload"]["otbBalance"] == 510


def test_debit_returns_points_to_the_pool(sandbox, client, card):
    pool_before = sandbox.store.pool_balance()
    reply = client.allocate("REF-D", 200, txn_type="DR", enkashCardId=card)
    assert reply.json()["code"] == 0
    assert reply.json()["payload"]["otbBalance"] == 300
    assert sandbox.store.pool_balance() == pool_before + 200
    assert [t["transactionType"] for t in sandbox.store.transactions()] == ["CR", "DR"]


def test_insufficient_pool_is_a_business_refusal(sandbox, client):
    reply = client.allocate("REF-BIG", 10_000_000.01, **new_employee())
    assert reply.status_code == 200
    assert reply.json() == {
        "response_code": 1,
        "response_message": "Insufficient balance in card account",
        "payload": "Insufficient balance in card account",
    }
    assert sandbox.store.cards() == []
    assert sandbox.store.pool_balance() == Decimal("10000000.00")


def test_insufficient_card_balance_and_unknown_card_on_debit(sandbox, client, card):
    over = client.allocate("REF-OVER", 500.01, txn_type="DR", enkashCardId=card)
    assert over.json()["response_message"] == "Insufficient balance in card"
    unknown = client.allocate("REF-UNK", 1, txn_type="DR", email="nobody@example.com")
    assert unknown.status_code == 200
    assert unknown.json()["response_message"] == "Card not found"
    assert sandbox.store.card_balance(card) == Decimal("500.00")
    assert sandbox.store.commit_count() == 1


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"loadAmount": "100"}, "number"),
        ({"loadAmount": 0}, "greater than 0"),
        ({"loadAmount": -5}, "greater than 0"),
        ({"loadAmount": 1.005}, "2 decimals"),
        ({"mobile": "98765"}, "10 digits"),
        ({"title": "Dr"}, "title"),
        ({"gender": "X"}, "gender"),
        ({"transactionCode": "TOPUP"}, "transactionCode"),
        ({"type": "UNALLOCATE_POINT"}, "transactionType"),
        ({"uniqueReferenceNumber": None}, "uniqueReferenceNumber"),
    ],
)
def test_invalid_allocate_bodies_are_400(sandbox, client, change, needle):
    body = {**allocation("REF-BAD", 100, **new_employee()), **change}
    reply = client.post(ALLOCATE, body)
    assert reply.status_code == 400
    assert needle in reply.json()["response_message"]
    assert sandbox.store.commit_count() == 0


def test_new_card_needs_every_detail(client):
    reply = client.allocate("REF-N", 100, email="new@example.com", mobile="9000000001")
    assert reply.status_code == 400
    assert reply.json()["response_message"] == (
        "Missing fields for a new card: title, firstName, gender"
    )
    # nothing was stored: the corrected request may reuse the reference
    fixed = client.allocate("REF-N", 100, **new_employee(7))
    assert fixed.json()["code"] == 0


def test_kyc_pending_email_is_422(sandbox, client):
    reply = client.allocate("REF-K", 100, **{**new_employee(), "email": "kyc-pending@x.com"})
    assert reply.status_code == 422
    assert reply.json()["response_message"] == "KYC under review"
    assert sandbox.store.commit_count() == 0


# -- references ----------------------------------------------------------------------------------


def test_replaying_a_reference_with_the_same_body_returns_the_original_reply(sandbox, client):
    first = client.allocate("REF-R", 250, **new_employee())
    again = client.allocate("REF-R", 250, **new_employee())
    assert again.json() == first.json()
    assert sandbox.store.commit_count() == 1
    assert sandbox.store.pool_balance() == Decimal("9999750.00")
    refused = client.allocate("REF-RF", 20_000_000, **new_employee(2))
    assert client.allocate("REF-RF", 20_000_000, **new_employee(2)).json() == refused.json()
    assert sandbox.store.allocate_requests() == 4


def test_reusing_a_reference_with_a_different_body_is_refused(sandbox, client):
    client.allocate("REF-X", 250, **new_employee())
    other = client.allocate("REF-X", 251, **new_employee())
    assert other.status_code == 200
    assert other.json()["response_code"] == 1
    assert other.json()["response_message"] == "Duplicate uniqueReferenceNumber"
    assert sandbox.store.commit_count() == 1
    assert sandbox.store.pool_balance() == Decimal("9999750.00")


def test_concurrent_requests_with_one_reference_commit_once(sandbox, card):
    sandbox.knobs.latency_ms = 20
    barrier = threading.Barrier(12)

    def send(_):
        client = Client(sandbox)
        client.bearer()
        barrier.wait()
        return client.allocate("REF-SAME", 5, enkashCardId=card).json()

    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(send, range(12)))
    assert all(reply["code"] == 0 for reply in replies)
    assert len({reply["payload"]["enkashCardTxnId"] for reply in replies}) == 1
    assert sandbox.store.commit_count() == 2  # the seed credit and this one
    assert sandbox.store.card_balance(card) == Decimal("505.00")


# -- encryption and envelopes ---------------------------------------------------------------------


def _aes(secret: str):
    key = hashlib.sha256(secret.encode()).digest()[:16]
    return Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305 (the peer's scheme)


def encrypt(text: str, secret: str = ID.client_secret) -> str:
    padder = padding.PKCS7(128).padder()
    data = padder.update(text.encode()) + padder.finalize()
    enc = _aes(secret).encryptor()
    return base64.b64encode(enc.update(data) + enc.finalize()).decode()


def decrypt(text: str, secret: str = ID.client_secret) -> str:
    dec = _aes(secret).decryptor()
    data = dec.update(base64.b64decode(text)) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return (unpadder.update(data) + unpadder.finalize()).decode()


def test_encrypted_round_trip(sandbox, client):
    sandbox.knobs.encrypt = True
    body = {"companyId": ID.company_id, "cardAccountId": ID.card_account_id}
    assert client.post(ACCOUNT, body).status_code == 400  # plaintext refused
    reply = client.post(ACCOUNT, {"request": encrypt(json.dumps(body))})
    assert reply.status_code == 200
    assert set(reply.json()) == {"request"}
    envelope = json.loads(decrypt(reply.json()["request"]), parse_float=Decimal)
    assert envelope["code"] == 0
    assert envelope["payload"]["availableBalance"] == Decimal("10000000.00")
    wrong_key = client.post(ACCOUNT, {"request": encrypt(json.dumps(body), "other-secret")})
    assert wrong_key.status_code == 400


def test_envelope_knob_changes_both_spellings(sandbox, client):
    sandbox.knobs.envelope = "code"
    refused = client.allocate("REF-E1", 1, txn_type="DR", email="nobody@example.com").json()
    assert refused == {"code": 1, "message": "Card not found", "payload": "Card not found"}
    sandbox.knobs.envelope = "response_code"
    ok = client.call(ACCOUNT).json()
    assert ok["response_code"] == 0 and ok["response_message"] == "Success"
    assert "code" not in ok


# -- lookups --------------------------------------------------------------------------------------


def test_transaction_lookup_by_reference(client, card):
    client.allocate("REF-L", 40, txn_type="DR", enkashCardId=card)
    found = decimal_json(client.call(TRANSACTIONS, pgReferenceNumber="REF-L"))["payload"]
    assert found["recordsCount"] == 1
    row = found["data"][0]
    assert row["pgReferenceNumber"] == "REF-L"
    assert row["cardTransactionType"] == "DR"
    assert row["amount"] == Decimal("40.00") and row["otbBalance"] == Decimal("460.00")
    assert row["status"] == "SUCCESS" and row["enKashCardId"] == card
    assert row["txnDate"].endswith("Z")
    absent = client.call(TRANSACTIONS, pgReferenceNumber="REF-NEVER").json()["payload"]
    assert absent == {"recordsCount": 0, "data": []}
    credits = client.call(TRANSACTIONS, cardTransactionType="CR").json()["payload"]
    assert [r["pgReferenceNumber"] for r in credits["data"]] == ["REF-SEED"]
    future = client.call(TRANSACTIONS, txnDateFrom="2999-01-01").json()["payload"]
    assert future["recordsCount"] == 0
    several = client.call(TRANSACTIONS, pgReferenceNumbers=["REF-L", "REF-SEED", "REF-NO"])
    assert several.json()["payload"]["recordsCount"] == 2
    assert client.call(TRANSACTIONS, pgReferenceNumbers=[]).json()["payload"]["recordsCount"] == 0
    assert client.call(TRANSACTIONS, pgReferenceNumbers="REF-L").status_code == 400


def test_search_finds_cards(client, card):
    client.allocate("REF-S2", 10, **new_employee(2))
    everyone = client.call(SEARCH).json()["payload"]
    assert everyone["recordsCount"] == 2
    one = client.call(SEARCH, enKashCardId=card).json()["payload"]
    assert one["recordsCount"] == 1
    assert one["data"][0]["email"] == "asha1@example.com"
    assert one["data"][0]["otbBalance"] == 500
    by_mobile = client.call(SEARCH, mobile="9876500002").json()["payload"]
    assert by_mobile["data"][0]["firstName"] == "Asha2"


def test_account_details_totals(client, card):
    client.allocate("REF-A2", Decimal("99.99"), **new_employee(2))
    client.allocate("REF-A3", 100, txn_type="DR", enkashCardId=card)
    payload = decimal_json(client.call(ACCOUNT))["payload"]
    assert payload["availableBalance"] == Decimal("10000000.00") - Decimal("499.99")
    assert payload["availableCardBalance"] == Decimal("499.99")
    assert payload["totalCards"] == 2 and payload["activeCards"] == 2
    assert payload["totalAllocationPoint"] == Decimal("599.99")
    assert payload["totalRedemptionPoint"] == Decimal("100.00")
    assert payload["currentMonthAllocationPoint"] == Decimal("599.99")
    assert payload["currentMonthRedemptionPoint"] == Decimal("100.00")
    assert payload["creditLimit"] == 0 and payload["usedCreditLimit"] == 0
    assert payload["companyName"] == ID.company_name


def test_state_persists_across_restarts_with_a_file(tmp_path):
    path = tmp_path / "sandbox.sqlite3"
    with start_sandbox(store_path=path) as first:
        reply = Client(first).allocate("REF-P", 321, **new_employee())
        card = reply.json()["payload"]["enKashCardId"]
        first.store.close()
    with start_sandbox(store_path=path) as second:
        assert second.store.card_balance(card) == Decimal("321.00")
        assert second.store.pool_balance() == Decimal("9999679.00")
        client = Client(second)
        lookup = client.call(TRANSACTIONS, pgReferenceNumber="REF-P").json()["payload"]
        assert lookup["recordsCount"] == 1
        replay = client.allocate("REF-P", 321, **new_employee())
        assert replay.json() == reply.json()
        assert second.store.commit_count() == 1
        second.store.close()


# -- faults --------------------------------------------------------------------------------------


def test_fail_before_commit_is_503_and_commits_nothing(sandbox, client):
    sandbox.knobs.fail_before_commit_rate = 1
    reply = client.allocate("REF-F", 10, **new_employee())
    assert reply.status_code == 503
    assert sandbox.store.commit_count() == 0
    assert sandbox.store.allocate_requests() == 1


def test_drop_after_commit_times_out_but_the_credit_is_committed(sandbox, client):
    sandbox.knobs.drop_after_commit_rate = 1
    sandbox.knobs.drop_hang_seconds = 3
    with pytest.raises(requests.ReadTimeout):
        client.allocate("REF-DROP", 10, timeout=0.4, **new_employee())
    assert sandbox.store.commit_count() == 1
    sandbox.knobs.drop_after_commit_rate = 0
    lookup = client.call(TRANSACTIONS, pgReferenceNumber="REF-DROP").json()["payload"]
    assert lookup["recordsCount"] == 1


def test_hang_before_commit_times_out_and_commits_nothing(sandbox, client):
    sandbox.knobs.hang_before_commit_rate = 1
    sandbox.knobs.drop_hang_seconds = 0.6
    with pytest.raises(requests.ReadTimeout):
        client.allocate("REF-HANG", 10, timeout=0.3, **new_employee())
    time.sleep(0.5)  # the hang is over, the sandbox has replied 504 to nobody
    assert sandbox.store.commit_count() == 0
    sandbox.knobs.hang_before_commit_rate = 0
    resend = client.allocate("REF-HANG", 10, **new_employee())
    assert resend.json()["code"] == 0
    assert sandbox.store.commit_count() == 1


def test_hang_before_commit_replies_504(sandbox, client):
    sandbox.knobs.hang_before_commit_rate = 1
    sandbox.knobs.drop_hang_seconds = 0.1
    assert client.allocate("REF-504", 10, **new_employee()).status_code == 504
    assert sandbox.store.commit_count() == 0


def test_error_after_commit_is_500_then_the_replay_shows_the_success(sandbox, client):
    sandbox.knobs.error_after_commit_rate = 1
    reply = client.allocate("REF-500", 10, **new_employee())
    assert reply.status_code == 500
    assert sandbox.store.commit_count() == 1
    sandbox.knobs.error_after_commit_rate = 0
    replay = client.allocate("REF-500", 10, **new_employee())
    assert (
        replay.json()["payload"]["enkashCardTxnId"]
        == sandbox.store.transactions()[0]["enkashCardTxnId"]
    )
    assert sandbox.store.commit_count() == 1


def test_malformed_reply_after_commit(sandbox, client):
    sandbox.knobs.malformed_rate = 1
    reply = client.allocate("REF-M", 10, **new_employee())
    assert reply.status_code == 200
    with pytest.raises(ValueError):
        json.loads(reply.text)
    assert sandbox.store.commit_count() == 1


def test_wrong_reference_is_echoed_after_commit(sandbox, client):
    sandbox.knobs.wrong_reference_rate = 1
    reply = client.allocate("REF-W", 10, **new_employee())
    assert reply.json()["code"] == 0
    assert reply.json()["payload"]["pgReferenceNumber"] != "REF-W"
    assert sandbox.store.transactions()[0]["pgReferenceNumber"] == "REF-W"


def test_seeded_fault_draws_repeat():
    def statuses() -> list[int]:
        with start_sandbox(knobs=Knobs(fail_before_commit_rate=0.5, seed=7)) as server:
            client = Client(server)
            codes = [client.call(ACCOUNT).status_code for _ in range(16)]
            server.store.close()
            return codes

    first = statuses()
    assert set(first) == {200, 503}
    assert statuses() == first


def test_admin_endpoints(sandbox, client, card):
    control = sandbox.control_headers
    stats = requests.get(sandbox.url + "/_sandbox/stats", headers=control, timeout=5).json()
    # When the first allocate call arrived and the last one was answered (one call: in order).
    first, last = stats.pop("allocate_window")
    assert 0 < first <= last
    assert stats == {
        "pool_balance": 9999500.0,
        "cards": 1,
        "commit_count": 1,
        "allocate_requests": 1,
        "token_requests": {**NO_TOKEN_REQUESTS, "password": 1},
    }
    changed = requests.post(
        sandbox.url + "/_sandbox/knobs", json={"latency_ms": 5}, headers=control, timeout=5
    ).json()
    assert changed["latency_ms"] == 5 and sandbox.knobs.latency_ms == 5
    bad = requests.post(
        sandbox.url + "/_sandbox/knobs", json={"malformed_rate": 2}, headers=control, timeout=5
    )
    assert bad.status_code == 400
    reset = requests.post(sandbox.url + "/_sandbox/reset", json={}, headers=control, timeout=5)
    assert reset.status_code == 200
    assert sandbox.store.cards() == [] and sandbox.store.commit_count() == 0
    assert requests.get(sandbox.url + "/_sandbox/health", timeout=5).json() == {"status": "ok"}


def test_admin_endpoints_refuse_a_web_page_without_the_control_token(sandbox, client, card):
    """What a page in the same browser can send: a text/plain form POST (no preflight), with
    no custom header. It must neither turn faults on nor wipe the state."""
    url = sandbox.url
    form_post = {"Content-Type": "text/plain"}
    for path, body in (("/_sandbox/knobs", '{"malformed_rate": 1}'), ("/_sandbox/reset", "")):
        refused = requests.post(url + path, data=body, headers=form_post, timeout=5)
        assert refused.status_code == 403, path
        wrong = {**form_post, "X-Sandbox-Token": "not-the-token-of-this-run"}
        assert requests.post(url + path, data=body, headers=wrong, timeout=5).status_code == 403
        # Even with the token, a POST that is not JSON is refused.
        token_only = {**form_post, "X-Sandbox-Token": sandbox.control_token}
        plain = requests.post(url + path, data=body, headers=token_only, timeout=5)
        assert plain.status_code == 415, path
    for path in ("/_sandbox/knobs", "/_sandbox/stats"):
        assert requests.get(url + path, timeout=5).status_code == 403
    assert sandbox.knobs.malformed_rate == 0
    assert sandbox.store.commit_count() == 1 and len(sandbox.store.cards()) == 1
    # Every run has its own token.
    with start_sandbox() as other:
        assert other.control_token != sandbox.control_token and len(other.control_token) >= 32
        assert sandbox.control_token not in repr(sandbox)


def test_the_standalone_sandbox_prints_its_control_token_or_takes_one():
    process = subprocess.Popen(
        [sys.executable, "-m", "services.sandbox", "--port", "0"],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = process.stdout.readline().split()[-1]
        token = process.stdout.readline().split()[-1]
        control = {"X-Sandbox-Token": token}
        assert requests.get(url + "/_sandbox/knobs", timeout=5).status_code == 403
        assert requests.get(url + "/_sandbox/knobs", headers=control, timeout=5).ok
    finally:
        process.terminate()
        process.wait(10)
    too_short = subprocess.run(
        [sys.executable, "-m", "services.sandbox", "--control-token", "short"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
    )
    assert too_short.returncode == 2 and "at least 16 characters" in too_short.stderr


def test_latency_is_concurrent_not_serialised(sandbox, card):
    sandbox.knobs.latency_ms = 50
    clients = [Client(sandbox) for _ in range(16)]
    for each in clients:
        each.bearer()

    def send(i: int) -> int:
        return clients[i % 16].allocate(f"REF-T{i}", 1, enkashCardId=card).json()["code"]

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(send, range(64)))
    elapsed = time.perf_counter() - started
    assert codes == [0] * 64
    assert elapsed < 1.5, f"64 requests took {elapsed:.2f}s"
    assert sandbox.store.card_balance(card) == Decimal("564.00")


def test_stop_is_quick_even_with_a_hanging_request(sandbox, client):
    sandbox.knobs.drop_after_commit_rate = 1
    sandbox.knobs.drop_hang_seconds = 30
    with pytest.raises(requests.ReadTimeout):
        client.allocate("REF-Q", 10, timeout=0.3, **new_employee())
    started = time.perf_counter()
    sandbox.stop()
    assert time.perf_counter() - started < 2
