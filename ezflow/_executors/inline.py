"""Inline executor: batch and unbatch stages run in the driver's own thread."""

from __future__ import annotations

from typing import Any

__all__ = ["Executor"]


class Executor:
    """Nothing to start: the stage's work is done by its driver."""

    def __init__(self, spec: Any, driver: Any) -> None:
        self.spec = spec

    def setup(self) -> None:
        pass

    def close(self) -> None:
        pass

    def cancel(self) -> None:
        pass

    def join(self, timeout: float) -> None:
        pass
