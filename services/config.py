"""Settings from environment variables and, when present, ``.streamlit/secrets.toml``.

No ``ENKASH_BASE_URL`` means sandbox mode: the dashboard starts its embedded EnKash sandbox and no
real points move. A base URL with any other live setting missing is an error that names them all.
Environment variables win over ``secrets.toml``; both use the same names (case-insensitive).
"""

from __future__ import annotations

import base64
import contextlib
import os
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from services.redact import remember

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SECRETS_PATH = PROJECT_ROOT / ".streamlit" / "secrets.toml"
DEFAULT_ALLOCATE_PATH = "/api/v0/partner/enKashCard/points/allocate"

LIVE_REQUIRED = (
    "ENKASH_PARTNER_ID",
    "ENKASH_COMPANY_ID",
    "ENKASH_CARD_ACCOUNT_ID",
    "ENKASH_CLIENT_ID",
    "ENKASH_CLIENT_SECRET",
    "ENKASH_USERNAME",
    "ENKASH_PASSWORD",
)


class ConfigError(ValueError):
    """The configuration cannot work as given; the message says what to fix."""


@dataclass(frozen=True)
class EnkashConfig:
    """Everything the EnKash client needs to talk to one host (live or sandbox)."""

    base_url: str
    token_url: str
    allocate_path: str
    partner_id: str
    company_id: str
    card_account_id: str
    client_id: str
    client_secret: SecretStr
    username: str
    password: SecretStr
    encrypt: bool = False
    timeout_seconds: float = 15.0
    connect_timeout_seconds: float = 5.0
    connect_retries: int = 2

    def __post_init__(self) -> None:
        # Whatever EnKash echoes back is redacted against these (services/redact.py).
        secret = self.client_secret.get_secret_value()
        basic = base64.b64encode(f"{self.client_id}:{secret}".encode()).decode("ascii")
        remember(self.client_secret, self.password, basic)

    def __repr__(self) -> str:  # secrets are SecretStr already; keep the repr short and safe
        return f"EnkashConfig(base_url={self.base_url!r}, partner_id={self.partner_id!r})"


class _SecretsTomlSource(PydanticBaseSettingsSource):
    """Top-level keys of ``.streamlit/secrets.toml`` (the file Streamlit itself reads)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._values: dict[str, Any] = {}
        if path is not None and path.is_file():
            with path.open("rb") as handle:
                data = tomllib.load(handle)
            fields = {name.lower() for name in settings_cls.model_fields}
            self._values = {
                key.lower(): value
                for key, value in data.items()
                if not isinstance(value, dict) and key.lower() in fields
            }

    def get_field_value(self, field, field_name):
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    enkash_base_url: str | None = None
    enkash_token_url: str | None = None
    enkash_allocate_path: str = DEFAULT_ALLOCATE_PATH
    enkash_partner_id: str | None = None
    enkash_company_id: str | None = None
    enkash_card_account_id: str | None = None
    enkash_client_id: str | None = None
    enkash_client_secret: SecretStr | None = None
    enkash_username: str | None = None
    enkash_password: SecretStr | None = None
    enkash_encrypt: bool = False
    enkash_timeout_seconds: float = 15.0
    # A secret: a PostgreSQL URL carries its password. ``ledger_url`` gives the real URL.
    database_url: SecretStr | None = None

    points_desk_data_dir: Path = PROJECT_ROOT / "data"
    points_desk_max_points: Decimal = Decimal("1000000")
    # The background settle pass (services/reconcile.py): seconds between passes; 0 turns it off.
    points_desk_settle_interval_seconds: float = 60
    # The company pool balance is the same for everyone: one EnKash look-up serves every session
    # for this long (points moved by this process refresh it at once); 0 = every page asks.
    points_desk_pool_cache_seconds: float = 15
    # Maker-checker: a debit (or a batch's total) above these waits for a second person's
    # approval; 0 means every one does.
    points_desk_approval_debit_threshold: Decimal = Decimal("10000")
    points_desk_approval_batch_threshold: Decimal = Decimal("100000")
    # Local sign-in: this many wrong passwords in a row lock the account for this long.
    points_desk_sign_in_attempts: int = 5
    points_desk_lockout_minutes: int = 15
    # The sender (services/worker.py). True: the dashboard's own process sends batches and settles
    # unknown outcomes in a background thread. False: ``python -m services.worker`` processes do.
    points_desk_embedded_worker: bool = True
    # Seconds between a worker's looks for batches to send (a start from the page is immediate in
    # the embedded worker); a worker whose heartbeat is older than the stale limit is dead.
    points_desk_worker_poll_seconds: float = 1.0
    points_desk_worker_stale_seconds: float = 30.0
    # The exchange inspector keeps every call to EnKash for a transaction this many days; the
    # worker's periodic pass deletes older exchanges (never a ledger row).
    points_desk_exchange_retention_days: int = 90
    # --- schedules (services/schedules.py)
    # An occurrence a worker finds due longer ago than this (it was down, or the schedule's
    # approval came late) is not sent late: it waits on the Schedules page for Send now or Skip.
    points_desk_schedule_catch_up_hours: float = 24.0

    # --- alerts (services/alerts.py): evaluated by a sending worker every interval (0 = off) and
    # each delivered once while active to the webhook and, when an SMTP host is set, by e-mail.
    points_desk_alert_interval_seconds: float = 60
    points_desk_alert_pool_below: Decimal = Decimal("0")  # points; 0 = no low-pool alert
    points_desk_alert_runway_days: int = 14  # the pool runs out within this many days; 0 = off
    points_desk_alert_unknown_minutes: int = 60  # an outcome unknown for longer; 0 = off
    points_desk_alert_failed_run_days: int = 7  # a failed scheduled run stays an alert this long
    # The webhook URL is a secret too: many receivers (chat webhooks) take the URL as the key.
    points_desk_alert_webhook_url: SecretStr | None = None
    points_desk_alert_webhook_secret: SecretStr | None = None  # HMAC-SHA256 key; required with URL
    points_desk_alert_retries: int = 3  # attempts per channel in one pass, then on later passes
    points_desk_alert_backoff_seconds: float = 1.0  # the first wait between attempts; doubles
    points_desk_alert_smtp_host: str | None = None
    points_desk_alert_smtp_port: int = 587
    points_desk_alert_smtp_starttls: bool = True
    points_desk_alert_smtp_username: str | None = None
    points_desk_alert_smtp_password: SecretStr | None = None
    points_desk_alert_email_from: str | None = None
    points_desk_alert_email_to: str | None = None  # comma-separated addresses

    @field_validator(
        "enkash_base_url",
        "enkash_token_url",
        "enkash_partner_id",
        "enkash_company_id",
        "enkash_card_account_id",
        "enkash_client_id",
        "enkash_username",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("enkash_client_secret", "enkash_password", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value:
            return None
        return value

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_url_is_unset(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            return value.strip() or None
        return value

    def model_post_init(self, context: Any, /) -> None:
        # Whatever EnKash echoes back is redacted against these (services/redact.py).
        password = None
        if self.database_url is not None:
            with contextlib.suppress(ValueError):
                password = urlsplit(self.database_url.get_secret_value()).password
        remember(
            self.enkash_client_secret,
            self.enkash_password,
            password,
            unquote(password) if password else None,
            self.points_desk_alert_webhook_url,
            self.points_desk_alert_webhook_secret,
            self.points_desk_alert_smtp_password,
        )

    @field_validator("points_desk_approval_debit_threshold", "points_desk_approval_batch_threshold")
    @classmethod
    def _threshold(cls, value: Decimal) -> Decimal:
        if value < 0:
            raise ValueError("an approval threshold is 0 (approve every one) or more")
        return value

    @field_validator("points_desk_sign_in_attempts", "points_desk_lockout_minutes")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("points_desk_settle_interval_seconds")
    @classmethod
    def _settle_interval(cls, value: float) -> float:
        if value != 0 and not 1 <= value <= 86400:
            raise ValueError("POINTS_DESK_SETTLE_INTERVAL_SECONDS is 0 (off) or 1 to 86400")
        return value

    @field_validator("points_desk_worker_poll_seconds")
    @classmethod
    def _poll(cls, value: float) -> float:
        if not 0.05 <= value <= 3600:
            raise ValueError("POINTS_DESK_WORKER_POLL_SECONDS is 0.05 to 3600")
        return value

    @field_validator("points_desk_worker_stale_seconds")
    @classmethod
    def _stale(cls, value: float) -> float:
        if not 1 <= value <= 3600:
            raise ValueError("POINTS_DESK_WORKER_STALE_SECONDS is 1 to 3600")
        return value

    @field_validator("points_desk_exchange_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if not 1 <= value <= 3650:
            raise ValueError("POINTS_DESK_EXCHANGE_RETENTION_DAYS is 1 to 3650")
        return value

    @field_validator(
        "points_desk_alert_webhook_url",
        "points_desk_alert_webhook_secret",
        "points_desk_alert_smtp_password",
        mode="before",
    )
    @classmethod
    def _blank_alert_secret_is_unset(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator(
        "points_desk_alert_smtp_host",
        "points_desk_alert_smtp_username",
        "points_desk_alert_email_from",
        "points_desk_alert_email_to",
        mode="before",
    )
    @classmethod
    def _blank_alert_text_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("points_desk_alert_interval_seconds")
    @classmethod
    def _alert_interval(cls, value: float) -> float:
        if value != 0 and not 0.01 <= value <= 86400:
            raise ValueError("POINTS_DESK_ALERT_INTERVAL_SECONDS is 0 (off) or up to 86400")
        return value

    @field_validator(
        "points_desk_alert_runway_days",
        "points_desk_alert_unknown_minutes",
        "points_desk_alert_failed_run_days",
    )
    @classmethod
    def _alert_days(cls, value: int) -> int:
        if not 0 <= value <= 3650:
            raise ValueError("is 0 (off) to 3650")
        return value

    @field_validator("points_desk_alert_pool_below")
    @classmethod
    def _alert_pool(cls, value: Decimal) -> Decimal:
        if value < 0:
            raise ValueError("is 0 (off) or more points")
        return value

    @field_validator("points_desk_alert_retries")
    @classmethod
    def _alert_retries(cls, value: int) -> int:
        if not 1 <= value <= 10:
            raise ValueError("POINTS_DESK_ALERT_RETRIES is 1 to 10")
        return value

    @field_validator("points_desk_alert_backoff_seconds")
    @classmethod
    def _alert_backoff(cls, value: float) -> float:
        if not 0 <= value <= 60:
            raise ValueError("POINTS_DESK_ALERT_BACKOFF_SECONDS is 0 to 60")
        return value

    @model_validator(mode="after")
    def _alert_channels(self) -> Settings:
        if self.points_desk_alert_webhook_url and not self.points_desk_alert_webhook_secret:
            raise ValueError(
                "POINTS_DESK_ALERT_WEBHOOK_URL needs POINTS_DESK_ALERT_WEBHOOK_SECRET: every "
                "alert is signed"
            )
        if self.points_desk_alert_smtp_host and not (
            self.points_desk_alert_email_from and self.points_desk_alert_email_to
        ):
            raise ValueError(
                "POINTS_DESK_ALERT_SMTP_HOST needs POINTS_DESK_ALERT_EMAIL_FROM and "
                "POINTS_DESK_ALERT_EMAIL_TO"
            )
        return self

    @field_validator("points_desk_schedule_catch_up_hours")
    @classmethod
    def _catch_up(cls, value: float) -> float:
        if not 0 <= value <= 24 * 366:
            raise ValueError("POINTS_DESK_SCHEDULE_CATCH_UP_HOURS is 0 to 8784 (a year)")
        return value

    @field_validator("points_desk_pool_cache_seconds")
    @classmethod
    def _pool_cache(cls, value: float) -> float:
        if not 0 <= value <= 300:
            raise ValueError("POINTS_DESK_POOL_CACHE_SECONDS is 0 (off) to 300")
        return value

    @field_validator("enkash_timeout_seconds")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if not 1 <= value <= 120:
            raise ValueError("ENKASH_TIMEOUT_SECONDS must be between 1 and 120")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        secrets_path = init_settings.init_kwargs.pop("_secrets_file", DEFAULT_SECRETS_PATH)  # type: ignore[attr-defined]
        return (init_settings, env_settings, _SecretsTomlSource(settings_cls, secrets_path))

    # --- derived ----------------------------------------------------------------------------

    @property
    def mode(self) -> Literal["sandbox", "live"]:
        return "live" if self.enkash_base_url else "sandbox"

    @property
    def is_sandbox(self) -> bool:
        return self.mode == "sandbox"

    def missing_live_settings(self) -> list[str]:
        return [name for name in LIVE_REQUIRED if getattr(self, name.lower()) is None]

    def live_enkash_config(self) -> EnkashConfig:
        """The live host's configuration; ``ConfigError`` naming every missing setting."""
        if not self.enkash_base_url:
            raise ConfigError("ENKASH_BASE_URL is not set: Points Desk runs on its sandbox")
        missing = self.missing_live_settings()
        if missing:
            raise ConfigError(
                "ENKASH_BASE_URL is set but the live configuration is incomplete; missing: "
                + ", ".join(missing)
            )
        base = self.enkash_base_url.rstrip("/")
        return EnkashConfig(
            base_url=base,
            token_url=self.enkash_token_url or f"{base}/oauth/token",
            allocate_path=self.enkash_allocate_path,
            partner_id=self.enkash_partner_id,  # type: ignore[arg-type]
            company_id=self.enkash_company_id,  # type: ignore[arg-type]
            card_account_id=self.enkash_card_account_id,  # type: ignore[arg-type]
            client_id=self.enkash_client_id,  # type: ignore[arg-type]
            client_secret=self.enkash_client_secret,  # type: ignore[arg-type]
            username=self.enkash_username,  # type: ignore[arg-type]
            password=self.enkash_password,  # type: ignore[arg-type]
            encrypt=self.enkash_encrypt,
            timeout_seconds=self.enkash_timeout_seconds,
        )

    @property
    def data_dir(self) -> Path:
        return Path(self.points_desk_data_dir)

    @property
    def ledger_url(self) -> str:
        """``DATABASE_URL`` when set, else a SQLite file in the data directory."""
        if self.database_url:
            url = self.database_url.get_secret_value()
            # Accept the common ``postgres://`` / ``postgresql://`` forms; the driver is psycopg 3.
            for prefix in ("postgres://", "postgresql://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg://" + url[len(prefix) :]
            return url
        return f"sqlite:///{self.data_dir / 'ledger.db'}"

    @property
    def sandbox_state_path(self) -> Path:
        """The embedded sandbox keeps its state beside the ledger so the two never disagree."""
        return self.data_dir / "sandbox.db"


def secrets_file_path() -> Path:
    """``POINTS_DESK_SECRETS_FILE`` when set, else ``.streamlit/secrets.toml``."""
    override = os.environ.get("POINTS_DESK_SECRETS_FILE")
    return Path(override) if override else DEFAULT_SECRETS_PATH


def load_settings(secrets_file: Path | str | None = "default", **overrides: Any) -> Settings:
    """Read settings; ``ConfigError`` with a readable message when a value is invalid.

    The secrets file is ``.streamlit/secrets.toml`` unless ``POINTS_DESK_SECRETS_FILE`` names
    another (tests point it at nothing, so a developer's own secrets never leak into a run).
    """
    from pydantic import ValidationError

    if secrets_file == "default":
        secrets_file = secrets_file_path()

    try:
        return Settings(_secrets_file=secrets_file, **overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"Invalid settings: {problems}") from None


def sandbox_enkash_config(base_url: str, identity: Any, encrypt: bool = False) -> EnkashConfig:
    """Client configuration for a sandbox server (its identity carries the demo credentials)."""
    return EnkashConfig(
        base_url=base_url,
        token_url=f"{base_url}/oauth/token",
        allocate_path=DEFAULT_ALLOCATE_PATH,
        partner_id=identity.partner_id,
        company_id=identity.company_id,
        card_account_id=identity.card_account_id,
        client_id=identity.client_id,
        client_secret=SecretStr(identity.client_secret),
        username=identity.username,
        password=SecretStr(identity.password),
        encrypt=encrypt,
        timeout_seconds=15.0,
    )
