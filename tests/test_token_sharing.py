"""One EnKash sign-in per process: every client of a Desk shares one token, over loopback HTTP.

The sandbox counts token requests by grant and outcome (``store.token_requests()``), so these
tests count sign-ins where EnKash would see them, not inside the client.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from services import approvals, bulk
from services.config import load_settings, sandbox_enkash_config
from services.desk import Desk
from services.enkash import LoginRefused
from services.models import Status
from tests.fault_support import create

THREADS = 16


def desk_for(sandbox, data_dir: Path, **changes) -> Desk:
    """A Desk whose EnKash is the loopback ``sandbox`` (no settle loop: only the test calls)."""
    settings = load_settings(
        secrets_file=None,
        points_desk_data_dir=data_dir,
        points_desk_settle_interval_seconds=0,
    )
    config = dataclasses.replace(sandbox_enkash_config(sandbox.url, sandbox.identity), **changes)
    return Desk(settings, enkash_config=config)


def send_batch(desk: Desk, rows: int, **settings) -> dict[Status, int]:
    """Send ``rows`` new-account rows through the bulk runner; the ledger's counts at the end."""
    lines = ["kind,first_name,title,gender,email,mobile,card_id,amount,reason"]
    lines += [f"create,Emp,Ms,F,share{n}@example.com,98{n:08d},,10,token" for n in range(rows)]
    preview = bulk.preview_upload(
        desk.ledger, desk.client, desk.settings, "share.csv", ("\n".join(lines) + "\n").encode()
    )
    assert preview.totals.valid == rows
    record = bulk.queue_batch(desk.ledger, preview, operator="tester", **settings)
    if bulk.needs_approval(desk.ledger, desk.settings, record):
        request = approvals.request_batch(
            desk.ledger, record.batch_id, bulk.batch_total(record), "tester"
        )
        approvals.approve(desk.ledger, request.id, approver="second-person")
    bulk.start_batch(desk.ledger, desk.settings, record.batch_id, actor="tester", wake=desk.pick_up)
    assert desk.runner.wait(record.batch_id, timeout=120)
    return desk.ledger.batch_counts(record.batch_id)


@pytest.fixture
def desk(sandbox, tmp_path: Path):
    the_desk = desk_for(sandbox, tmp_path)
    yield the_desk
    the_desk.close()


def test_sixteen_workers_sending_200_rows_sign_in_once(sandbox, desk):
    counts = send_batch(desk, 200, concurrency=THREADS)
    assert counts[Status.SUCCEEDED] == 200
    assert sandbox.store.commit_count() == 200
    tokens = sandbox.store.token_requests()
    assert tokens["password"] == 1, tokens
    assert tokens["refresh_token"] == 0 and tokens["password_refused"] == 0, tokens


def test_short_lived_tokens_are_renewed_once_per_lifetime_for_all_workers(sandbox, desk):
    lifetime = 2.0
    sandbox.knobs.token_lifetime_seconds = lifetime
    sandbox.knobs.latency_ms = 10
    started = time.monotonic()
    # 16 workers over about three token lifetimes (the rate limit stretches the run).
    counts = send_batch(desk, 240, concurrency=THREADS, rate_limit=40)
    elapsed = time.monotonic() - started
    assert counts[Status.SUCCEEDED] == 240
    tokens = sandbox.store.token_requests()
    refused_refreshes = tokens["refresh_token_refused"]
    assert tokens["password_refused"] == 0, tokens
    assert tokens["password"] <= 1 + refused_refreshes, tokens
    # A token is renewed when less than 10 % of its life is left, so no earlier than 0.9 of a
    # lifetime after the previous one: the whole run needs at most one renewal per such window.
    renewals = tokens["refresh_token"] + refused_refreshes
    assert renewals <= elapsed / (0.9 * lifetime) + 1, (tokens, elapsed)
    assert renewals >= 1, tokens  # the run did outlive a token


def test_a_refused_sign_in_is_tried_once_for_eight_threads(sandbox, tmp_path: Path):
    desk = desk_for(sandbox, tmp_path, password=SecretStr("wrong-password"))
    clients = [desk.new_client() for _ in range(8)]
    start = threading.Barrier(len(clients))
    outcomes: list[list[BaseException | None]] = [[] for _ in clients]

    def work(n: int) -> None:
        start.wait()
        for _ in range(3):  # each thread keeps trying its calls; none may sign in again
            try:
                clients[n].allocate(create())
            except Exception as exc:
                outcomes[n].append(exc)
            else:
                outcomes[n].append(None)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(clients))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        with desk.client() as pooled, pytest.raises(LoginRefused):
            pooled.account_details()
    finally:
        for client in clients:
            client.close()
        desk.close()
    for seen in outcomes:
        assert len(seen) == 3
        assert all(isinstance(exc, LoginRefused) for exc in seen), seen
    tokens = sandbox.store.token_requests()
    assert tokens["password_refused"] == 1, tokens
    assert sum(tokens.values()) == 1, tokens
    assert sandbox.store.allocate_requests() == 0
    assert not sandbox.store.is_locked()


def test_threads_refused_with_the_same_token_sign_in_again_once(sandbox, desk):
    """A 401 on an API call (here: the sandbox forgot its tokens) drops the shared token once."""
    clients = [desk.new_client() for _ in range(8)]
    try:
        clients[0].account_details()
        sandbox.store.reset()  # every token it issued is now refused with 401
        start = threading.Barrier(len(clients))
        errors: list[BaseException] = []

        def work(client) -> None:
            start.wait()
            try:
                client.account_details()
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(client,)) for client in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for client in clients:
            client.close()
    assert errors == []
    tokens = sandbox.store.token_requests()  # counted since the reset
    assert tokens["password"] == 1, tokens
    assert sum(tokens.values()) == 1, tokens
