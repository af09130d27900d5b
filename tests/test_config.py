"""Settings: sandbox by default, live only when complete, secrets never shown."""

from pathlib import Path

import pytest

from services.config import ConfigError, load_settings

LIVE = {
    "ENKASH_BASE_URL": "https://enkash.example/",
    "ENKASH_PARTNER_ID": "CRMXWB3ZM",
    "ENKASH_COMPANY_ID": "CEK1PU9AOO",
    "ENKASH_CARD_ACCOUNT_ID": "CAQL8YCV3",
    "ENKASH_CLIENT_ID": "client-1",
    "ENKASH_CLIENT_SECRET": "s3cr3t-value",
    "ENKASH_USERNAME": "9600098867",
    "ENKASH_PASSWORD": "pa55-value",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in [
        *LIVE,
        "ENKASH_TOKEN_URL",
        "ENKASH_ENCRYPT",
        "ENKASH_TIMEOUT_SECONDS",
        "DATABASE_URL",
    ]:
        monkeypatch.delenv(name, raising=False)


def test_no_base_url_means_sandbox_with_a_sqlite_ledger(tmp_path):
    settings = load_settings(None, points_desk_data_dir=tmp_path)
    assert settings.mode == "sandbox"
    assert settings.ledger_url == f"sqlite:///{tmp_path / 'ledger.db'}"
    assert settings.sandbox_state_path == tmp_path / "sandbox.db"


def test_a_complete_live_configuration_builds_the_client_config(monkeypatch):
    for name, value in LIVE.items():
        monkeypatch.setenv(name, value)
    config = load_settings(None).live_enkash_config()
    assert config.base_url == "https://enkash.example"
    assert config.token_url == "https://enkash.example/oauth/token"
    assert config.allocate_path == "/api/v0/partner/enKashCard/points/allocate"
    assert config.client_secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t" not in repr(config) and "pa55" not in repr(config)


def test_token_url_is_its_own_setting(monkeypatch):
    for name, value in LIVE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ENKASH_TOKEN_URL", "https://tokens.example/oauth/token")
    assert (
        load_settings(None).live_enkash_config().token_url == "https://tokens.example/oauth/token"
    )


def test_a_partial_live_configuration_names_every_missing_setting(monkeypatch):
    monkeypatch.setenv("ENKASH_BASE_URL", "https://enkash.example")
    monkeypatch.setenv("ENKASH_PARTNER_ID", "P")
    monkeypatch.setenv("ENKASH_PASSWORD", "")
    with pytest.raises(ConfigError) as caught:
        load_settings(None).live_enkash_config()
    message = str(caught.value)
    for name in (
        "ENKASH_COMPANY_ID",
        "ENKASH_CARD_ACCOUNT_ID",
        "ENKASH_CLIENT_ID",
        "ENKASH_CLIENT_SECRET",
        "ENKASH_USERNAME",
        "ENKASH_PASSWORD",
    ):
        assert name in message
    assert "ENKASH_PARTNER_ID" not in message


def test_secrets_toml_is_read_and_the_environment_wins(tmp_path: Path, monkeypatch):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(
        'ENKASH_BASE_URL = "https://from-file.example"\n'
        'enkash_partner_id = "FILE"\n'
        "ENKASH_ENCRYPT = true\n"
        '[auth]\nredirect_uri = "x"\n'
    )
    monkeypatch.setenv("ENKASH_PARTNER_ID", "ENV")
    settings = load_settings(secrets)
    assert settings.mode == "live"
    assert settings.enkash_partner_id == "ENV"
    assert settings.enkash_encrypt is True


def test_invalid_values_give_a_readable_error(monkeypatch):
    monkeypatch.setenv("ENKASH_TIMEOUT_SECONDS", "500")
    with pytest.raises(ConfigError, match="ENKASH_TIMEOUT_SECONDS must be between 1 and 120"):
        load_settings(None)


def test_postgres_urls_use_psycopg(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db:5432/points")
    assert load_settings(None).ledger_url == "postgresql+psycopg://u@db:5432/points"
