"""Fault injection: the real client against the sandbox, each fault the network or EnKash can throw.

For every fault: the ledger ends with the right status; after settling (lookups, and resends of
what a lookup proved absent) the sandbox and the ledger agree on every card's balance; and no
reference was ever paid twice (``assert_books_agree``).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from pydantic import SecretStr

from services import reconcile
from services.allocations import LOGIN_REFUSED, NOT_SENT, REFERENCE_MISMATCH, submit
from services.config import sandbox_enkash_config
from services.enkash import EnkashClient
from services.models import Status
from services.sandbox import start_sandbox
from services.store import Ledger
from tests.fault_support import (
    NO_GRACE,
    SETTINGS,
    assert_books_agree,
    client_for,
    create,
    credit,
    debit,
    reset_knobs,
    settle_everything,
)

PROJECT = Path(__file__).resolve().parent.parent


def open_card(ledger, client, amount="1000") -> str:
    outcome = submit(ledger, client, create(amount), operator="asha")
    assert outcome.status is Status.SUCCEEDED
    return outcome.row.card_id


def settle_and_audit(ledger, client, sandbox):
    reset_knobs(sandbox)
    settle_everything(ledger, client)
    return assert_books_agree(ledger, sandbox.store)


class CountingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def send(self, request, **kwargs):
        self.paths.append(request.path_url)
        return super().send(request, **kwargs)


# --- never reached EnKash: failed, nothing moved --------------------------------------------------


def test_connection_refused_while_the_sandbox_is_stopped(ledger, sandbox, client):
    card = open_card(ledger, client)
    sandbox.stop()
    outcome = submit(ledger, client, credit(card, "10"), operator="asha")
    assert outcome.status is Status.FAILED
    assert outcome.row.enkash_code == NOT_SENT
    assert "Nothing was sent" in outcome.explanation

    # EnKash is back (same state, new address): the books still agree and work goes on.
    revived = start_sandbox(store=sandbox.store)
    try:
        with client_for(revived) as fresh:
            assert submit(ledger, fresh, credit(card, "10"), operator="asha").status is (
                Status.SUCCEEDED
            )
            settle_and_audit(ledger, fresh, revived)
    finally:
        revived.stop()
    assert sandbox.store.card_balance(card) == Decimal("1010.00")


def test_connection_refused_on_a_closed_port(ledger, sandbox):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = dataclasses.replace(
        sandbox_enkash_config(f"http://127.0.0.1:{port}", sandbox.identity),
        connect_timeout_seconds=0.5,
    )
    with EnkashClient(config) as dead:
        outcome = submit(ledger, dead, create("100"), operator="asha")
    assert outcome.status is Status.FAILED and outcome.row.enkash_code == NOT_SENT
    assert sandbox.store.allocate_requests() == 0
    assert_books_agree(ledger, sandbox.store)


@contextmanager
def blackhole() -> Iterator[str]:
    """A listening socket that never accepts, its queue full: connecting to it times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.settimeout(0.2)
            fillers.append(filler)
            try:
                filler.connect(address)
            except TimeoutError:
                break
        yield f"http://{address[0]}:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_connect_timeout_is_not_sent_and_is_retried_only_boundedly(ledger, sandbox, client):
    card = open_card(ledger, client)
    with blackhole() as url:
        # The sign-in works (sandbox); the API host does not accept connections.
        config = dataclasses.replace(
            sandbox_enkash_config(sandbox.url, sandbox.identity),
            base_url=url,
            connect_timeout_seconds=0.2,
        )
        started = time.monotonic()
        with EnkashClient(config) as stuck:
            outcome = submit(ledger, stuck, credit(card, "10"), operator="asha")
        assert time.monotonic() - started < 5
    assert outcome.status is Status.FAILED and outcome.row.enkash_code == NOT_SENT
    assert "connect timeout" in outcome.row.enkash_message
    assert sandbox.store.allocate_requests() == 1  # only the create; the credit never arrived
    settle_and_audit(ledger, client, sandbox)


# --- sent, answer lost: unknown, then settled -----------------------------------------------------


@pytest.mark.parametrize(
    ("knob", "committed"),
    [
        ("hang_before_commit_rate", False),  # read timeout, EnKash never committed
        ("drop_after_commit_rate", True),  # read timeout after EnKash committed
        ("error_after_commit_rate", True),  # HTTP 500 after the commit
        ("fail_before_commit_rate", False),  # HTTP 503 before anything happened
        ("malformed_rate", True),  # committed, reply cut short (not JSON)
    ],
)
def test_an_unknown_outcome_is_settled_without_paying_twice(
    ledger, sandbox, client, knob, committed
):
    card = open_card(ledger, client, "1000")
    sandbox.knobs.drop_hang_seconds = 1.0  # outlives the client's 0.5 s read timeout
    setattr(sandbox.knobs, knob, 1)
    allocation = debit(card, "300")
    outcome = submit(ledger, client, allocation, operator="asha", settings=SETTINGS)
    assert outcome.status is Status.UNKNOWN
    reset_knobs(sandbox)
    expected = Decimal("700.00") if committed else Decimal("1000.00")
    assert sandbox.store.card_balance(card) == expected

    check = reconcile.check(
        ledger, client, allocation.reference, actor="asha", absence_grace=NO_GRACE
    )
    assert check.outcome == ("succeeded" if committed else "absent")
    if not committed:
        assert check.resend_allowed
        result = reconcile.resend(
            ledger, client, allocation.reference, actor="asha", absence_grace=NO_GRACE
        )
        assert result.outcome is not None and result.outcome.status is Status.SUCCEEDED
    row = ledger.get(allocation.reference)
    assert row.status is Status.SUCCEEDED
    assert row.balance_after == Decimal("700.00")
    settle_and_audit(ledger, client, sandbox)
    assert sandbox.store.card_balance(card) == Decimal("700.00")


def test_a_wrong_reference_echoed_is_unknown_then_listed_for_investigation(ledger, sandbox, client):
    card = open_card(ledger, client)
    sandbox.knobs.wrong_reference_rate = 1
    allocation = credit(card, "25")
    outcome = submit(ledger, client, allocation, operator="asha")
    assert outcome.status is Status.UNKNOWN
    assert outcome.row.enkash_code == REFERENCE_MISMATCH
    assert [r.reference for r in reconcile.reference_mismatches(ledger)] == [allocation.reference]
    refused = reconcile.resend(ledger, client, allocation.reference, actor="asha")
    assert refused.outcome is None and "never resent" in refused.refusal
    books = settle_and_audit(ledger, client, sandbox)
    assert books.commits == 2
    # Settled by its own reference, and still on the investigation list.
    assert ledger.get(allocation.reference).status is Status.SUCCEEDED
    assert [r.reference for r in reconcile.reference_mismatches(ledger)] == [allocation.reference]


# --- tokens and sign-in ---------------------------------------------------------------------------


def test_a_token_that_expires_mid_sequence_is_renewed_and_nothing_doubles(ledger, sandbox):
    sandbox.knobs.token_lifetime_seconds = 1
    config = dataclasses.replace(
        sandbox_enkash_config(sandbox.url, sandbox.identity), timeout_seconds=1
    )
    # A frozen clock: the client believes its token is still fresh, so EnKash's 401 is what
    # tells it (the worst case: the request is refused at the door, then sent again once).
    session = CountingSession()
    with EnkashClient(config, session=session, clock=lambda: 0.0) as frozen:
        card = open_card(ledger, frozen)
        time.sleep(1.1)
        assert submit(ledger, frozen, credit(card, "10"), operator="asha").status is (
            Status.SUCCEEDED
        )
    assert session.paths.count("/oauth/token") == 2
    # An honest clock renews before expiry, between calls spread over three token lifetimes.
    with client_for(sandbox) as honest:
        for _ in range(4):
            assert submit(ledger, honest, credit(card, "10"), operator="asha").status is (
                Status.SUCCEEDED
            )
            time.sleep(0.6)
    books = settle_and_audit(ledger, honest, sandbox)
    assert books.commits == 6
    assert sandbox.store.card_balance(card) == Decimal("1050.00")


def test_a_refused_sign_in_sends_nothing_and_is_not_retried(ledger, sandbox, client):
    card = open_card(ledger, client)
    config = dataclasses.replace(
        sandbox_enkash_config(sandbox.url, sandbox.identity), password=SecretStr("wrong")
    )
    session = CountingSession()
    with EnkashClient(config, session=session) as refused:
        for _ in range(3):
            outcome = submit(ledger, refused, credit(card, "10"), operator="asha")
            assert outcome.status is Status.FAILED
            assert outcome.row.enkash_code == LOGIN_REFUSED
    assert session.paths == ["/oauth/token"]  # one sign-in attempt, then none
    assert sandbox.store.allocate_requests() == 1  # only the create
    assert not sandbox.store.is_locked()
    settle_and_audit(ledger, client, sandbox)


# --- the process killed mid-run -------------------------------------------------------------------

WORKER = """
import dataclasses, sys
from services.allocations import submit
from services.config import sandbox_enkash_config
from services.enkash import EnkashClient
from services.store import Ledger
from services.models import Allocation
from services.sandbox import SandboxIdentity

url, ledger_url, card, count = sys.argv[1:5]
ledger = Ledger(ledger_url)
config = dataclasses.replace(sandbox_enkash_config(url, SandboxIdentity()), timeout_seconds=60)
client = EnkashClient(config)
for i in range(int(count)):
    allocation = Allocation(
        reference=f"KILL-{i:04d}-{card}", kind="credit", amount="10", card_id=card
    )
    print("sending", allocation.reference, flush=True)
    outcome = submit(ledger, client, allocation, operator="worker")
    print("done", allocation.reference, outcome.status.value, flush=True)
"""


def wait_for(condition, timeout: float = 20.0, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {message}")


@pytest.mark.parametrize("moment", ["after_commit", "before_commit"])
def test_a_process_killed_mid_run_recovers_and_settles(tmp_path, sandbox, moment):
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(ledger_url)
    with client_for(sandbox) as client:
        card = open_card(ledger, client)
    sandbox.knobs.drop_hang_seconds = 30  # the worker's call hangs until it is killed
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, sandbox.url, ledger_url, card, "40"],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(worker.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: sum(line.startswith("done") for line in lines) >= 3, message="3 sends")
        knob = "drop_after_commit_rate" if moment == "after_commit" else "hang_before_commit_rate"
        setattr(sandbox.knobs, knob, 1)
        committed = {t["pgReferenceNumber"] for t in sandbox.store.transactions()}

        def in_flight():
            sending = ledger.rows(statuses=[Status.SENDING])
            if not sending:
                return None
            row = sending[0]
            is_committed = row.reference in {
                t["pgReferenceNumber"] for t in sandbox.store.transactions()
            }
            # A call answered normally finishes in milliseconds; one still in flight after
            # 0.3 s met the fault (a row sent just before it was armed may still finish).
            hung = (time.time() - row.updated_at.timestamp()) > 0.3
            if moment == "after_commit" and is_committed and hung:
                return row
            if moment == "before_commit" and not is_committed and hung:
                return row
            return None

        victim = wait_for(in_flight, message="a call in flight")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert worker.returncode == -signal.SIGKILL
    ledger.dispose()
    assert (victim.reference in committed) is False

    # A fresh start: the interrupted row becomes UNKNOWN, then settling resolves it.
    restarted = Ledger(ledger_url)
    try:
        assert restarted.get(victim.reference).status is Status.SENDING
        assert restarted.recover_interrupted(actor="startup") == 1
        assert restarted.get(victim.reference).status is Status.UNKNOWN
        with client_for(sandbox) as client:
            check = reconcile.check(
                restarted, client, victim.reference, actor="asha", absence_grace=NO_GRACE
            )
            assert check.outcome == ("succeeded" if moment == "after_commit" else "absent")
            books = settle_and_audit(restarted, client, sandbox)
        assert restarted.get(victim.reference).status is Status.SUCCEEDED
        assert books.transactions == books.commits
        done = sum(line.startswith("done") for line in lines)
        assert sandbox.store.card_balance(card) == Decimal("1000.00") + 10 * (done + 1)
    finally:
        restarted.dispose()
