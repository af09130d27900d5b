"""No secret reaches a log line, a rendered page, an export or the ledger database.

The app runs in live mode against a sandbox whose client secret and partner password are known
values, with local accounts whose passwords are known values and an OIDC ``[auth]`` section whose
client and cookie secrets are known values. It goes through its flows (a wrong then a right
sign-in, create, credit, a held debit, an approval by a second person, a rejected approval), and
none of those values may appear anywhere it could leak.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from services.sandbox import start_sandbox
from services.sandbox.store import SandboxIdentity
from tests.auth_support import PEOPLE, PROJECT, new_app, sign_in, write_secrets

CLIENT_SECRET = "ClientSecret-4f1d9a7e"
ENKASH_PASSWORD = "PartnerPass-8c2b6e31"
OIDC_CLIENT_SECRET = "OidcSecret-19ae7c55"
COOKIE_SECRET = "CookieSecret-6d03b8f2"
WRONG_PASSWORD = "WrongGuess-0b7e4c9d"
SECRETS = [
    CLIENT_SECRET,
    ENKASH_PASSWORD,
    OIDC_CLIENT_SECRET,
    COOKIE_SECRET,
    WRONG_PASSWORD,
    *(password for password, _, _ in PEOPLE.values()),
]


def live_env(sandbox) -> dict[str, str]:
    identity = sandbox.identity
    return {
        "ENKASH_BASE_URL": sandbox.url,
        "ENKASH_PARTNER_ID": identity.partner_id,
        "ENKASH_COMPANY_ID": identity.company_id,
        "ENKASH_CARD_ACCOUNT_ID": identity.card_account_id,
        "ENKASH_CLIENT_ID": identity.client_id,
        "ENKASH_CLIENT_SECRET": identity.client_secret,
        "ENKASH_USERNAME": identity.username,
        "ENKASH_PASSWORD": identity.password,
    }


def known_identity() -> SandboxIdentity:
    return replace(SandboxIdentity(), client_secret=CLIENT_SECRET, password=ENKASH_PASSWORD)


def everything_rendered(at) -> str:
    """Every element of the last run, widgets included, as Streamlit would send it."""
    parts = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(parts)


def ledger_dump(data_dir: Path) -> str:
    """Every table of the ledger database as CSV: a superset of anything an export can hold."""
    engine = sa.create_engine(f"sqlite:///{data_dir / 'ledger.db'}")
    try:
        names = sa.inspect(engine).get_table_names()
        with engine.connect() as conn:
            return "\n".join(pd.read_sql_table(name, conn).to_csv(index=False) for name in names)
    finally:
        engine.dispose()


def table_dump(data_dir: Path, table: str) -> str:
    engine = sa.create_engine(f"sqlite:///{data_dir / 'ledger.db'}")
    try:
        with engine.connect() as conn:
            return pd.read_sql_table(table, conn).to_csv(index=False)
    finally:
        engine.dispose()


def assert_clean(where: str, text: str | bytes) -> None:
    for secret in SECRETS:
        needle = secret.encode() if isinstance(text, bytes) else secret
        assert needle not in text, f"{secret!r} leaked into {where}"


def test_no_secret_in_logs_pages_exports_or_the_database(desk_env, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    write_secrets(desk_env)
    oidc = {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": COOKIE_SECRET,
        "client_id": "points-desk",
        "client_secret": OIDC_CLIENT_SECRET,
        "server_metadata_url": "https://id.example.com/.well-known/openid-configuration",
    }
    rendered: list[str] = []
    with start_sandbox(identity=known_identity()) as sandbox:
        for name, value in live_env(sandbox).items():
            monkeypatch.setenv(name, value)

        maker = new_app()
        maker.secrets["auth"] = oidc
        maker.run()
        rendered.append(everything_rendered(maker))
        sign_in(maker, "asha", WRONG_PASSWORD)
        rendered.append(everything_rendered(maker))
        sign_in(maker, "asha")
        rendered.append(everything_rendered(maker))

        maker.switch_page("pages/create_account.py").run()
        for key, value in {
            "new_first_name": "Ravi",
            "new_email": "ravi@example.com",
            "new_mobile": "9600098867",
            "new_amount": "60000",
            "new_reason": "Opening",
        }.items():
            maker.text_input(key=key).input(value)
        maker.selectbox(key="new_title").select("Mr")
        maker.selectbox(key="new_gender").select("M")
        maker.button(key="create_submit").click().run()
        assert "60,000.00 points credited to Ravi" in maker.success[0].value
        rendered.append(everything_rendered(maker))

        for amount in ("20000", "25000"):  # two held debits: one approved, one rejected
            maker.switch_page("pages/debit.py").run()
            if "debit_new" in _keys(maker):  # the previous debit's outcome: start a new one
                maker.button(key="debit_new").click().run()
            maker.text_input(key="debit_query").input("ravi").run()
            maker.text_input(key="debit_amount").input(amount)
            maker.button(key="debit_submit").click().run()
            maker.button(key="debit_confirm").click().run()
            assert not maker.exception, maker.exception
            rendered.append(everything_rendered(maker))

        approver = new_app()
        approver.secrets["auth"] = oidc
        approver.run()
        sign_in(approver, "vikram")
        approver.switch_page("pages/approvals.py").run()
        approver.button(key="approve_1").click().run()
        approver.text_input(key="approval_comment_2").input("Not this quarter")
        approver.button(key="reject_2").click().run()
        assert not approver.exception, approver.exception
        rendered.append(everything_rendered(approver))
        # Every token the sandbox handed out (the desk signed in with them).
        tokens = [*sandbox.store._access_tokens, *sandbox.store._refresh_tokens]
    assert tokens

    for index, text in enumerate(rendered):
        assert_clean(f"rendered page #{index}", text)
    assert_clean("captured logs", caplog.text)
    assert_clean("ledger export", ledger_dump(desk_env))
    for path in desk_env.glob("ledger.db*"):  # the database and its write-ahead log
        assert_clean(path.name, path.read_bytes())
    # The flows did happen: the approval and the rejection are in the ledger.
    dump = ledger_dump(desk_env)
    assert "vikram" in dump and "Not this quarter" in dump
    # The exchange inspector kept the calls (create and the approved debit), and not one of
    # them holds a token the sandbox issued or an Authorization header.
    inspected = table_dump(desk_env, "exchanges")
    assert "ravi@example.com" in inspected and "UNALLOCATE_POINT" in inspected
    for needle in (*tokens, "Authorization", "Bearer"):
        assert needle not in inspected, f"{needle!r} kept by the exchange inspector"
        assert needle not in dump, f"{needle!r} leaked into the ledger"


def _keys(at) -> set[str]:
    return {button.key for button in at.button}


def test_streamlit_config_hides_error_details_and_keeps_xsrf_and_upload_limits():
    config = tomllib.loads((PROJECT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"
    assert config["server"]["enableXsrfProtection"] is True
    assert 0 < config["server"]["maxUploadSize"] <= 20


def test_show_error_details_none_redacts_an_uncaught_error_in_streamlit_1_67():
    """What "none" does in this Streamlit: type, message and traceback stay in the server log;
    the browser gets a generic sentence."""
    from streamlit.elements.exception import marshall
    from streamlit.proto.Exception_pb2 import Exception as ExceptionProto
    from streamlit.testing.v1.util import patch_config_options

    error = RuntimeError(f"token refused for secret {CLIENT_SECRET}")
    proto = ExceptionProto()
    with patch_config_options({"client.showErrorDetails": "none"}):
        marshall(proto, error, apply_show_error_details=True)
    shown = str(proto)
    assert CLIENT_SECRET not in shown and "RuntimeError" not in shown
    assert not proto.stack_trace
    assert "redacted" in proto.message


@pytest.mark.parametrize("field", ["enkash_client_secret", "enkash_password"])
def test_settings_never_print_their_secrets(field):
    from services.config import load_settings

    settings = load_settings(secrets_file=None, **{field: CLIENT_SECRET})
    assert CLIENT_SECRET not in repr(settings) and CLIENT_SECRET not in str(settings)


def test_database_url_is_a_secret_and_the_ledger_still_gets_the_real_url():
    from services.config import load_settings

    url = f"postgresql://points:{ENKASH_PASSWORD}@db.internal:5432/points"
    settings = load_settings(secrets_file=None, database_url=url)
    assert ENKASH_PASSWORD not in repr(settings) and ENKASH_PASSWORD not in str(settings)
    assert ENKASH_PASSWORD not in repr(settings.model_dump())
    assert (
        settings.ledger_url
        == f"postgresql+psycopg://points:{ENKASH_PASSWORD}@db.internal:5432/points"
    )


def test_a_token_endpoint_echoing_the_request_leaks_no_secret(sandbox, ledger, caplog):
    """EnKash refuses the sign-in and its error_description quotes the request: the password,
    the form and the Basic header. The exception, the log and the ledger show none of them."""
    import base64

    from pydantic import SecretStr

    from services import allocations
    from services.models import Status
    from tests.fault_support import client_for, create

    caplog.set_level(logging.DEBUG)
    sandbox.knobs.echo_login_errors = True
    configured = "Configured-Pass-5e1a0c77"  # what this desk sends; the sandbox expects another
    secret = sandbox.identity.client_secret
    basic = base64.b64encode(f"{sandbox.identity.client_id}:{secret}".encode()).decode()
    leaks = [configured, secret, basic, "Configured-Pass"]
    allocation = create("100")
    with client_for(sandbox, password=SecretStr(configured)) as client:
        with pytest.raises(Exception) as refused:
            client.account_details()
        outcome = allocations.submit(ledger, client, allocation, operator="asha")
    row = ledger.get(allocation.reference)
    assert row.status is Status.FAILED
    shown = "\n".join(
        [
            str(refused.value),
            repr(refused.value),
            refused.value.message,
            str(refused.value.code),
            outcome.headline,
            outcome.explanation,
            row.enkash_message or "",
            *(event.detail for event in ledger.audit_trail(allocation.reference)),
            caplog.text,
        ]
    )
    for needle in leaks:
        assert needle not in shown, f"{needle!r} leaked"
    assert "Bad credentials" in shown and "[redacted]" in shown  # still says what happened
    dump = ledger_dump(Path(ledger.engine.url.database).parent)
    for needle in leaks:
        assert needle not in dump, f"{needle!r} leaked into the ledger"


def test_the_ledger_redacts_configured_secrets_from_what_enkash_said(ledger):
    """Whatever path a text takes to the ledger, a configured secret is masked there."""
    from services.config import sandbox_enkash_config
    from services.models import Status
    from services.sandbox.store import SandboxIdentity
    from tests.fault_support import create

    identity = replace(SandboxIdentity(), password="Ledger-Pass-77ab01ce")
    sandbox_enkash_config("http://127.0.0.1:9", identity)  # the desk now knows this password
    allocation = create("100")
    ledger.record_intent(allocation, operator="asha")
    ledger.transition(
        allocation.reference,
        Status.UNKNOWN,
        actor="asha",
        from_statuses=(Status.SENDING,),
        detail="outcome unknown: proxy said Ledger-Pass-77ab01ce",
        enkash_code="Ledger-Pass-77ab01ce",
        enkash_message="echo: password=Ledger-Pass-77ab01ce&x=1 Authorization: Bearer abcdef123456",
    )
    dump = ledger_dump(Path(ledger.engine.url.database).parent)
    assert "Ledger-Pass-77ab01ce" not in dump and "abcdef123456" not in dump
    assert "[redacted]" in dump


def test_redaction_masks_secrets_in_every_spelling_and_leaves_plain_words():
    from urllib.parse import quote_plus

    from services.redact import redact, remember

    remember("Spelt Pass&42=x")
    assert (
        redact(f"form: user=a&pw={quote_plus('Spelt Pass&42=x')}") == "form: user=a&pw=[redacted]"
    )
    assert "Spelt Pass&42=x" not in redact('{"pw": "Spelt Pass&42=x"}')
    assert redact("Authorization: Bearer abc123def456") == "Authorization: Bearer [redacted]"
    assert (
        redact("password=whatever&grant_type=password") == "password=[redacted]&grant_type=password"
    )
    for words in ("Basic details missing", "Bearer token expired", "Invalid password: try again"):
        assert redact(words) == words


def test_the_quick_checks_before_redaction_mask_what_the_full_search_masks():
    # redact() skips its searches when plain substring checks find nothing to look for; whatever
    # the spelling (letter case, a non-ASCII letter the case-blind search equates with an ASCII
    # one), it must mask exactly what searching every text would.
    from services import redact as redaction

    redaction.remember("Quick-Check-Secret-91")
    texts = [
        "BEARER abcdef123456 and bearer xyz7890123",
        '{"Access_Token": "t0k3n-value", "CLIENTSECRET": "s3cr3t"}',
        "PassWord=hunter22&x=1",
        "Baſic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",  # long s: the case-blind search matches "basic"
        "basıc QWxhZGRpbjpvcGVuIHNlc2FtZQ==",  # dotless i, likewise
        "Quick-Check-Secret-91 echoed, and Quick-Check-Secret-91%21 is not it",
        "an ordinary reply: ok, balance 100.00",
        "",
    ]
    for text in texts:
        _, pattern = redaction._masking
        full = pattern.sub(redaction.MASK, text) if pattern is not None and text else text
        full = redaction._SHAPES.sub(
            lambda m: (m.group(1) or m.group(2) or m.group(3)) + "[redacted]", full
        )
        assert redaction.redact(text) == full, text
    assert "Quick-Check-Secret-91" not in redaction.redact("x Quick-Check-Secret-91 y")
