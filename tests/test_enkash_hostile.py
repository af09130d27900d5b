"""The EnKash client and the use cases on it, against a hostile host over real loopback HTTP.

The rule under test, for anything ambiguous once a request was sent: its outcome is unknown (a
lookup settles it, nothing is resent blindly), and nothing that could be a secret reaches the
ledger, a log line, an exchange or the page.

The embedded sandbox plays the host where it can produce the case (a refusal that quotes the
token, a success naming another card or echoing a secret). Elsewhere a small hand-written HTTP
server does: the sandbox is a faithful EnKash and never repeats a JSON key, drips or floods a
reply, lies about a compression or a record count, or nests JSON 100,000 deep.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO
from urllib.parse import parse_qs

import pytest
from pydantic import SecretStr

from services import allocations, employees, enkash, numbers, reconcile
from services.allocations import NotProvenAbsent, proof_of_absence, resend, settle, submit
from services.config import EnkashConfig
from services.crypto import encrypt_text
from services.enkash import NO_ANSWER, EnkashClient, LoginRefused, OutcomeUnknown
from services.models import AuditKind, Employee, SettleOutcome, Status
from tests.fault_support import SETTINGS, client_for, create, credit

PASSWORD = "Sup3r-S3cret-Passw0rd!"
CLIENT_SECRET = "cl1ent-secret-XYZ-123456"
TOKEN_PATH = "/oauth/token"
ALLOCATE = "/points/allocate"
LOOKUP = "/transaction/all"
SEARCH = "/enKashCard/search"
ACCOUNT = "/cardAccount/get"
CARD = "EKC04AZHXP"
SLOW_DOWN = "EnKash asked to slow down (429)"
NO_GRACE = timedelta(0)


# --- a host that answers byte for byte ------------------------------------------------------------


@dataclasses.dataclass
class Asked:
    path: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode())

    @property
    def reference(self) -> str | None:
        body = self.json()
        return body.get("uniqueReferenceNumber") or body.get("pgReferenceNumber")


#: An answer writes a whole HTTP response (status line, headers, body) to the socket's file.
Answer = Callable[[Asked, BinaryIO], None]


class Host:
    """A loopback HTTP server; ``routes`` maps a path suffix to the ``Answer`` for it."""

    def __init__(self, routes: dict[str, Answer]) -> None:
        self.routes = routes
        self.asked: list[Asked] = []
        self.written = 0  # body bytes written by streaming answers
        self.stop = threading.Event()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                asked = Asked(self.path, body)
                host.asked.append(asked)
                self.close_connection = True
                answer = next(
                    (a for suffix, a in host.routes.items() if self.path.endswith(suffix)),
                    reply(404, {"error": "no route"}),
                )
                try:
                    answer(asked, self.wfile)
                    self.wfile.flush()
                except OSError:
                    pass  # the client hung up: what a cut-off reply looks like from here

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def calls(self, suffix: str) -> list[Asked]:
        return [asked for asked in self.asked if asked.path.endswith(suffix)]

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} Whatever"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join([*lines, "Connection: close", "", ""])).encode("latin-1")


def reply(status: int, body: Any, *, headers: dict[str, str] | None = None) -> Answer:
    """A plain answer; ``body`` as bytes or text is sent as is, anything else as JSON."""
    data = body if isinstance(body, bytes) else (body if isinstance(body, str) else None)
    if data is None:
        data = json.dumps(body)
    raw = data.encode() if isinstance(data, str) else data

    def answer(asked: Asked, out: BinaryIO) -> None:
        fields = {"Content-Type": "application/json", "Content-Length": str(len(raw))}
        out.write(head(status, {**fields, **(headers or {})}) + raw)

    return answer


def by_reference(build: Callable[[str], Any], status: int = 200) -> Answer:
    """An answer built from the reference the request carries."""

    def answer(asked: Asked, out: BinaryIO) -> None:
        reply(status, build(asked.reference or ""))(asked, out)

    return answer


def success(reference: str, **payload: Any) -> dict[str, Any]:
    return {
        "code": 0,
        "message": "Success",
        "payload": {
            "enKashCardId": CARD,
            "enkashCardTxnId": "ECTRSZJ8CRJ2E",
            "pgReferenceNumber": reference,
            "otbBalance": 500,
            **payload,
        },
    }


def token_reply(n: int = 1, expires_in: int = 300) -> Answer:
    return reply(
        200,
        {
            "access_token": f"tok-AbC123dEf456-{n}",
            "token_type": "bearer",
            "refresh_token": f"rf-tok-AbC123dEf456-{n}",
            "expires_in": expires_in,
        },
    )


def routes(**answers: Answer) -> dict[str, Answer]:
    paths = {
        "token": TOKEN_PATH,
        "allocate": ALLOCATE,
        "lookup": LOOKUP,
        "search": SEARCH,
        "account": ACCOUNT,
    }
    return {TOKEN_PATH: token_reply()} | {paths[name]: a for name, a in answers.items()}


@pytest.fixture
def host_factory() -> Iterator[Callable[[dict[str, Answer]], Host]]:
    made: list[Host] = []

    def build(table: dict[str, Answer]) -> Host:
        made.append(Host(table))
        return made[-1]

    yield build
    for host in made:
        host.close()


def config_for(url: str, **changes: Any) -> EnkashConfig:
    config = EnkashConfig(
        base_url=url,
        token_url=f"{url}{TOKEN_PATH}",
        allocate_path="/api/v0/partner/enKashCard/points/allocate",
        partner_id="CRMXWB3ZM",
        company_id="CEK1PU9AOO",
        card_account_id="CAQL8YCV3",
        client_id="desk-client",
        client_secret=SecretStr(CLIENT_SECRET),
        username="ops@example.com",
        password=SecretStr(PASSWORD),
        timeout_seconds=1.0,
        connect_timeout_seconds=0.5,
        connect_retries=0,
    )
    return dataclasses.replace(config, **changes)


def client_of(host: Host, ledger=None, **changes: Any) -> EnkashClient:
    keep = None
    if ledger is not None:

        def keep(exchange: enkash.Exchange) -> None:
            ledger.record_exchange(**dataclasses.asdict(exchange))

    return EnkashClient(config_for(host.url, **changes), on_exchange=keep)


def sent_credit(ledger, client, amount: str = "100") -> allocations.Outcome:
    return submit(ledger, client, credit(CARD, amount), operator="asha", settings=SETTINGS)


def everything_kept(ledger, reference: str) -> str:
    """Every text the ledger keeps for a row: the row, its audit trail, its exchanges."""
    row = ledger.get(reference)
    parts = [repr(row)]
    parts += [repr(event) for event in ledger.audit_trail(reference)]
    parts += [repr(exchange) for exchange in ledger.exchanges_for(reference)]
    return "\n".join(parts)


def prefixes(secret: str) -> list[str]:
    """The ends of a secret: what a cut through it would leave behind."""
    return [secret[:5], secret[-5:]]


# --- 1. a success with an unrecognised code is unknown, not refused -------------------------------


@pytest.mark.parametrize(
    "envelope",
    [
        {"code": None, "message": "Success"},
        {"response_code": "00", "response_message": "Success"},
        {"code": 200, "message": "Success"},
        {"code": "SUCCESS", "message": "Success"},
        {"code": True, "message": "Success"},
    ],
    ids=["null", "00", "200", "SUCCESS", "true"],
)
def test_a_success_with_an_unrecognised_code_is_unknown_never_failed(
    host_factory, ledger, envelope
):
    def answer(reference: str) -> dict[str, Any]:
        body = success(reference)
        del body["code"], body["message"]
        return {**body, **envelope}

    host = host_factory(routes(allocate=by_reference(answer)))
    outcome = sent_credit(ledger, client_of(host, ledger))
    # It may have paid: FAILED would release the budget and offer the row in a correction file.
    assert outcome.status is Status.UNKNOWN
    assert outcome.row.enkash_code is None
    assert "neither its success code (0) nor a refusal" in outcome.row.enkash_message
    assert outcome.headline == "Outcome unknown: EnKash did not give a readable answer"


def test_a_refusal_code_in_a_reply_that_says_success_is_unknown(host_factory, ledger):
    host = host_factory(
        routes(
            allocate=by_reference(
                lambda ref: {**success(ref), "code": 1, "message": "Success"},
            )
        )
    )
    outcome = sent_credit(ledger, client_of(host))
    assert outcome.status is Status.UNKNOWN
    assert "says it succeeded" in outcome.row.enkash_message


# --- 2. a repeated JSON key makes a reply ambiguous -----------------------------------------------


def raw_reply(template: str, status: int = 200) -> Answer:
    def answer(asked: Asked, out: BinaryIO) -> None:
        reply(status, template.replace("REF", asked.reference or ""))(asked, out)

    return answer


@pytest.mark.parametrize(
    "template",
    [
        '{"response_code":1,"response_message":"Insufficient balance","response_code":0,'
        '"payload":{"pgReferenceNumber":"REF","enkashCardTxnId":"T1"}}',
        '{"code":0,"payload":{"pgReferenceNumber":"OTHER-REF","pgReferenceNumber":"REF",'
        '"enkashCardTxnId":"T1"}}',
    ],
    ids=["code", "reference"],
)
def test_a_reply_that_repeats_a_key_is_unknown(host_factory, ledger, template):
    host = host_factory(routes(allocate=raw_reply(template)))
    outcome = sent_credit(ledger, client_of(host))
    assert outcome.status is Status.UNKNOWN
    assert "repeats the key" in outcome.row.enkash_message


def test_an_encrypted_reply_that_repeats_a_key_is_unknown(host_factory, ledger):
    def answer(asked: Asked, out: BinaryIO) -> None:
        plain = '{"code":1,"code":0,"payload":{"pgReferenceNumber":"REF","enkashCardTxnId":"T1"}}'
        plain = plain.replace("REF", asked.reference or "")
        reply(200, {"request": encrypt_text(plain, CLIENT_SECRET)})(asked, out)

    host = host_factory(routes(allocate=answer))
    outcome = sent_credit(ledger, client_of(host))
    assert outcome.status is Status.UNKNOWN
    assert "repeats the key 'code'" in outcome.row.enkash_message


def test_a_lookup_that_repeats_a_key_proves_nothing(host_factory, ledger):
    host = host_factory(
        routes(
            allocate=reply(502, b"<html>502</html>"),
            lookup=raw_reply(
                '{"code":0,"payload":{"data":[{"pgReferenceNumber":"REF","status":"SUCCESS"}],'
                '"data":[]}}'
            ),
        )
    )
    client = client_of(host)
    outcome = sent_credit(ledger, client)
    with pytest.raises(OutcomeUnknown, match="repeats the key 'data'"):
        settle(ledger, client, outcome.row.reference, actor="asha", absence_grace=NO_GRACE)
    assert proof_of_absence(ledger, outcome.row.reference) is None
    with pytest.raises(NotProvenAbsent):
        resend(ledger, client, outcome.row.reference, actor="asha", absence_grace=NO_GRACE)
    assert len(host.calls(ALLOCATE)) == 1


# --- 3 and 4. a reply that drips or never ends ----------------------------------------------------


def drip_chunked(host_of: Callable[[], Host], *, every: float = 0.3, cap: float = 12.0) -> Answer:
    """Headers at once, then a chunk of one space every ``every`` s, for ``cap`` s at most."""

    def answer(asked: Asked, out: BinaryIO) -> None:
        out.write(head(200, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}))
        out.flush()
        ends = time.monotonic() + cap
        while time.monotonic() < ends and not host_of().stop.is_set():
            out.write(b"1\r\n \r\n")
            out.flush()
            time.sleep(every)

    return answer


def drip_sized(host_of: Callable[[], Host], *, every: float = 0.3, cap: float = 12.0) -> Answer:
    """A ``Content-Length`` body sent a byte at a time: one read of it blocks the whole time."""

    def answer(asked: Asked, out: BinaryIO) -> None:
        out.write(head(200, {"Content-Type": "application/json", "Content-Length": "1000"}))
        out.flush()
        ends = time.monotonic() + cap
        while time.monotonic() < ends and not host_of().stop.is_set():
            out.write(b" ")
            out.flush()
            time.sleep(every)

    return answer


@pytest.mark.parametrize("drip", [drip_chunked, drip_sized], ids=["chunked", "sized"])
def test_a_reply_that_drips_is_cut_at_the_call_deadline(host_factory, ledger, drip):
    hosts: list[Host] = []
    hosts.append(host_factory(routes(allocate=drip(lambda: hosts[0]))))
    client = client_of(hosts[0])  # read timeout 1 s, connect 0.5 s: 2.5 s in all
    started = time.monotonic()
    outcome = sent_credit(ledger, client)
    took = time.monotonic() - started
    assert took < 6, f"the call took {took:.1f} s"
    assert outcome.status is Status.UNKNOWN
    assert outcome.row.enkash_message.startswith(NO_ANSWER)
    assert outcome.headline == "Outcome unknown: EnKash did not answer in time"
    assert len(hosts[0].calls(ALLOCATE)) == 1


def test_a_reply_larger_than_the_cap_is_not_read(host_factory, ledger, monkeypatch):
    monkeypatch.setattr(enkash, "MAX_REPLY_BYTES", 1024 * 1024)
    hosts: list[Host] = []

    def flood(asked: Asked, out: BinaryIO) -> None:
        out.write(head(200, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}))
        chunk = b" " * 65536
        while hosts[0].written < 48 * 1024 * 1024 and not hosts[0].stop.is_set():
            out.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            hosts[0].written += len(chunk)

    hosts.append(host_factory(routes(allocate=flood)))
    outcome = sent_credit(ledger, client_of(hosts[0]))
    assert outcome.status is Status.UNKNOWN
    assert "larger than 1 MB" in outcome.row.enkash_message
    # The client stopped reading: the host could not push much more than the socket buffers.
    assert hosts[0].written < 16 * 1024 * 1024


def test_a_declared_length_beyond_the_cap_is_not_read_at_all(host_factory, ledger):
    def huge(asked: Asked, out: BinaryIO) -> None:
        out.write(head(200, {"Content-Type": "application/json", "Content-Length": str(10**12)}))
        out.write(b'{"code":0')

    host = host_factory(routes(allocate=huge))
    outcome = sent_credit(ledger, client_of(host))
    assert outcome.status is Status.UNKNOWN
    assert "larger than 32 MB, so it was not read" in outcome.row.enkash_message


# --- 5. numbers too large to be real --------------------------------------------------------------


def test_an_absurd_count_in_the_account_reply_costs_nothing(host_factory):
    host = host_factory(
        routes(
            account=reply(
                200, {"code": 0, "payload": {"availableBalance": 10, "totalCards": "1e300000"}}
            )
        )
    )
    started = time.monotonic()
    details = client_of(host).account_details()
    assert time.monotonic() - started < 2
    assert details.total_cards == 0  # not a count: unknown, shown as none
    assert details.available_balance == Decimal("10")


@pytest.mark.parametrize("balance", ["1e30", '"1e400"', '"1e26"'])
def test_a_pool_balance_beyond_any_real_pool_is_unknown(host_factory, balance):
    host = host_factory(
        routes(
            account=reply(200, '{"code":0,"payload":{"availableBalance":@}}'.replace("@", balance))
        )
    )
    with pytest.raises(OutcomeUnknown, match="which is not a balance"):
        client_of(host).account_details()


def test_a_card_balance_beyond_any_real_one_is_unknown_in_a_search(host_factory):
    row = '{"enKashCardId":"EKC04AZHXP","email":"asha@example.com","otbBalance":1e30}'
    host = host_factory(
        routes(
            search=reply(
                200, '{"code":0,"payload":{"recordsCount":1,"data":[@]}}'.replace("@", row)
            )
        )
    )
    (holder,) = client_of(host).search_users(card_id=CARD)
    assert holder.balance is None


def test_a_success_whose_balance_overflows_decimal_is_still_a_success(host_factory, ledger):
    host = host_factory(
        routes(
            allocate=raw_reply(
                '{"code":0,"payload":{"pgReferenceNumber":"REF","enKashCardId":"EKC04AZHXP",'
                '"enkashCardTxnId":"ECT1","otbBalance":1e999999999}}'
            )
        )
    )
    outcome = sent_credit(ledger, client_of(host))
    assert outcome.status is Status.SUCCEEDED
    assert outcome.row.balance_after is None
    assert "not stored as a number" in ledger.audit_trail(outcome.row.reference)[-1].detail


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("1E+26"), "1E+26"),
        (Decimal("-1E+30"), "-1E+30"),
        (Decimal("1E+1000000"), "1E+1000000"),
        (Decimal("NaN"), "NaN"),
        (Decimal("Infinity"), "Infinity"),
        (Decimal("99999999999999999999999999999.5"), "99999999999999999999999999999.5"),
    ],
)
def test_a_figure_never_raises_whatever_decimal_it_is_given(value, shown):
    assert numbers.points(value) == shown
    assert numbers.figure(value) == shown
    assert numbers.points(value, decimals=False)  # a whole number may still be grouped
    assert numbers.points(Decimal("1E+25")) == "1,00,00,00,00,00,00,00,00,00,00,00,000.00"


# --- 6. a refused refresh falls back to one password sign-in --------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "refusal",
    [
        reply(401, {"error": "invalid_token", "error_description": "Refresh token expired"}),
        reply(401, b"<html>401 Unauthorized</html>", headers={"Content-Type": "text/html"}),
    ],
    ids=["invalid_token", "html"],
)
def test_any_refusal_of_a_refresh_falls_back_to_one_password_sign_in(host_factory, ledger, refusal):
    grants: list[str] = []

    def token(asked: Asked, out: BinaryIO) -> None:
        grant = asked.form()["grant_type"][0]
        grants.append(grant)
        answer = refusal if grant == "refresh_token" else token_reply(len(grants), 100)
        answer(asked, out)

    host = host_factory(
        routes(token=token, allocate=by_reference(lambda ref: success(ref, enKashCardId=CARD)))
    )
    clock = FakeClock()
    client = EnkashClient(config_for(host.url), clock=clock)
    assert sent_credit(ledger, client).status is Status.SUCCEEDED
    clock.now += 95  # 5 s left: refresh first
    outcome = sent_credit(ledger, client)
    assert outcome.status is Status.SUCCEEDED
    assert grants == ["password", "refresh_token", "password"]
    assert not client.login_refused
    assert client.tokens.token.refresh_token == "rf-tok-AbC123dEf456-3"


def test_a_refused_password_after_a_refused_refresh_is_refused_once(host_factory, ledger):
    grants: list[str] = []

    def token(asked: Asked, out: BinaryIO) -> None:
        grants.append(asked.form()["grant_type"][0])
        if len(grants) == 1:
            token_reply(1, 100)(asked, out)
        else:
            reply(401, {"error": "invalid_token"})(asked, out)

    host = host_factory(routes(token=token, allocate=by_reference(success)))
    clock = FakeClock()
    client = EnkashClient(config_for(host.url), clock=clock)
    sent_credit(ledger, client)
    clock.now += 95
    outcome = sent_credit(ledger, client)
    assert outcome.row.enkash_code == allocations.LOGIN_REFUSED
    assert grants == ["password", "refresh_token", "password"]
    with pytest.raises(LoginRefused):
        client.account_details()
    assert len(grants) == 3  # blocked now, without another attempt


# --- 7. the tokens EnKash issues are redacted like configured secrets -----------------------------


@pytest.fixture
def signed_in(sandbox, ledger):
    """A sandbox client that keeps exchanges in ``ledger``, signed in; and its two tokens."""
    config = dataclasses.replace(
        client_for(sandbox).config, timeout_seconds=1.0, connect_timeout_seconds=0.5
    )

    def keep(exchange: enkash.Exchange) -> None:
        ledger.record_exchange(**dataclasses.asdict(exchange))

    client = EnkashClient(config, on_exchange=keep)
    client.account_details()
    token = client.tokens.token
    return client, token.access_token, token.refresh_token


@pytest.mark.parametrize(
    "said",
    [
        "Token {access} is not authorised for partner CRMXWB3ZM",
        "invalid token={access}",
        '{{"authorization":"Bearer%20{access}"}}',
        "headers: X-Access-Token: {access}",
        "refresh {refresh} revoked",
    ],
    ids=["bare", "token=", "bearer-url-encoded", "header", "refresh"],
)
def test_a_refusal_echoing_an_issued_token_keeps_no_trace_of_it(sandbox, ledger, signed_in, said):
    client, access, refresh = signed_in
    sandbox.knobs.refuse_with = said.format(access=access, refresh=refresh)
    outcome = submit(ledger, client, create("100"), operator="asha", settings=SETTINGS)
    assert outcome.status is Status.FAILED
    kept = everything_kept(ledger, outcome.row.reference)
    shown = f"{outcome.headline} {outcome.explanation}"
    assert ledger.exchanges_for(outcome.row.reference)
    for token in (access, refresh):
        assert token not in kept
        assert token not in shown


# --- 8. redacted first, shortened after -----------------------------------------------------------


@pytest.mark.parametrize("filler", [284, 288, 291])  # 12, 8 and 5 of its characters before the cut
def test_a_secret_across_the_cut_of_a_refusal_leaks_no_part(sandbox, ledger, signed_in, filler):
    client, _, _ = signed_in
    secret = client.config.client_secret.get_secret_value()
    password = client.config.password.get_secret_value()
    for value in (secret, password):
        sandbox.knobs.refuse_with = "E" * filler + " s " + value
        outcome = submit(ledger, client, create("100"), operator="asha", settings=SETTINGS)
        assert outcome.status is Status.FAILED
        kept = everything_kept(ledger, outcome.row.reference)
        for part in prefixes(value):
            assert part not in kept


def test_a_secret_across_the_cut_of_a_kept_unreadable_reply_leaks_no_part(host_factory, ledger):
    page = ("x" * (enkash.MAX_KEPT_REPLY - 5) + PASSWORD).encode()
    host = host_factory(routes(allocate=reply(502, page, headers={"Content-Type": "text/html"})))
    outcome = sent_credit(ledger, client_of(host, ledger))
    (exchange,) = ledger.exchanges_for(outcome.row.reference)
    assert exchange.reply.startswith("xxxx")
    assert PASSWORD[:5] not in exchange.reply


def test_a_secret_across_the_cut_of_a_sign_in_refusal_leaks_no_part(host_factory):
    said = "E" * 290 + " " + PASSWORD
    host = host_factory(
        routes(token=reply(400, {"error": "invalid_grant", "error_description": said}))
    )
    with pytest.raises(LoginRefused) as caught:
        client_of(host).account_details()
    for part in prefixes(PASSWORD):
        assert part not in str(caught.value)
        assert part not in repr(enkash._REFUSED_LOGINS)


# --- 9. every field of a reply is checked, redacted and bounded -----------------------------------


def test_a_success_echoing_secrets_keeps_and_shows_none_of_them(sandbox, ledger, signed_in):
    client, access, _ = signed_in
    password = client.config.password.get_secret_value()
    sandbox.knobs.reply_payload = {
        "enkashCardTxnId": f"ECT-{password}",
        "firstName": access,
        "email": "asha@example.com",
    }
    outcome = submit(ledger, client, create("100"), operator="asha", settings=SETTINGS)
    assert outcome.status is Status.SUCCEEDED
    assert outcome.row.transaction_id == ""  # not shaped like one: not kept as one
    kept = everything_kept(ledger, outcome.row.reference)
    shown = f"{outcome.headline} {outcome.holder_warning}"
    for secret in (password, access):
        assert secret not in kept
        assert secret not in shown
    assert outcome.reported is not None and outcome.reported.first_name == ""


def lookup_of(status: str = "SUCCESS", **row: Any) -> Answer:
    return by_reference(
        lambda ref: {
            "code": 0,
            "payload": {
                "data": [
                    {"pgReferenceNumber": ref, "status": status, "enkashCardTxnId": "ECT1", **row}
                ]
            },
        }
    )


def test_a_lookup_status_of_any_length_is_stored_bounded(host_factory, ledger):
    host = host_factory(
        routes(allocate=reply(502, b"x"), lookup=lookup_of("P" * 200_000, amount=100))
    )
    client = client_of(host)
    outcome = sent_credit(ledger, client)
    settlement = settle(ledger, client, outcome.row.reference, actor="asha", absence_grace=NO_GRACE)
    assert settlement.outcome is SettleOutcome.UNREADABLE
    assert len(settlement.message) < 600
    assert max(len(e.detail) for e in ledger.audit_trail(outcome.row.reference)) < 600


def test_a_lookup_transaction_id_echoing_the_password_is_not_kept(host_factory, ledger):
    host = host_factory(
        routes(
            allocate=reply(502, b"x"),
            lookup=lookup_of(enkashCardTxnId=f"ECT-{PASSWORD}", amount=100, enKashCardId=CARD),
        )
    )
    client = client_of(host)
    outcome = sent_credit(ledger, client)
    settlement = settle(ledger, client, outcome.row.reference, actor="asha", absence_grace=NO_GRACE)
    assert settlement.outcome is SettleOutcome.SUCCEEDED
    assert settlement.row.transaction_id == ""
    assert PASSWORD not in everything_kept(ledger, outcome.row.reference)
    assert PASSWORD not in settlement.message


# --- 10. an answer that disagrees with what was sent is investigated ------------------------------


def test_a_success_naming_another_card_is_a_mismatch_never_re_attributed(sandbox, ledger):
    client = client_for(sandbox)
    card = submit(ledger, client, create("100"), operator="asha", settings=SETTINGS).row.card_id
    sandbox.knobs.reply_payload = {"enKashCardId": "EKC0THER999"}
    outcome = submit(ledger, client, credit(card, "40"), operator="asha", settings=SETTINGS)
    assert outcome.status is Status.UNKNOWN
    assert outcome.row.enkash_code == allocations.REFERENCE_MISMATCH
    assert outcome.row.card_id == card
    assert outcome.headline == "EnKash answered for a different card"
    assert outcome.row.reference in [r.reference for r in reconcile.reference_mismatches(ledger)]
    (waiting,) = [
        u for u in reconcile.unknown_transactions(ledger) if u.reference == outcome.row.reference
    ]
    assert waiting.state == "EnKash answered for another card; not checked since."
    with pytest.raises(allocations.StatusConflict):
        resend(ledger, client, outcome.row.reference, actor="asha", absence_grace=NO_GRACE)


@pytest.mark.parametrize(
    "row",
    [
        {"amount": 99999, "cardTransactionType": "DR", "enKashCardId": "EKC0THER999"},
        {"amount": 100, "cardTransactionType": "CR", "enKashCardId": "EKC0THER999"},
        {"amount": 99999, "cardTransactionType": "CR", "enKashCardId": CARD},
        {"amount": 100, "cardTransactionType": "DR", "enKashCardId": CARD},
        {"amount": "1e400", "enKashCardId": CARD},
    ],
    ids=["all", "card", "amount", "type", "unreadable-amount"],
)
def test_a_lookup_that_disagrees_with_what_was_sent_settles_nothing(host_factory, ledger, row):
    host = host_factory(routes(allocate=reply(502, b"x"), lookup=lookup_of(**row)))
    client = client_of(host)
    outcome = sent_credit(ledger, client, "100")
    settlement = settle(ledger, client, outcome.row.reference, actor="asha", absence_grace=NO_GRACE)
    assert settlement.outcome is SettleOutcome.UNREADABLE
    assert "not as it was sent" in settlement.message
    after = ledger.get(outcome.row.reference)
    assert (after.status, after.card_id) == (Status.UNKNOWN, CARD)
    assert ledger.audit_trail(after.reference)[-1].kind is AuditKind.LOOKUP_UNREADABLE
    with pytest.raises(NotProvenAbsent):
        resend(ledger, client, after.reference, actor="asha", absence_grace=NO_GRACE)
    assert len(host.calls(ALLOCATE)) == 1


# --- 11. a partial or contradictory listing proves nothing ----------------------------------------


def test_a_lookup_whose_count_disagrees_with_its_rows_proves_nothing(host_factory, ledger):
    host = host_factory(
        routes(
            allocate=reply(502, b"x"),
            lookup=reply(200, {"code": 0, "payload": {"recordsCount": 3, "data": []}}),
        )
    )
    client = client_of(host)
    outcome = sent_credit(ledger, client)
    with pytest.raises(OutcomeUnknown, match="proves nothing"):
        settle(ledger, client, outcome.row.reference, actor="asha", absence_grace=NO_GRACE)
    assert proof_of_absence(ledger, outcome.row.reference) is None
    assert len(host.calls(ALLOCATE)) == 1


ASHA = Employee(
    email="asha@example.com", mobile="9600098867", title="Ms", first_name="Asha", gender="F"
)
SOMEONE = {"enKashCardId": "EKC0AAAA11", "email": "someone@example.com", "mobile": "9000000001"}


@pytest.mark.parametrize(
    "payload",
    [
        {"recordsCount": 2, "data": [SOMEONE]},
        {"data": [SOMEONE, "x", 1, None]},
        {"data": [SOMEONE, dict(SOMEONE, enKashCardId="EKC1 [x](https://evil.example)")]},
        {"data": [SOMEONE, dict(SOMEONE, email=12345)]},
        {"data": [SOMEONE], "content": []},
    ],
    ids=["count", "not-objects", "card-id", "email-not-text", "two-listings"],
)
def test_a_partial_or_malformed_user_listing_never_clears_a_create(host_factory, ledger, payload):
    host = host_factory(routes(search=reply(200, {"code": 0, "payload": payload})))
    check = employees.existing_holders(ledger, client_of(host), ASHA)
    assert not check.clear
    assert check.unchecked == employees.SEARCH_UNANSWERED


# --- 12. nothing but EnkashError escapes ----------------------------------------------------------


def test_a_reply_nested_too_deep_to_read_is_unknown(host_factory, ledger):
    deep = encrypt_text("[" * 100_000 + "]" * 100_000, CLIENT_SECRET)
    host = host_factory(
        routes(account=reply(200, {"request": deep}), allocate=reply(200, {"request": deep}))
    )
    client = client_of(host)
    with pytest.raises(OutcomeUnknown, match="not JSON"):
        client.account_details()
    with pytest.raises(OutcomeUnknown, match="not JSON"):
        client.allocate(credit(CARD, "10"))
    plain = host_factory(routes(allocate=reply(200, "[" * 100_000 + "]" * 100_000)))
    with pytest.raises(OutcomeUnknown, match="not JSON"):
        client_of(plain).allocate(credit(CARD, "10"))


@pytest.mark.parametrize("token", ["t\u00f6k\u20ac12345", "abc\r\nX-Evil: 1", "with space"])
def test_a_token_that_cannot_be_a_header_is_refused_at_sign_in(host_factory, ledger, token):
    host = host_factory(
        routes(
            token=reply(200, {"access_token": token, "expires_in": 300}), allocate=reply(200, {})
        )
    )
    outcome = sent_credit(ledger, client_of(host))
    assert outcome.status is Status.FAILED
    assert outcome.row.enkash_code == allocations.NOT_SENT
    assert "cannot be sent in a header" in outcome.row.enkash_message
    assert host.calls(ALLOCATE) == []


# --- 13. what the outcome card says ---------------------------------------------------------------


def test_a_reply_that_does_not_decompress_is_unreadable_not_unanswered(host_factory, ledger):
    def plain_marked_gzip(asked: Asked, out: BinaryIO) -> None:
        body = json.dumps(success(asked.reference or ""))
        reply(200, body, headers={"Content-Encoding": "gzip"})(asked, out)

    host = host_factory(routes(allocate=plain_marked_gzip))
    outcome = sent_credit(ledger, client_of(host))
    assert outcome.status is Status.UNKNOWN
    assert "could not be read" in outcome.row.enkash_message
    assert not outcome.row.enkash_message.startswith(NO_ANSWER)
    assert outcome.headline == "Outcome unknown: EnKash did not give a readable answer"


def test_a_429_on_allocate_says_enkash_asked_to_slow_down(host_factory, ledger):
    host = host_factory(
        routes(allocate=reply(429, {"message": "slow down"}, headers={"Retry-After": "1"}))
    )
    outcome = sent_credit(ledger, client_of(host))
    assert outcome.status is Status.UNKNOWN  # ENKASH_API.md does not say nothing was done
    assert outcome.row.enkash_message.startswith(SLOW_DOWN)
    assert outcome.headline == f"Outcome unknown: {SLOW_DOWN}"


@pytest.mark.parametrize(
    "answer",
    [
        reply(502, b"<html>502</html>", headers={"Content-Type": "text/html"}),
        reply(429, {"error": "rate"}),
        reply(200, {"token_type": "bearer"}),
    ],
    ids=["502", "429", "no-token"],
)
def test_a_sign_in_that_answered_is_not_called_unreachable(host_factory, ledger, answer):
    host = host_factory(routes(token=answer))
    outcome = sent_credit(ledger, client_of(host))
    assert outcome.status is Status.FAILED
    assert outcome.row.enkash_code == allocations.NOT_SENT
    assert "could not be reached" not in outcome.headline
    assert outcome.headline == "Not sent: EnKash's sign-in did not give a usable token"
    assert not client_of(host).login_refused
