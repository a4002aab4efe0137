"""Redis connections from settings: TLS and passwords come in the URL, never in logs."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis

from resnet_serve.shared.settings import Settings

# Plain commands fail fast so a gateway answers 503 quickly while Redis is gone; blocking
# reads wait at most `block_s` server-side, so their socket timeout sits just above it.
COMMAND_TIMEOUT_S = 2.0


def redis_client(
    settings: Settings, *, block_s: float = 0.0, timeout_s: float = COMMAND_TIMEOUT_S
) -> Redis:
    """`timeout_s`: how long past `block_s` a reply may take before the command fails."""
    options: dict[str, Any] = {
        "socket_connect_timeout": min(timeout_s, COMMAND_TIMEOUT_S),
        "socket_timeout": timeout_s + block_s,
        "health_check_interval": 15,
        "decode_responses": False,
    }
    if settings.redis_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.redis_ca_file)
    client: Redis = Redis.from_url(settings.redis_url.get_secret_value(), **options)
    return client


def redacted(url: str) -> str:
    """The URL with any password replaced, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))
