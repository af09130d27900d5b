"""Alerts: low pool, short runway, runs that will not fit or failed, outcomes unknown too long.

Rules (``rules``, pure) turn what is known now into a set of active alerts, each with a stable key:

* ``pool_low``: the pool is below ``POINTS_DESK_ALERT_POOL_BELOW`` points;
* ``runway:<N>d``: the projected pool (services/runway.py) runs out in fewer than N days
  (``POINTS_DESK_ALERT_RUNWAY_DAYS``);
* ``run_wont_fit:<schedule>:<due>``: a scheduled run the pool or its programme cannot cover;
* ``run_failed:<schedule>:<due>``: a scheduled run that left failed rows, for
  ``POINTS_DESK_ALERT_FAILED_RUN_DAYS`` days;
* ``unknown_old``: outcomes unknown for longer than ``POINTS_DESK_ALERT_UNKNOWN_MINUTES``.

``tick`` (one pass of a sending worker, every ``POINTS_DESK_ALERT_INTERVAL_SECONDS``) evaluates
the rules, records them in the ledger's ``alert_states`` (services/store/alerts.py) and delivers
each active alert ONCE per episode: to the webhook (a JSON POST whose body carries a timestamp and
is signed with HMAC-SHA256 under ``POINTS_DESK_ALERT_WEBHOOK_SECRET`` in the
``X-Points-Desk-Signature: sha256=<hex>`` header) and, when an SMTP host is set, by e-mail. An
alert that clears is marked cleared; when it returns it is a new episode and is delivered again.

A failed delivery is retried ``POINTS_DESK_ALERT_RETRIES`` times in the pass, waiting
``POINTS_DESK_ALERT_BACKOFF_SECONDS`` and doubling, then on later passes: each channel's attempts
are kept, and the next pass waits ``backoff * 2 ** attempts`` (at most an hour) before trying
again. Delivery is at least once: a worker that dies between a receiver's 2xx and writing it down
sends that episode again, with the same ``id`` (``<key>#<episode>``) for the receiver to drop.

The webhook URL, its secret and the SMTP password are secrets: no log line, error or page names
them (errors name the channel and what went wrong, redacted).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from typing import Any

import requests

from services import runway, schedules
from services.config import Settings
from services.models import FailedRun
from services.numbers import figure
from services.redact import redact
from services.store import AlertState, Ledger
from services.store.summaries import IST

log = logging.getLogger("points_desk.alerts")

SIGNATURE_HEADER = "X-Points-Desk-Signature"
#: Kinds of alert, in the order the dashboard lists them.
KINDS = ("pool_low", "runway", "run_wont_fit", "run_failed", "unknown_old")
#: Kinds that need the pool balance: not evaluated (left as they were) when EnKash is silent.
POOL_KINDS = frozenset({"pool_low", "runway", "run_wont_fit"})
MAX_WAIT = timedelta(hours=1)  # the longest wait between passes' attempts
LEASE = timedelta(minutes=5)  # how long a worker may take over one alert's delivery
WEBHOOK_TIMEOUT = 10.0  # seconds
SMTP_TIMEOUT = 15.0


@dataclass(frozen=True)
class Alert:
    """One active alert: a stable ``key``, its ``kind``, and words for people."""

    key: str
    kind: str
    title: str
    detail: str


@dataclass(frozen=True)
class Evaluation:
    """What the rules found now; ``kinds`` are those evaluated (the others are unknown)."""

    alerts: list[Alert]
    kinds: frozenset[str]
    runway: runway.Runway | None = None


def _day(moment: datetime) -> str:
    return f"{moment.astimezone(IST):%d %b %Y %H:%M} IST"


def _due_key(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def rules(
    settings: Settings,
    *,
    pool_balance: Decimal | None,
    projection: runway.Runway | None,
    failed: Sequence[FailedRun],
    unknown: tuple[int, datetime | None],
) -> Evaluation:
    """The active alerts from what is known (pure). ``pool_balance``/``projection`` ``None``:
    EnKash did not say, so the pool's alerts are not evaluated. ``unknown`` is (how many rows are
    unknown for longer than the setting, the oldest's last change)."""
    found: list[Alert] = []
    kinds = {"run_failed", "unknown_old"}
    if pool_balance is not None and projection is not None:
        kinds |= POOL_KINDS
        below = settings.points_desk_alert_pool_below
        if below > 0 and pool_balance < below:
            found.append(
                Alert(
                    "pool_low",
                    "pool_low",
                    f"Pool below {figure(below)} points",
                    f"The pool holds {figure(pool_balance)} points, below the alert level of "
                    f"{figure(below)}.",
                )
            )
        days = settings.points_desk_alert_runway_days
        left = projection.days_left
        if days > 0 and left is not None and left < days:
            assert projection.runs_out_on is not None
            found.append(
                Alert(
                    f"runway:{days}d",
                    "runway",
                    f"Pool runs out in {left} days",
                    f"At {figure(projection.ad_hoc_per_day)} points a day besides the scheduled "
                    f"runs, the pool of {figure(pool_balance)} points runs out on "
                    f"{projection.runs_out_on:%d %b %Y}, within {days} days.",
                )
            )
        for short in projection.shortfalls:
            r = short.run
            why = []
            if short.pool_shortfall > 0:
                why.append(f"the pool will be {figure(short.pool_shortfall)} points short")
            if short.programme_shortfall > 0:
                why.append(
                    short.programme_note
                    or f"programme {r.programme_code or 'General'} will be "
                    f"{figure(short.programme_shortfall)} points short"
                )
            found.append(
                Alert(
                    f"run_wont_fit:{r.schedule_id}:{_due_key(r.due_at)}",
                    "run_wont_fit",
                    f"Scheduled run will not fit: {r.label}",
                    f"{r.label} ({figure(r.total)} points) due {_day(r.due_at)}: "
                    + "; ".join(why)
                    + ".",
                )
            )
    for run in failed:
        found.append(
            Alert(
                f"run_failed:{run.schedule_id}:{_due_key(run.due_at)}",
                "run_failed",
                f"Scheduled run failed: {run.label}",
                f"{run.label} due {_day(run.due_at)} left {run.failed_rows:,} failed rows"
                + (f" (batch {run.batch_id})." if run.batch_id else "."),
            )
        )
    count, oldest = unknown
    minutes = settings.points_desk_alert_unknown_minutes
    if minutes > 0 and count:
        found.append(
            Alert(
                "unknown_old",
                "unknown_old",
                f"{count:,} outcomes unknown for over {minutes} minutes",
                f"{count:,} transactions have had no outcome from EnKash for more than {minutes} "
                + (f"minutes (the oldest since {_day(oldest)})" if oldest else "minutes")
                + ". Reconcile looks them up.",
            )
        )
    return Evaluation(found, frozenset(kinds), projection)


def evaluate(
    ledger: Ledger, settings: Settings, *, pool_balance: Decimal | None, now: datetime
) -> Evaluation:
    """The rules over what the ledger, the schedules and the pool say now."""
    projection = None
    if pool_balance is not None:
        projection = runway.runway_for(ledger, pool_balance, now)
    days = settings.points_desk_alert_failed_run_days
    failed = schedules.failed_runs(ledger, since=now - timedelta(days=days)) if days else []
    minutes = settings.points_desk_alert_unknown_minutes
    unknown = ledger.unknown_since(now - timedelta(minutes=minutes)) if minutes else (0, None)
    return rules(
        settings,
        pool_balance=pool_balance,
        projection=projection,
        failed=failed,
        unknown=unknown,
    )


# --- delivery ------------------------------------------------------------------------------------


class DeliveryFailed(Exception):
    """One attempt did not deliver; the message is safe to store and show (no secret)."""


def payload(state: AlertState, now: datetime) -> dict[str, Any]:
    """The webhook's JSON body for one episode of an alert."""
    return {
        "id": f"{state.key}#{state.episode}",
        "key": state.key,
        "kind": state.kind,
        "episode": state.episode,
        "title": state.title,
        "detail": state.detail,
        "active_since": state.first_seen_at.astimezone(UTC).isoformat(),
        "timestamp": now.astimezone(UTC).isoformat(),
        "source": "points-desk",
    }


def sign(body: bytes, secret: str) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send_webhook(settings: Settings, state: AlertState, now: datetime) -> None:
    """POST one alert, signed; ``DeliveryFailed`` unless the receiver answers 2xx."""
    url = settings.points_desk_alert_webhook_url
    secret = settings.points_desk_alert_webhook_secret
    assert url is not None and secret is not None
    body = json.dumps(payload(state, now), sort_keys=True, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(body, secret.get_secret_value()),
        "User-Agent": "points-desk-alerts",
    }
    try:
        reply = requests.post(
            url.get_secret_value(),
            data=body,
            headers=headers,
            timeout=WEBHOOK_TIMEOUT,
            allow_redirects=False,
        )
    except requests.RequestException as error:
        # The exception's text may quote the URL (a secret): say only what kind of failure.
        raise DeliveryFailed(f"webhook unreachable ({type(error).__name__})") from None
    if not 200 <= reply.status_code < 300:
        raise DeliveryFailed(f"webhook answered HTTP {reply.status_code}")


def send_email(settings: Settings, state: AlertState, now: datetime) -> None:
    """Mail one alert over SMTP (STARTTLS and login when configured)."""
    message = EmailMessage()
    message["Subject"] = f"[Points Desk] {state.title}"
    message["From"] = settings.points_desk_alert_email_from
    to = [a.strip() for a in (settings.points_desk_alert_email_to or "").split(",") if a.strip()]
    message["To"] = ", ".join(to)
    message.set_content(
        f"{state.detail}\n\nAlert {state.key} (episode {state.episode}), active since "
        f"{_day(state.first_seen_at)}; sent {_day(now)}.\n"
    )
    host = settings.points_desk_alert_smtp_host
    assert host is not None
    try:
        with smtplib.SMTP(host, settings.points_desk_alert_smtp_port, timeout=SMTP_TIMEOUT) as s:
            if settings.points_desk_alert_smtp_starttls:
                s.starttls(context=ssl.create_default_context())
            if settings.points_desk_alert_smtp_username:
                password = settings.points_desk_alert_smtp_password
                s.login(
                    settings.points_desk_alert_smtp_username,
                    password.get_secret_value() if password else "",
                )
            s.send_message(message, to_addrs=to)
    except (smtplib.SMTPException, OSError) as error:
        raise DeliveryFailed(
            f"e-mail not sent ({type(error).__name__}: {redact(str(error))[:200]})"
        ) from None


Sender = Callable[[Settings, AlertState, datetime], None]


def channels(settings: Settings) -> dict[str, Sender]:
    """The configured channels and how each sends."""
    found: dict[str, Sender] = {}
    if settings.points_desk_alert_webhook_url is not None:
        found["webhook"] = send_webhook
    if settings.points_desk_alert_smtp_host:
        found["email"] = send_email
    return found


def next_wait(settings: Settings, attempts: int) -> timedelta:
    """How long after a failed pass the next pass tries: the backoff doubled per attempt so far,
    at most ``MAX_WAIT``."""
    seconds = settings.points_desk_alert_backoff_seconds * 2 ** min(attempts, 30)
    return min(MAX_WAIT, timedelta(seconds=seconds))


@dataclass
class TickReport:
    """What one pass found and did."""

    active: list[Alert] = field(default_factory=list)
    sent: list[tuple[str, str]] = field(default_factory=list)  # (key, channel)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (key, channel, error)


def deliver(
    ledger: Ledger,
    settings: Settings,
    *,
    now: datetime,
    sleep: Callable[[float], None] = time.sleep,
    senders: dict[str, Sender] | None = None,
) -> TickReport:
    """Deliver every active alert's current episode on each channel it has not reached yet and
    whose next attempt is due; retries within the pass with backoff, then leaves it for later."""
    report = TickReport()
    senders = channels(settings) if senders is None else senders
    if not senders:
        return report
    retries = settings.points_desk_alert_retries
    base = settings.points_desk_alert_backoff_seconds
    for state in ledger.alert_states(active_only=True):
        due = [
            name
            for name in senders
            if state.delivery(name).sent_at is None
            and (state.delivery(name).next_at is None or state.delivery(name).next_at <= now)
        ]
        if not due or not ledger.claim_alert(state.key, state.episode, now=now, lease=LEASE):
            continue
        try:
            for name in due:
                attempts = state.delivery(name).attempts
                error = ""
                for attempt in range(retries):
                    if attempt:
                        sleep(base * 2 ** (attempt - 1))
                    attempts += 1
                    try:
                        senders[name](settings, state, datetime.now(UTC))
                    except DeliveryFailed as failure:
                        error = str(failure)
                        continue
                    except Exception as failure:  # a bug must not stop the other alerts
                        error = f"{name} failed ({type(failure).__name__})"
                        log.exception("alert %s: %s delivery raised", state.key, name)
                        continue
                    error = ""
                    break
                if error:
                    wait = next_wait(settings, attempts)
                    ledger.record_alert_delivery(
                        state.key,
                        state.episode,
                        name,
                        sent_at=None,
                        attempts=attempts,
                        next_at=now + wait,
                        error=error,
                    )
                    report.failed.append((state.key, name, error))
                    log.warning(
                        "alert %s: %s not delivered after %d attempts (%s); next try in %s",
                        state.key,
                        name,
                        attempts,
                        error,
                        wait,
                    )
                else:
                    ledger.record_alert_delivery(
                        state.key,
                        state.episode,
                        name,
                        sent_at=datetime.now(UTC),
                        attempts=attempts,
                        next_at=None,
                        error="",
                    )
                    report.sent.append((state.key, name))
                    log.info("alert %s delivered by %s", state.key, name)
        finally:
            ledger.release_alert(state.key, state.episode)
    return report


def tick(
    ledger: Ledger,
    settings: Settings,
    *,
    pool_balance: Decimal | None,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> TickReport:
    """One pass: evaluate the rules, record which alerts are active (clearing the rest of the
    evaluated kinds), and deliver what is due."""
    now = now or datetime.now(UTC)
    found = evaluate(ledger, settings, pool_balance=pool_balance, now=now)
    ledger.sync_alerts(
        [(a.key, a.kind, a.title, a.detail) for a in found.alerts],
        evaluated_kinds=found.kinds,
        now=now,
    )
    report = deliver(ledger, settings, now=now, sleep=sleep)
    report.active = found.alerts
    return report


def pool_reader(
    client: Callable[[], AbstractContextManager[Any]],
) -> Callable[[], Decimal | None]:
    """Reads the pool balance with a borrowed EnKash client (``Desk.client``); ``None`` when
    EnKash does not answer (the pool's alerts then stay as they were)."""
    from services.enkash import EnkashError

    def read() -> Decimal | None:
        try:
            with client() as the_client:
                return the_client.account_details().available_balance
        except EnkashError:
            return None

    return read


class Ticker:
    """Runs ``tick`` in the background at most every ``POINTS_DESK_ALERT_INTERVAL_SECONDS``:
    ``maybe_start`` is called from every worker pass and returns at once. With no channel
    configured (no webhook, no SMTP host) it never runs: nothing would be delivered, and the
    dashboard evaluates the alerts it shows itself."""

    def __init__(self, ledger: Ledger, settings: Settings, pool: Callable[[], Decimal | None]):
        self.ledger = ledger
        self.settings = settings
        self.pool = pool
        self.interval = settings.points_desk_alert_interval_seconds
        self._last = 0.0
        self._thread: threading.Thread | None = None

    def maybe_start(self) -> bool:
        """Start a pass in a thread when one is due and none is running (sending to a slow
        receiver never holds up the worker's batches)."""
        if self.interval <= 0 or not channels(self.settings):
            return False  # nothing to deliver to: the dashboard evaluates what it shows itself
        if self._thread is not None and self._thread.is_alive():
            return False
        if self._last and time.monotonic() - self._last < self.interval:
            return False
        self._last = time.monotonic()
        self._thread = threading.Thread(target=self._pass, name="worker-alerts", daemon=True)
        self._thread.start()
        return True

    def _pass(self) -> None:
        try:
            tick(self.ledger, self.settings, pool_balance=self.pool())
        except Exception:
            log.exception("alerts pass failed; trying again at the next")


def describe(states: Iterable[AlertState], channel_names: Iterable[str]) -> dict[str, str]:
    """Per key, where its delivery stands, in words for the dashboard."""
    names = list(channel_names)
    said: dict[str, str] = {}
    for state in states:
        parts = []
        for name in names:
            d = state.delivery(name)
            if d.sent_at is not None:
                parts.append(f"{name} sent {_day(d.sent_at)}")
            elif d.attempts:
                parts.append(f"{name} not delivered yet ({d.attempts} attempts: {d.error})")
            else:
                parts.append(f"{name} pending")
        said[state.key] = "; ".join(parts)
    return said
