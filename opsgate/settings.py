"""Process settings, read once from the environment (prefix ``OPSGATE_``)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(Exception):
    """A setting is missing or invalid; the message names it in one line."""


class DatabaseSettings(BaseSettings):
    """What commands that only touch the database need (``opsgate migrate``, ``export``)."""

    model_config = SettingsConfigDict(env_prefix="OPSGATE_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./opsgate.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPSGATE_", extra="ignore")

    telegram_token: SecretStr
    alert_chat_id: int
    alert_thread_id: int | None = None

    database_url: str = "sqlite+aiosqlite:///./opsgate.db"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    telegram_api_url: str = "https://api.telegram.org"
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    webhook_token: SecretStr | None = None
    policy_file: Path | None = None

    kubeconfig: str | None = None
    kube_context: str | None = None
    kube_request_timeout: float = Field(default=20.0, gt=0)

    approval_ttl_seconds: int = Field(default=7200, gt=0)
    approval_sweep_seconds: float = Field(default=15.0, gt=0)
    retry_max: int = Field(default=2, ge=0, le=20)
    retry_delay_seconds: float = Field(default=30.0, ge=0)
    retry_after_max_seconds: float = Field(default=300.0, ge=0)
    # A plan the cluster could not give when the action was proposed is read again this often,
    # this many reads in all, while its approval is pending.
    plan_retry_seconds: float = Field(default=15.0, gt=0)
    plan_reads: int = Field(default=8, ge=1, le=100)

    verify_timeout_seconds: float = Field(default=600.0, gt=0)
    verify_poll_seconds: float = Field(default=5.0, gt=0)
    verify_alert_window_seconds: float = Field(default=0.0, ge=0)
    knowledge_decay_days: float = Field(default=30.0, gt=0)
    knowledge_decay_check_seconds: float = Field(default=3600.0, gt=0)
    export_dir: Path | None = None
    export_interval_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)
    notifier_timeout_seconds: float = Field(default=5.0, gt=0)
    # Silences from the card go here; unset, to the externalURL of the incident's payloads.
    alertmanager_url: str | None = None
    # A silence is made while the tap waits for its answer, so the call must end well inside
    # Telegram's 15 s window for it.
    alertmanager_timeout_seconds: float = Field(default=4.0, gt=0, le=10)

    # Stable across restarts, so a restarted process takes back its previous incarnation's work.
    instance_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200)
    job_poll_interval: float = Field(default=1.0, gt=0)
    job_lease_seconds: float = Field(default=15.0, ge=3)
    job_concurrency: int = Field(default=8, ge=1)
    # Card and fan-out jobs wait for their chat's send budget while they hold their worker: a
    # storm over many chats keeps every chat's line busy only with a worker or two per chat,
    # and the jobs that only list an incident on the digest still find one free.
    chat_job_concurrency: int = Field(default=32, ge=1)
    job_retention_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)
    update_concurrency: int = Field(default=128, ge=1)

    telegram_chat_rate_per_second: int = Field(default=1, ge=1)
    telegram_group_rate_per_minute: int = Field(default=20, ge=1)
    telegram_overall_rate_per_second: int = Field(default=30, ge=1)
    # New cards a chat gets in any minute: fewer than its budget, so that during a storm the
    # digest of the waiting ones, answers and edits still get through.
    cards_per_minute: int = Field(default=10, ge=1)
    # Shared by every replica: one bot token has one Telegram budget, however many send with it.
    redis_url: str | None = None
    # A loaded Bot API answers a send in more than PTB's default 5 s; giving up earlier turns a
    # delivered message into one whose outcome is unknown.
    telegram_read_timeout: float = Field(default=30.0, gt=0)
    telegram_connect_timeout: float = Field(default=10.0, gt=0)

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("telegram_token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        head, _, tail = raw.partition(":")
        if not head.isdigit() or not tail:
            raise ValueError("expected the form <bot id>:<secret> given by @BotFather")
        return value

    @field_validator("telegram_api_url")
    @classmethod
    def _api_root(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL, the root of a Bot API server")
        return value.rstrip("/")

    @field_validator("alertmanager_url")
    @classmethod
    def _alertmanager_root(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL, the root of an Alertmanager")
        return value.rstrip("/") if value is not None else None

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://")):
            raise ValueError("must be a redis:// or rediss:// URL")
        return value

    @field_validator("policy_file")
    @classmethod
    def _policy_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @property
    def telegram_base_url(self) -> str:
        """What PTB calls ``base_url``: it appends the token and the method name."""
        return f"{self.telegram_api_url}/bot"


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one line per broken setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def load_database_settings() -> DatabaseSettings:
    try:
        return DatabaseSettings()
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = f"OPSGATE_{field.upper()}"
        if error["type"] == "missing":
            lines.append(f"{name} is required but not set")
        else:
            lines.append(f"{name} is invalid: {error['msg']}")
    return "; ".join(lines)
