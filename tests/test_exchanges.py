"""The exchange inspector: every call to EnKash for a transaction is kept with it, redacted,
the AES envelope shown decrypted, and pruning old exchanges never touches the ledger."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from services import allocations, exchanges
from services.config import DEFAULT_ALLOCATE_PATH
from services.models import Status
from services.worker import Worker
from tests.fault_support import client_for, create


def inspected(sandbox, ledger, **changes):
    """A sandbox client whose exchanges go to ``ledger``, as the Desk wires it."""
    client = client_for(sandbox, **changes)
    client.on_exchange = lambda exchange: ledger.record_exchange(**asdict(exchange))
    return client


def test_a_credit_keeps_its_exchange_with_request_reply_status_code_and_latency(sandbox, ledger):
    allocation = create("250")
    with inspected(sandbox, ledger) as client:
        allocations.submit(ledger, client, allocation, operator="asha")
    [kept] = ledger.exchanges_for(allocation.reference)
    assert kept.endpoint == DEFAULT_ALLOCATE_PATH
    assert kept.http_status == 200 and kept.enkash_code == "0"
    assert kept.latency_ms is not None and kept.latency_ms >= 0
    request = json.loads(kept.request)
    assert request["body"]["uniqueReferenceNumber"] == allocation.reference
    assert request["body"]["loadAmount"] == 250
    assert request["headers"] == {"partnerId": sandbox.identity.partner_id}
    reply = json.loads(kept.reply)
    assert reply["payload"]["pgReferenceNumber"] == allocation.reference
    assert not kept.encrypted and not kept.error


def test_a_credit_is_two_writes_its_exchange_kept_with_its_outcome(sandbox, ledger, monkeypatch):
    """The intent, then the outcome with the call's exchange in the same transaction: a
    credit from the form takes the ledger's one writer twice, not three times."""
    writes: list[str] = []
    real_writing = ledger.writing

    def writing():
        writes.append("write")
        return real_writing()

    allocation = create("250")
    with inspected(sandbox, ledger) as client:
        kept_by = client.on_exchange
        monkeypatch.setattr(ledger, "writing", writing)
        outcome = allocations.submit(ledger, client, allocation, operator="asha")
        assert client.on_exchange is kept_by  # the client's own keeper again afterwards
    assert outcome.status is Status.SUCCEEDED
    assert len(writes) == 2
    [kept] = ledger.exchanges_for(allocation.reference)
    assert kept.http_status == 200


def test_an_exchange_whose_outcome_cannot_be_written_is_still_kept(sandbox, ledger, monkeypatch):
    allocation = create("250")
    real = ledger.transition

    def transition(reference, to_status, **kwargs):
        if kwargs.get("exchanges"):
            raise RuntimeError("the database refused the write")
        return real(reference, to_status, **kwargs)

    with inspected(sandbox, ledger) as client:
        monkeypatch.setattr(ledger, "transition", transition)
        outcome = allocations.submit(ledger, client, allocation, operator="asha")
    assert outcome.status is Status.SUCCEEDED  # written again, less of the reply
    [kept] = ledger.exchanges_for(allocation.reference)
    assert kept.http_status == 200


def test_a_refusal_and_a_lookup_are_kept_too(sandbox, ledger):
    sandbox.knobs.refuse_with = "Card is blocked"
    allocation = create("100")
    with inspected(sandbox, ledger) as client:
        allocations.submit(ledger, client, allocation, operator="asha")
        client.find_transaction(allocation.reference)
    refused, lookup = ledger.exchanges_for(allocation.reference)
    assert refused.enkash_message == "Card is blocked" and "BusinessRefusal" in refused.error
    assert lookup.endpoint.endswith("/transaction/all")


def test_the_inspector_never_stores_a_secret_token_or_authorization_header(sandbox, ledger):
    allocation = create("100")
    with inspected(sandbox, ledger) as client:
        allocations.submit(ledger, client, allocation, operator="asha")
        token = client.tokens.token.access_token
        refresh = client.tokens.token.refresh_token
    [kept] = ledger.exchanges_for(allocation.reference)
    stored = json.dumps(asdict(kept), default=str)
    bundle = exchanges.support_bundle(ledger, allocation.reference)
    for text in (stored, bundle):
        for needle in (
            token,
            refresh,
            sandbox.identity.client_secret,
            sandbox.identity.password,
            "Authorization",
            "Bearer",
        ):
            assert needle and needle not in text, f"{needle!r} kept"


def test_the_encrypted_envelope_is_kept_decrypted(sandbox, ledger):
    sandbox.knobs.encrypt = True
    allocation = create("75")
    with inspected(sandbox, ledger, encrypt=True) as client:
        outcome = allocations.submit(ledger, client, allocation, operator="asha")
    assert outcome.row.status is Status.SUCCEEDED
    [kept] = ledger.exchanges_for(allocation.reference)
    assert kept.encrypted
    assert json.loads(kept.request)["body"]["uniqueReferenceNumber"] == allocation.reference
    reply = json.loads(kept.reply)
    assert reply["payload"]["pgReferenceNumber"] == allocation.reference
    assert '"request"' not in kept.reply  # not the base64 envelope


def test_the_support_bundle_holds_the_row_its_trail_and_every_exchange(sandbox, ledger):
    allocation = create("100")
    with inspected(sandbox, ledger) as client:
        allocations.submit(ledger, client, allocation, operator="asha")
    bundle = json.loads(exchanges.support_bundle(ledger, allocation.reference))
    assert bundle["transaction"]["reference"] == allocation.reference
    assert bundle["transaction"]["status"] == "SUCCEEDED"
    assert bundle["audit_trail"][0]["kind"] == "INTENT"
    assert bundle["exchanges"][0]["reply"]["payload"]["pgReferenceNumber"] == allocation.reference


def test_pruning_old_exchanges_keeps_every_ledger_row_and_audit_event(sandbox, ledger):
    old, new = create("100"), create("200")
    with inspected(sandbox, ledger) as client:
        allocations.submit(ledger, client, old, operator="asha")
        allocations.submit(ledger, client, new, operator="asha")
    long_ago = datetime.now(UTC) - timedelta(days=120)
    ledger.record_exchange(
        reference=old.reference,
        at=long_ago,
        endpoint="/x",
        request="{}",
        reply="{}",
        http_status=200,
        enkash_code="0",
        enkash_message=None,
        latency_ms=1,
        encrypted=False,
    )
    rows_before = [ledger.get(a.reference) for a in (old, new)]
    trails_before = [ledger.audit_trail(a.reference) for a in (old, new)]
    # The worker's periodic pass, with the default retention (90 days).
    worker = SimpleNamespace(desk=SimpleNamespace(ledger=ledger), retention=timedelta(days=90))
    assert Worker.prune(worker) == 1  # type: ignore[arg-type]
    assert len(ledger.exchanges_for(old.reference)) == 1  # the recent one stays
    assert len(ledger.exchanges_for(new.reference)) == 1
    assert [ledger.get(a.reference) for a in (old, new)] == rows_before
    assert [ledger.audit_trail(a.reference) for a in (old, new)] == trails_before


def test_retention_is_a_setting_with_a_90_day_default():
    from services.config import load_settings

    assert load_settings(secrets_file=None).points_desk_exchange_retention_days == 90
    settings = load_settings(secrets_file=None, points_desk_exchange_retention_days=7)
    assert settings.points_desk_exchange_retention_days == 7
