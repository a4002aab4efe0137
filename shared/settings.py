"""One typed settings object per process: CLI flag > RESNET_SERVE_* environment > default."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from resnet_serve.shared.bulk_settings import BulkJobSettings

ENV_PREFIX = "RESNET_SERVE_"
# Leases are renewed every third of the visibility timeout; below this, renewals alone
# would keep a worker and Redis busy and one slow round trip would lose a lease.
MIN_VISIBILITY_TIMEOUT_S = 0.3

Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]


def _default_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "resnet-serve"


Nice = Annotated[int, Field(ge=0, le=19)]  # a Unix niceness step
PortNumber = Annotated[int, Field(ge=0, le=65535)]


class Settings(BaseSettings, BulkJobSettings):
    """Every knob of the service. Units are in the names; unknown names are errors."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # HTTP
    host: str = "127.0.0.1"
    port: PortNumber = 8000
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"

    # Model and artifacts
    model: str = "resnet18"
    models: str = Field(
        "",
        description="Gateway: comma-separated models it serves (default: just `model`, "
        "which is also the default for requests); known from configuration, not from Redis",
    )
    weights: str | None = Field(
        None, description="Weights file path, 'random', or unset to resolve the default"
    )
    engine: str = Field(
        "auto",
        pattern=r"^[a-z0-9_]+$",
        description="auto, or an installed engine plug-in (onnxruntime, openvino, torchscript)",
    )
    precision: Precision = "auto"
    home_dir: Path = Field(default_factory=_default_home)
    model_repository: Path | None = None
    weights_cache_dir: Path | None = None
    offline: bool = False
    weights_mirror_url: str | None = None
    inference_threads: int = Field(
        0, ge=0, description="0: one per core this process may use (cgroup quota, affinity)"
    )
    inference_streams: int = Field(
        0,
        ge=0,
        le=8,
        description="Streams of inference_threads / streams threads over one model "
        "(onnxruntime, openvino): each batch is split across them and under a backlog "
        "batches run side by side, so no stream waits for a core another thread took; "
        "a batch of one image runs on one stream's threads. 0: 2 with OpenVINO on two "
        "or more threads, else 1",
    )
    # INT8 (`export --precision int8`): calibration photos and the accuracy gate
    calibration_dir: Path | None = Field(
        None, description="Calibration photos; default the shipped free photos"
    )
    calibration_crops: int = Field(300, ge=8, description="Crops INT8 ranges are fitted on")
    holdout_crops: int = Field(
        1200, ge=300, description="Crops of held-out photos the accuracy gate judges"
    )
    accuracy_control_iterations: int = Field(
        20, ge=0, description="Layers NNCF may return to fp32 to pass the gate; 0: plain PTQ"
    )
    max_accuracy_drop_pt: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Reduced precisions pass their gate when the bound on their top-1 "
        "accuracy loss is at most this many points",
    )
    accuracy_search_budget_s: float = Field(
        120.0,
        ge=0,
        description="Seconds the INT8 accuracy search may run; past it plain INT8 is kept",
    )

    # Batching and admission
    max_batch: int = Field(8, ge=1, le=256)
    max_batch_wait_ms: float = Field(4.0, ge=0)
    max_queue: int = Field(256, ge=1)
    request_timeout_s: float = Field(10.0, gt=0)
    admit_within_s: float = Field(
        0.0,
        ge=0,
        description="Admit a request only if it is predicted to be answered within this "
        "many seconds (0: by its deadline, request_timeout_s); tighter refuses sooner",
    )

    # Uploads and decoding
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_files_per_request: int = Field(32, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    decode_threads: int = Field(
        0, ge=0, description="0: one per core this process may use (cgroup quota, affinity)"
    )
    jpeg_draft: bool = True
    response_cache_entries: int = Field(1024, ge=0, description="0 turns the cache off")

    # Memory budgets (api/limits/budget.py): bodies and decoding in flight, per process
    memory_budget_bytes: int = Field(
        0,
        ge=0,
        description="Bytes of request bodies and decoding in flight together; 0: 50% of "
        "the cgroup's memory.max minus the process's baseline (1 GiB without a limit)",
    )
    budget_wait_ms: float = Field(
        250.0, ge=0, description="How long a request waits for budget before a 503"
    )
    loop_nice: Nice = Field(
        0,
        description="Standalone serve: how much lower the event loop's CPU "
        "priority is than inference's (0: the same), so refusals cannot take inference's CPU",
    )
    loop_max_cpu_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Standalone serve: while inference is backlogged, the most of this "
        "process's CPUs the event loop may use (answering refusals); 0: no limit",
    )
    inference_nice: Nice = Field(
        10,
        description="Standalone serve: how much nicer inference and decode "
        "threads run than the event loop, so refusals and I/O come first (0: the same)",
    )
    kserve_parse_processes: int = Field(
        1, ge=1, description="Processes that parse large KServe v2 JSON bodies off the loop"
    )

    # HTTP server limits (api/limits/http.py)
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Request line and headers together; beyond: 431"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="A request's headers must arrive within this"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="A request's body must arrive within this; beyond: 408"
    )
    min_body_rate_bytes_s: float = Field(
        240.0,
        ge=0,
        description="After body_rate_grace_s, a body arriving slower than this on average "
        "gets 408 and its connection closed (as Kestrel's MinRequestBodyDataRate; 0: off)",
    )
    body_rate_grace_s: float = Field(
        5.0, gt=0, description="How long a body may arrive slower than min_body_rate_bytes_s"
    )
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="Idle keep-alive connections")
    max_connections: int = Field(
        2048, ge=1, description="Open connections; beyond, new ones are closed at once"
    )

    # gRPC (api/grpc/): the Open Inference Protocol beside HTTP, in the same process
    grpc_port: PortNumber = Field(8001, description="gRPC's port (Triton's); 0: no gRPC server")
    grpc_max_message_bytes: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        description="Largest gRPC request message (a 3000x2000 JPEG is 1-3 MB); calls at "
        "once: what the body budget holds at 2 x this size each (gRPC reads whole messages)",
    )
    grpc_keepalive_s: float = Field(30.0, gt=0, description="Ping idle gRPC connections so often")
    grpc_max_connection_age_s: float = Field(
        300.0,
        gt=0,
        description="Close gRPC connections this old (after their calls), so clients "
        "reconnect and spread over new gateways",
    )

    # Distributed mode (`api` + `worker` joined by Redis)
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="redis:// or rediss:// (TLS); may carry a password. Also read from REDIS_URL",
    )
    redis_ca_file: Path | None = Field(None, description="CA bundle for rediss:// servers")
    redis_namespace: str = Field("resnet-serve", pattern=r"^[A-Za-z0-9._-]+$")
    worker_id: str | None = Field(
        None,
        description=(
            "This worker's name. Default: host-pid for an inference worker (several may "
            "share a host); the host name for a jobs-worker (its --check runs as another "
            "process on the same host and must find the same key)"
        ),
    )
    # Not 9100 (node_exporter's, often on the same host): 8002, Triton's metrics port.
    worker_metrics_port: int = Field(8002, ge=0, le=65535, description="0: no metrics server")
    visibility_timeout_s: float = Field(
        5.0, gt=0, description="A job taken but not acknowledged this long is reclaimed"
    )
    max_deliveries: int = Field(3, ge=1, description="Deliveries before a job is dead-lettered")
    heartbeat_interval_s: float = Field(2.0, gt=0)
    inference_timeout_s: float = Field(
        0.0,
        ge=0,
        description="Longest one batch may run before the worker's watchdog declares the "
        "engine hung, hands its jobs back and exits; 0: 10x the slowest measured batch, >= 10 s",
    )
    redis_loss_timeout_s: float = Field(
        1.0,
        gt=0,
        description="Gateway: how long Redis may not answer before requests in flight are "
        "answered 503 broker_unavailable",
    )
    queue_latency_objective_s: float = Field(
        1.0, gt=0, description="Queue wait the workers_needed signal sizes the pool for"
    )
    scale_from_zero_wait_s: float = Field(
        0.0,
        ge=0,
        description="Gateway: how long a request for a model no live worker serves waits "
        "for one to start (KEDA scaling from zero) before 503 no_workers; 0 answers at once",
    )

    # Gateway auth: off unless keys are given
    api_keys: SecretStr | None = Field(None, description="Comma-separated API keys")
    api_keys_file: Path | None = Field(None, description="File of API keys, one per line")
    auth_exempt_paths: str = Field(
        # The web page (/ and its assets) holds no data; it asks for the key itself.
        "/healthz,/readyz,/metrics,/v2/health/*,/,/static/*",
        description="Comma-separated paths (glob) served without a key",
    )

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Settings:
        if self.max_batch_wait_ms / 1000 >= self.request_timeout_s:
            raise ValueError("max_batch_wait_ms must be shorter than request_timeout_s")
        if self.visibility_timeout_s <= self.max_batch_wait_ms / 1000:
            raise ValueError("visibility_timeout_s must be longer than max_batch_wait_ms")
        if self.visibility_timeout_s < MIN_VISIBILITY_TIMEOUT_S:
            raise ValueError(
                f"visibility_timeout_s must be at least {MIN_VISIBILITY_TIMEOUT_S} s: a worker "
                "renews its leases three times per visibility timeout, and a renewal is a "
                "Redis round trip"
            )
        if self.max_upload_bytes > self.max_request_bytes:
            raise ValueError("max_upload_bytes cannot exceed max_request_bytes")
        if self.max_bulk_bytes > self.max_bulk_stored_bytes:
            raise ValueError("max_bulk_bytes cannot exceed max_bulk_stored_bytes")
        return self

    @property
    def models_dir(self) -> Path:
        return self.model_repository or self.home_dir / "models"

    @property
    def weights_dir(self) -> Path:
        return self.weights_cache_dir or self.home_dir / "weights"

    @property
    def served_models(self) -> list[str]:
        """The models a gateway serves, its default (`model`) first."""
        listed = [name.strip() for name in self.models.split(",") if name.strip()]
        return [self.model, *(name for name in listed if name != self.model)]

    @property
    def run_dir(self) -> Path:
        """Liveness files of the workers on this host (worker/liveness.py)."""
        return self.home_dir / "run"


def load_settings(**overrides: Any) -> Settings:
    """Build settings from explicit overrides (CLI flags) over the environment.

    pydantic-settings ignores environment variables it does not know; a misspelt
    RESNET_SERVE_* variable would then be silently dropped, so it is rejected here.
    """
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise ValueError(f"unknown settings in the environment: {', '.join(unknown)}")
    # REDIS_URL is the name every Redis tool and platform uses; ours wins if both are set.
    plain = os.environ.get("REDIS_URL")
    if plain and ENV_PREFIX + "REDIS_URL" not in os.environ and not overrides.get("redis_url"):
        overrides["redis_url"] = plain
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
