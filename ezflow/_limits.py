"""Rate limits: at most `rate` calls per second across a stage's workers."""

from __future__ import annotations

from typing import Any

__all__ = ["make_limiter"]


def make_limiter(spec: Any, shared: bool) -> Any:
    """Return a limiter for the stage, or None when it has no rate."""
    if spec.rate is None:
        return None
    raise NotImplementedError("rate limits are not built yet")
