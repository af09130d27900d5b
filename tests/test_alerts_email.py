"""An alert arrives by e-mail at a real SMTP server the test starts on a loopback port."""

from __future__ import annotations

import email
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import policy

import pytest
import time_machine
from aiosmtpd.controller import Controller

from services import alerts
from services.config import load_settings

T0 = datetime(2026, 1, 20, 6, 30, tzinfo=UTC)


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope):
        parsed = email.message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


class _AnyPortController(Controller):
    """aiosmtpd's controller on the port the OS chose (it connects to itself once started)."""

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@pytest.fixture
def smtp() -> Iterator[tuple[_Inbox, int]]:
    inbox = _Inbox()
    controller = _AnyPortController(inbox, hostname="127.0.0.1", port=0)
    controller.start()
    yield inbox, controller.port
    controller.stop()


def test_an_alert_is_mailed_once_to_every_address(ledger, smtp, tmp_path):
    inbox, port = smtp
    settings = load_settings(
        None,
        points_desk_data_dir=tmp_path,
        points_desk_alert_pool_below=Decimal("1000"),
        points_desk_alert_smtp_host="127.0.0.1",
        points_desk_alert_smtp_port=port,
        points_desk_alert_smtp_starttls=False,
        points_desk_alert_email_from="desk@example.com",
        points_desk_alert_email_to="ops@example.com, finance@example.com",
    )
    with time_machine.travel(T0, tick=False):
        report = alerts.tick(ledger, settings, pool_balance=Decimal("250.50"))
    assert report.sent == [("pool_low", "email")]
    [(sender, to, message)] = inbox.messages
    assert sender == "desk@example.com"
    assert to == ["ops@example.com", "finance@example.com"]
    assert message["Subject"] == "[Points Desk] Pool below 1,000 points"
    body = message.get_content()
    assert "The pool holds 250.50 points, below the alert level of 1,000" in body
    assert "pool_low (episode 1)" in body
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        assert alerts.tick(ledger, settings, pool_balance=Decimal("250.50")).sent == []
    assert len(inbox.messages) == 1
