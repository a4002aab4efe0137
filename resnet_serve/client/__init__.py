"""The Python client for resnet-serve's /v1 API. Imports no server code: install
`resnet-serve` (its base dependencies) and use

    from resnet_serve.client import Client

    with Client("http://127.0.0.1:8000") as client:
        result = client.classify("cat.jpg", top_k=3)
"""

from resnet_serve.client.client import AsyncClient, Client
from resnet_serve.client.models import (
    BatchItem,
    Classification,
    ErrorInfo,
    Health,
    ModelSummary,
    Prediction,
    ServeClientError,
    Timings,
)
from resnet_serve.client.retry import DEFAULT_RETRY, NO_RETRIES, RetryPolicy

__all__ = [
    "DEFAULT_RETRY",
    "NO_RETRIES",
    "AsyncClient",
    "BatchItem",
    "Classification",
    "Client",
    "ErrorInfo",
    "Health",
    "ModelSummary",
    "Prediction",
    "RetryPolicy",
    "ServeClientError",
    "Timings",
]
