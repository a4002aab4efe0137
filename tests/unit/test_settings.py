"""Settings: flag > environment > default, units in names, unknown names rejected."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from resnet_serve.shared.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("RESNET_SERVE_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.model == "resnet18"
    assert settings.max_upload_bytes == 20 * 1024 * 1024
    assert settings.max_image_pixels == 40_000_000
    assert settings.models_dir == settings.home_dir / "models"


def test_environment_overrides_default_and_flag_overrides_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESNET_SERVE_MAX_BATCH", "8")
    monkeypatch.setenv("RESNET_SERVE_PORT", "9000")
    settings = load_settings(port=9100, max_batch=None)
    assert settings.max_batch == 8
    assert settings.port == 9100


def test_unknown_environment_setting_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNET_SERVE_MAX_BACTH", "8")
    with pytest.raises(ValueError, match="RESNET_SERVE_MAX_BACTH"):
        load_settings()


def test_unknown_keyword_is_rejected() -> None:
    with pytest.raises(ValidationError):
        load_settings(max_batch_size=8)


def test_batch_wait_must_be_shorter_than_the_request_timeout() -> None:
    with pytest.raises(ValidationError, match="max_batch_wait_ms"):
        load_settings(max_batch_wait_ms=2000, request_timeout_s=1)


@pytest.mark.parametrize(
    ("name", "value"), [("max_batch", 0), ("port", 70000), ("engine", "no such engine")]
)
def test_invalid_values_are_rejected(name: str, value: object) -> None:
    with pytest.raises(ValidationError):
        load_settings(**{name: value})
