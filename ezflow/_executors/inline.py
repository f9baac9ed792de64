"""Inline executor: batch and unbatch stages run in their driver's own thread."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Executor

if TYPE_CHECKING:
    from .._plan.spec import StageSpec

__all__ = ["InlineExecutor"]


class InlineExecutor(Executor):
    """Nothing to start, nothing to take: the stage's work is done by its driver."""

    def __init__(self, spec: StageSpec) -> None:
        self.spec = spec
        self.closing = self.cancelled = self.broken = False

    def _wakeup(self) -> None:
        pass  # no threads, no port

    def join(self, timeout: float) -> None:
        pass
