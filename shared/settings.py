"""One typed settings object per process: CLI flag > RESNET_SERVE_* environment > default."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "RESNET_SERVE_"

Engine = Literal["auto", "onnxruntime", "torchscript"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


def _default_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "resnet-serve"


class Settings(BaseSettings):
    """Every knob of the service. Units are in the names; unknown names are errors."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"

    # Model and artifacts
    model: str = "resnet18"
    weights: str | None = Field(
        None, description="Weights file path, 'random', or unset to resolve the default"
    )
    engine: Engine = "auto"
    precision: Precision = "auto"
    home_dir: Path = Field(default_factory=_default_home)
    model_repository: Path | None = None
    weights_cache_dir: Path | None = None
    offline: bool = False
    weights_mirror_url: str | None = None
    inference_threads: int = Field(0, ge=0, description="0: one per CPU core")

    # Batching and admission
    max_batch: int = Field(8, ge=1, le=256)
    max_batch_wait_ms: float = Field(4.0, ge=0)
    max_queue: int = Field(256, ge=1)
    request_timeout_s: float = Field(10.0, gt=0)

    # Uploads and decoding
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_files_per_request: int = Field(32, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    decode_threads: int = Field(2, ge=1)
    jpeg_draft: bool = True
    response_cache_entries: int = Field(1024, ge=0, description="0 turns the cache off")

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Settings:
        if self.max_batch_wait_ms / 1000 >= self.request_timeout_s:
            raise ValueError("max_batch_wait_ms must be shorter than request_timeout_s")
        if self.max_upload_bytes > self.max_request_bytes:
            raise ValueError("max_upload_bytes cannot exceed max_request_bytes")
        return self

    @property
    def models_dir(self) -> Path:
        return self.model_repository or self.home_dir / "models"

    @property
    def weights_dir(self) -> Path:
        return self.weights_cache_dir or self.home_dir / "weights"


def load_settings(**overrides: Any) -> Settings:
    """Build settings from explicit overrides (CLI flags) over the environment.

    pydantic-settings ignores environment variables it does not know; a misspelt
    RESNET_SERVE_* variable would then be silently dropped, so it is rejected here.
    """
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise ValueError(f"unknown settings in the environment: {', '.join(unknown)}")
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
