import pytest

from opsgate.settings import SettingsError, load_settings


def test_missing_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPSGATE_TELEGRAM_TOKEN", raising=False)
    monkeypatch.delenv("OPSGATE_ALERT_CHAT_ID", raising=False)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "OPSGATE_TELEGRAM_TOKEN is required" in str(err.value)
    assert "OPSGATE_ALERT_CHAT_ID is required" in str(err.value)
    assert "\n" not in str(err.value)


def test_invalid_values_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSGATE_TELEGRAM_TOKEN", "not-a-token")
    monkeypatch.setenv("OPSGATE_ALERT_CHAT_ID", "-100123")
    monkeypatch.setenv("OPSGATE_RETRY_MAX", "-1")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "OPSGATE_TELEGRAM_TOKEN is invalid" in str(err.value)
    assert "OPSGATE_RETRY_MAX is invalid" in str(err.value)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSGATE_TELEGRAM_TOKEN", "123:abc")
    monkeypatch.setenv("OPSGATE_ALERT_CHAT_ID", "-100123")
    settings = load_settings()
    assert settings.database_url == "sqlite+aiosqlite:///./opsgate.db"
    assert settings.telegram_base_url == "https://api.telegram.org/bot"
    assert (settings.retry_max, settings.retry_delay_seconds) == (2, 30.0)
    assert settings.approval_ttl_seconds == 7200
