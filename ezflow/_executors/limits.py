"""Rate limits: at most `rate` calls per second across a stage's workers.

A token bucket holding at most `burst` tokens, refilled at `rate` per
second. A caller that finds no token reserves the next one (the count may
go negative) and sleeps until its turn, so waiting callers are served in
order and the long-run rate is exact. Thread and async stages reserve a
token per call in the per-item steps (`items.steps`), and the runner sleeps
its own way (``time.sleep`` or ``asyncio.sleep``); process stages pace the
parent's dispatch instead (one item per message, one in flight per worker),
so no lock has to be shared with already-running worker processes.
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["TokenBucket", "make_limiter"]


class TokenBucket:
    """Allow `rate` acquisitions per second, `burst` at once."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take one token now; return the seconds the caller must wait before using it."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            return -self._tokens / self.rate if self._tokens < 0 else 0.0

    def acquire(self) -> None:
        """Take one token, sleeping until one is due."""
        wait = self.reserve()
        if wait > 0:
            time.sleep(wait)


def make_limiter(spec: Any, shared: bool) -> TokenBucket | None:
    """Return the stage's bucket for worker-side use, or None.

    ``shared`` is True for process stages: their limit is kept by the
    parent's dispatcher, so their workers get no limiter.
    """
    if spec.rate is None or shared:
        return None
    return TokenBucket(spec.rate, spec.burst)
