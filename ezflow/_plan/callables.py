"""What a stage function may be, for type checkers: the type variables and protocols of the typed API.

    ezflow.map(fn: A -> R, Iterable[A])       -> list[R]
    Flow[T].map(fn: T -> R)                   -> Flow[R]     (a coroutine function T -> Awaitable[R] too)
    Flow[T].map(Model)                        -> Flow[R]     (Model() builds a StageClass[T, R])

Nothing here runs: the names are only read in annotations.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

__all__ = ["A", "B", "C", "R", "StageClass", "T_co", "U"]

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
R = TypeVar("R")
U = TypeVar("U")
T_co = TypeVar("T_co", covariant=True)
_In_contra = TypeVar("_In_contra", contravariant=True)
_Out_co = TypeVar("_Out_co", covariant=True)


class StageClass(Protocol[_In_contra, _Out_co]):
    """A class stage's instance: built once per worker with no arguments, then called per item."""

    def __call__(self, item: _In_contra, /) -> _Out_co: ...
