"""Read by mypy, never run (tests/test_typing.py): each line marked ``# error:`` must be an error, and no other.

The marker holds a piece of mypy's message. These are the mistakes the typed
API catches before anything runs.
"""

from __future__ import annotations

import ezflow


def parse(s: str) -> int:
    return int(s)


ezflow.map(parse, ["1"], timeout=5)  # error: Unexpected keyword argument "timeout"
ezflow.map(parse, ["1"], worker=2)  # error: Unexpected keyword argument "worker"
ezflow.map(parse, ["1"], workers="2")  # error: No overload variant of "map" matches argument types "Callable[[str], int]", "list[str]", "str"
ezflow.map(parse, [1, 2])  # error: Argument 1 to "map" has incompatible type
ezflow.map(parse)  # error: No overload variant of "map" matches
ezflow.Flow([1]).map(parse)  # error: Argument 1 to "map" of "Flow" has incompatible type
ezflow.Flow(["1"]).map(parse, timeout=5)  # error: Unexpected keyword argument "timeout"
ezflow.Flow(["1"]).collect(progres=False)  # error: Unexpected keyword argument "progres"
ezflow.Flow([1]).unbatch()  # error: Invalid self argument
total: int = sum(ezflow.Flow(["a"]).map(str.upper).collect())  # error: Argument 1 to "sum" has incompatible type
