"""The `model` and `top_k` query parameters /v1/classify and /v1/jobs share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

MAX_TOP_K = 20
TopK = Annotated[int, Query(ge=1, le=MAX_TOP_K, description="How many labels to return")]
ModelName = Annotated[str | None, Query(description="Model to use; the default model if unset")]
