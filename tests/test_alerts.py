"""Alerts (services/alerts.py): rules, and delivery to a real local webhook receiver, once per
episode, signed, retried with backoff across passes and restarts, on a controlled clock."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import time_machine

from services import alerts, runway, schedules
from services.config import load_settings
from services.models import FailedRun, UpcomingRun
from services.store import Ledger
from tests.pg_support import postgres_ledger

D = Decimal
SECRET = "whsec-test-0123456789abcdef"
T0 = datetime(2026, 1, 20, 6, 30, tzinfo=UTC)


@dataclass
class Receiver:
    """An HTTP receiver on a loopback port the OS chose: answers 500 to the first ``fail``
    POSTs, then 204; keeps every request it got."""

    fail: int = 0
    got: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    url: str = ""

    @property
    def delivered(self) -> list[dict]:
        return [json.loads(body) for _, body, status in self.got if status == 204]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                status = 500 if len(state.got) < state.fail else 204
                state.got.append((dict(self.headers), body, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/points"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shared_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """A ledger on SQLite and on PostgreSQL (where several workers would share it)."""
    if request.param == "sqlite":
        opened = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        yield opened
        opened.dispose()
        return
    with postgres_ledger() as opened:
        yield opened


def settings_for(tmp_path: Path, url: str, **more):
    values = {
        "points_desk_data_dir": tmp_path,
        "points_desk_alert_webhook_url": url,
        "points_desk_alert_webhook_secret": SECRET,
        "points_desk_alert_pool_below": D("1000"),
        "points_desk_alert_runway_days": 14,
        "points_desk_alert_retries": 3,
        "points_desk_alert_backoff_seconds": 1.0,
    }
    values.update(more)
    return load_settings(None, **values)


def verify(headers: dict[str, str], body: bytes) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers[alerts.SIGNATURE_HEADER], expected)


def test_an_alert_fires_once_signed_retries_a_failing_receiver_and_fires_again_when_it_returns(
    shared_ledger, receiver, tmp_path
):
    ledger = shared_ledger
    receiver.fail = 2
    settings = settings_for(tmp_path, receiver.url)
    waits: list[float] = []
    with time_machine.travel(T0, tick=False):
        report = alerts.tick(ledger, settings, pool_balance=D("500"), sleep=waits.append)
    assert [a.key for a in report.active] == ["pool_low"]
    # Two refusals, then delivered, within the pass: waits of 1 s and 2 s between the attempts.
    assert [status for *_, status in receiver.got] == [500, 500, 204]
    assert waits == [1.0, 2.0]
    assert report.sent == [("pool_low", "webhook")]
    headers, body, _ = receiver.got[-1]
    assert verify(headers, body)
    assert not verify(headers, body.replace(b"500", b"501"))  # the signature covers the body
    sent = json.loads(body)
    assert sent["id"] == "pool_low#1"
    assert sent["timestamp"] == T0.isoformat()
    assert "500" in sent["detail"] and "1,000" in sent["detail"]
    [state] = ledger.alert_states()
    assert state.webhook.sent_at == T0 and state.webhook.attempts == 3

    # Still low a minute later: nothing is sent again.
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        assert alerts.tick(ledger, settings, pool_balance=D("400")).sent == []
    assert len(receiver.got) == 3

    # Topped up: the alert clears, and nothing is sent about that.
    with time_machine.travel(T0 + timedelta(minutes=2), tick=False):
        assert alerts.tick(ledger, settings, pool_balance=D("5000")).active == []
    [state] = ledger.alert_states()
    assert not state.active and state.cleared_at == T0 + timedelta(minutes=2)
    assert len(receiver.got) == 3

    # Low again: a new episode, delivered once more.
    with time_machine.travel(T0 + timedelta(minutes=3), tick=False):
        assert alerts.tick(ledger, settings, pool_balance=D("900")).sent == [
            ("pool_low", "webhook")
        ]
        alerts.tick(ledger, settings, pool_balance=D("900"))
    assert [d["id"] for d in receiver.delivered] == ["pool_low#1", "pool_low#2"]
    assert all(verify(h, b) for h, b, _ in receiver.got)


def test_a_receiver_still_failing_is_retried_on_later_passes_with_backoff_and_across_restarts(
    tmp_path, receiver
):
    receiver.fail = 5
    settings = settings_for(tmp_path, receiver.url)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    waits: list[float] = []

    def worker_pass(at: datetime) -> alerts.TickReport:
        ledger = Ledger(url)  # a fresh process each time: only the ledger remembers
        try:
            with time_machine.travel(at, tick=False):
                return alerts.tick(ledger, settings, pool_balance=D("10"), sleep=waits.append)
        finally:
            ledger.dispose()

    first = worker_pass(T0)
    assert [k for k, _, _ in first.failed] == ["pool_low"]
    assert "HTTP 500" in first.failed[0][2]
    assert len(receiver.got) == 3
    # 3 attempts so far: the next pass waits 1 s x 2^3 = 8 s.
    assert worker_pass(T0 + timedelta(seconds=5)).failed == []
    assert len(receiver.got) == 3
    third = worker_pass(T0 + timedelta(seconds=9))
    assert third.sent == [("pool_low", "webhook")]
    assert [status for *_, status in receiver.got] == [500] * 5 + [204]
    assert waits == [1.0, 2.0, 1.0, 2.0]
    # Restarted again: the delivered episode is not sent a second time.
    assert worker_pass(T0 + timedelta(minutes=5)).sent == []
    assert len(receiver.got) == 6


def test_two_passes_at_once_deliver_an_alert_once(shared_ledger, receiver, tmp_path):
    ledger = shared_ledger
    settings = settings_for(tmp_path, receiver.url)
    with time_machine.travel(T0, tick=False):
        found = alerts.evaluate(ledger, settings, pool_balance=D("1"), now=T0)
        ledger.sync_alerts(
            [(a.key, a.kind, a.title, a.detail) for a in found.alerts],
            evaluated_kinds=found.kinds,
            now=T0,
        )
        [state] = ledger.alert_states()
        # Another worker holds the lease: this pass leaves the alert alone.
        assert ledger.claim_alert("pool_low", state.episode, now=T0, lease=alerts.LEASE)
        assert alerts.deliver(ledger, settings, now=T0).sent == []
        ledger.release_alert("pool_low", state.episode)
        assert alerts.deliver(ledger, settings, now=T0).sent == [("pool_low", "webhook")]
    assert len(receiver.got) == 1


def test_no_secret_reaches_a_log_line_a_stored_error_or_the_payload(ledger, tmp_path, caplog):
    # Nothing listens on this port any more: every attempt fails to connect.
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        port = closed.server_address[1]
    url = f"http://127.0.0.1:{port}/hook?token=url-token-abcdef123456"
    settings = settings_for(tmp_path, url, points_desk_alert_backoff_seconds=0.0)
    caplog.set_level(logging.DEBUG)
    with time_machine.travel(T0, tick=False):
        report = alerts.tick(ledger, settings, pool_balance=D("1"), sleep=lambda s: None)
    assert report.failed and "unreachable" in report.failed[0][2]
    stored = repr(ledger.alert_states())
    for secret in (SECRET, "url-token-abcdef123456"):
        assert secret not in caplog.text
        assert secret not in stored
        assert secret not in repr(settings)


def run_at(day: int, total: str, code: str | None = None) -> UpcomingRun:
    return UpcomingRun("sched-7", "Monthly sales bonus", T0 + timedelta(days=day), D(total), code)


def test_the_rules_name_each_alert_by_a_stable_key(ledger, tmp_path, monkeypatch):
    settings = settings_for(tmp_path, "http://127.0.0.1:9/x", points_desk_alert_unknown_minutes=60)
    monkeypatch.setattr(
        schedules, "upcoming_runs", lambda _l, *, now, until: [run_at(3, "800"), run_at(33, "800")]
    )
    failed = FailedRun("sched-9", "Weekly top-up", T0 - timedelta(days=1), 4, "B-1")
    monkeypatch.setattr(schedules, "failed_runs", lambda _l, *, since: [failed])
    monkeypatch.setattr(ledger, "unknown_since", lambda before: (2, T0 - timedelta(hours=3)))
    found = alerts.evaluate(ledger, settings, pool_balance=D("900"), now=T0)
    # No burn: 900 - 800 leaves 100 on day 3, and the day-33 run is 700 short (the pool runs
    # out in 33 days: not within 14, so no runway alert).
    assert [a.key for a in found.alerts] == [
        "pool_low",
        "run_wont_fit:sched-7:2026-02-22T06:30Z",
        "run_failed:sched-9:2026-01-19T06:30Z",
        "unknown_old",
    ]
    by_key = {a.key: a for a in found.alerts}
    assert "700 points short" in by_key["run_wont_fit:sched-7:2026-02-22T06:30Z"].detail
    assert "4 failed rows" in by_key["run_failed:sched-9:2026-01-19T06:30Z"].detail
    # EnKash silent: the pool's alerts are not evaluated, so they are neither raised nor cleared.
    silent = alerts.evaluate(ledger, settings, pool_balance=None, now=T0)
    assert silent.kinds == {"run_failed", "unknown_old"}
    assert [a.kind for a in silent.alerts] == ["run_failed", "unknown_old"]


def test_the_pool_alerts_stay_as_they_were_while_enkash_is_silent(ledger, receiver, tmp_path):
    settings = settings_for(tmp_path, receiver.url)
    with time_machine.travel(T0, tick=False):
        alerts.tick(ledger, settings, pool_balance=D("1"))
        alerts.tick(ledger, settings, pool_balance=None)
        assert [s.key for s in ledger.alert_states(active_only=True)] == ["pool_low"]
        alerts.tick(ledger, settings, pool_balance=D("1"))
    assert len(receiver.got) == 1


def test_the_worker_ticker_runs_a_pass_at_most_once_per_interval(ledger, tmp_path, monkeypatch):
    settings = settings_for(tmp_path, "http://127.0.0.1:9/x", points_desk_alert_interval_seconds=60)
    passes = []
    monkeypatch.setattr(alerts, "tick", lambda *a, **k: passes.append(k["pool_balance"]))
    ticker = alerts.Ticker(ledger, settings, lambda: D("5"))
    assert ticker.maybe_start()
    ticker._thread.join(5)
    assert not ticker.maybe_start()  # within the minute
    assert passes == [D("5")]
    off = alerts.Ticker(
        ledger, settings.model_copy(update={"points_desk_alert_interval_seconds": 0}), lambda: None
    )
    assert not off.maybe_start()
    # No channel configured (the default): the worker spends nothing on alerts.
    quiet = alerts.Ticker(ledger, load_settings(None, points_desk_data_dir=tmp_path), lambda: None)
    assert not quiet.maybe_start()
    assert passes == [D("5")]


def test_a_webhook_needs_its_secret(tmp_path):
    from services.config import ConfigError

    with pytest.raises(ConfigError, match="WEBHOOK_SECRET"):
        load_settings(None, points_desk_alert_webhook_url="http://127.0.0.1:9/x")


def test_runway_alert_uses_the_projection(tmp_path):
    settings = settings_for(tmp_path, "http://127.0.0.1:9/x")
    projection = runway.project(D("1000"), D("100"), [], [], now=T0)  # 0 on day 10, <0 on 11
    found = alerts.rules(
        settings, pool_balance=D("1000"), projection=projection, failed=[], unknown=(0, None)
    )
    assert [a.key for a in found.alerts] == ["runway:14d"]
    assert "31 Jan 2026" in found.alerts[0].detail


def test_a_sending_worker_delivers_the_alerts_of_its_desk(tmp_path, receiver, monkeypatch):
    """The worker's pass (services/worker.py) reads the pool from EnKash (the sandbox holds
    1,00,00,000) and delivers the alert; the Desk's own process is the worker here."""
    import time

    from services.desk import Desk
    from tests.conftest import _isolate_env

    _isolate_env(monkeypatch, tmp_path)
    settings = settings_for(tmp_path, receiver.url, points_desk_alert_pool_below=D("20000000"))
    desk = Desk(settings, sender=True)
    try:
        deadline = time.monotonic() + 30
        while not receiver.delivered and time.monotonic() < deadline:
            time.sleep(0.05)
        [sent] = receiver.delivered
        assert sent["key"] == "pool_low" and "1,00,00,000" in sent["detail"]
        assert desk.worker is not None and not desk.worker.alerts.maybe_start()  # rate-limited
    finally:
        desk.close()
