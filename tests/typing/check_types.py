"""Read by mypy, never run (tests/test_typing.py): every public entry point keeps the user's types.

Each ``assert_type`` is a claim mypy checks against the installed package: if
ezflow were not found, or a result were ``Any``, the check fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, assert_type

import ezflow
from ezflow import Failure, Flow


def parse(s: str) -> int:
    return int(s)


def add(a: int, b: float) -> float:
    return a + b


def three(a: int, b: str, c: bytes) -> tuple[int, str, bytes]:
    return a, b, c


def four(a: int, b: int, c: int, d: int) -> str:
    return f"{a}{b}{c}{d}"


def words(line: str) -> list[str]:
    return line.split()


async def fetch(url: str) -> bytes:
    return url.encode()


async def fetch_pair(url: str, n: int) -> bytes:
    return url.encode() * n


class Model:
    """A class stage: built once per worker, then called per item."""

    def __init__(self) -> None:
        self.scale = 2.0

    def __call__(self, batch: list[int]) -> list[float]:
        return [x * self.scale for x in batch]


class Pair:
    """A class stage over two iterables."""

    def __call__(self, a: int, b: str) -> str:
        return b * a


class Tokenizer:
    def __call__(self, line: str) -> list[str]:
        return line.split()


# -- ezflow.map / imap: as builtin map, one type per iterable ---------------------
assert_type(ezflow.map(parse, ["1", "2"]), list[int])
assert_type(ezflow.map(parse, iter(["1"]), workers=2, mode="thread", item_timeout=1.5, errors="raise"), list[int])
assert_type(ezflow.map(add, [1, 2], [0.5, 1.5]), list[float])
assert_type(ezflow.map(three, [1], ["a"], [b"b"]), list[tuple[int, str, bytes]])
assert_type(ezflow.map(four, [1], [2], [3], [4]), list[str])
assert_type(ezflow.map(fetch, ["https://example.org"]), list[bytes])
assert_type(ezflow.map(fetch_pair, ["u"], [2]), list[bytes])
assert_type(ezflow.map(Model, [[1, 2]]), list[list[float]])
assert_type(ezflow.map(lambda x: x * 2, [1, 2]), list[int])
assert_type(ezflow.map(Pair, [1], ["a"]), list[Any])  # allowed; its result type is not followed
assert_type(ezflow.imap(parse, ["1"]), Iterator[int])
assert_type(ezflow.imap(add, [1], [2.0], progress=False, checkpoint="runs/x"), Iterator[float])
assert_type(ezflow.imap(fetch, ["u"]), Iterator[bytes])

# -- Flow[T] through every builder ------------------------------------------------
lines = Flow(["a b", "c"])
assert_type(lines, Flow[str])
assert_type(Flow(), Flow[Any])  # an open input, fed through the handle
assert_type(Flow(range(3)), Flow[int])
tokens = lines.flat_map(words)
assert_type(tokens, Flow[str])
assert_type(lines.flat_map(Tokenizer), Flow[str])
numbers = tokens.map(parse, workers=2).filter(lambda n: n > 0, mode="thread")
assert_type(numbers, Flow[int])
assert_type(numbers.filter(bool), Flow[int])
batches = numbers.batch(32, timeout=0.1)
assert_type(batches, Flow[list[int]])
assert_type(batches.map(Model), Flow[list[float]])
assert_type(batches.map(Model).unbatch(), Flow[float])
assert_type(batches.unbatch(), Flow[int])
assert_type(lines.map(fetch), Flow[bytes])

# -- results ----------------------------------------------------------------------
assert_type(numbers.collect(), list[int])
assert_type(numbers.collect(progress=False, checkpoint="runs/y", checkpoint_match="position"), list[int])
assert_type(numbers.iter(), Iterator[int])
for n in numbers:
    assert_type(n, int)
assert_type(numbers.__aiter__(), AsyncIterator[int])


async def in_a_notebook() -> None:
    assert_type(await numbers.acollect(), list[int])
    async for n in numbers:
        assert_type(n, int)


# errors="return" puts Failure records among the values: the static type stays list[R]
# (an option cannot change a return type); narrow with isinstance
for value in ezflow.map(parse, ["1", "x"], errors="return"):
    if isinstance(value, Failure):
        assert_type(value, Failure)
    else:
        assert_type(value, int)
