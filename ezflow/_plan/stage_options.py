"""The options of a stage and of a run, declared once: name, type, default and meaning.

    StageOptions  --**options: Unpack[...]-->  Flow.map / filter / flat_map, make_stage
    RunOptions    --**options: Unpack[...]-->  Flow.collect / iter / start
    MapOptions = StageOptions + RunOptions -->  ezflow.map / imap
                  --declared()------------->  defaults for the plan, the docs' table
                  --refuse_keywords()------>  TypeError for a wrong or renamed keyword

Type checkers read each option's type from these TypedDicts (PEP 692: an IDE
completes and checks every keyword, and ``timeout=`` on ``map`` is an error
before anything runs); ``Opt`` carries the default and the one-line meaning
that the docs print. At run time the declarations are plain classes whose
annotations are built once, at import (about 0.2 ms): a TypedDict, or
string annotations read with `typing.get_type_hints`, compile each one
(about 1.5 ms of every first call). Type checkers see the TypedDicts.

``timeout`` only ever means how long a caller waits (``handle.wait``, a
partial batch, the start-up wait), as in the standard library; the limit on
one item is ``item_timeout``. The old per-item spelling fails loudly rather
than being taken as something else.
"""

import os
from collections.abc import Callable, Iterable, KeysView
from typing import TYPE_CHECKING, Annotated, Any

if TYPE_CHECKING:
    from typing import TypedDict as _Declaration
else:

    class _Declaration:
        """A declaration's base at run time: its annotations and nothing else."""

        def __init_subclass__(cls, total: bool = True) -> None:
            pass

__all__ = [
    "RENAMED",
    "MapOptions",
    "Opt",
    "RunOptions",
    "StageOptions",
    "declared",
    "options_table",
    "refuse_keywords",
    "split_options",
]


class Opt:
    """An option's default and meaning, in its ``Annotated`` type."""

    __slots__ = ("annotation", "default", "doc")

    def __init__(self, default: Any, doc: str) -> None:
        self.default = default
        self.doc = doc
        self.annotation = ""  # the type as written, filled in by declared()


class StageOptions(_Declaration, total=False):
    """The options of a stage (`Flow.map`, `filter`, `flat_map`; keywords of `ezflow.map`)."""

    workers: Annotated[int | None, Opt(None, "parallel workers (default: CPUs; NUM_THREADS for threads; 16 async)")]
    mode: Annotated[str | None, Opt(None, '"process" (default), "thread" or "async" (default for coroutine functions)')]
    name: Annotated[str | None, Opt(None, "the stage's name in errors and stats (default: the function's name)")]
    when: Annotated[Callable[..., bool] | None, Opt(None, "items for which it is false pass through untouched")]
    errors: Annotated[str, Opt("raise", '"raise", "return" (a Failure in place of the value) or "skip"')]
    ordered: Annotated[bool, Opt(True, "results in input order (default) or as they finish")]
    retries: Annotated[int, Opt(0, "tries again an item whose error is one of retry_on")]
    retry_on: Annotated[type[BaseException] | tuple[type[BaseException], ...], Opt((Exception,), "errors to retry")]
    backoff: Annotated[float, Opt(0.0, "seconds before retry n: backoff * 2**n")]
    item_timeout: Annotated[float | None, Opt(None, "seconds per attempt of one item; then ItemTimeout")]
    rate: Annotated[float | None, Opt(None, "at most this many calls per second across the stage's workers")]
    burst: Annotated[int, Opt(1, "calls the rate limit lets through at once")]
    chunksize: Annotated[int | None, Opt(None, "items per message to a worker (default: adaptive)")]
    start_method: Annotated[str | None, Opt(None, '"fork", "spawn" or "forkserver" (default: ezflow\'s)')]
    backend: Annotated[Any, Opt(None, 'a dask Client, a scheduler address or "dask"')]
    share_arrays: Annotated[bool | int | None, Opt(None, "numpy results via shared memory (default: from 1 MiB)")]
    max_tasks_per_worker: Annotated[int | None, Opt(None, "replace a worker process after this many items")]
    max_memory: Annotated[int | str | None, Opt(None, 'memory per worker process, e.g. "2GB"; an item past it fails')]


class RunOptions(_Declaration, total=False):
    """The options of a run (`Flow.collect`, `iter`, `start`; keywords of `ezflow.map`)."""

    progress: Annotated[Any, Opt(None, 'None (auto), True, False, "tqdm", "notebook", or an observer')]
    checkpoint: Annotated[str | os.PathLike[str] | None, Opt(None, 'a path ("runs/name"): results stored as delivered')]
    checkpoint_match: Annotated[str | None, Opt(None, '"value" (default: items and function by value) or "position"')]
    checkpoint_failures: Annotated[bool | None, Opt(None, 'store failures too (errors="return")')]


class MapOptions(StageOptions, RunOptions, total=False):
    """The keywords of `ezflow.map` and `ezflow.imap`: a stage's options and its run's."""


_declared: dict[type, dict[str, Opt]] = {}


def declared(options: type) -> dict[str, Opt]:
    """Return name -> `Opt` (default, meaning, type as written) of a declaration, in order."""
    got = _declared.get(options)
    if got is None:
        hints = {k: v for c in reversed(options.__mro__) for k, v in vars(c).get("__annotations__", {}).items()}
        got = {}
        for name in _names(options):
            hint = hints[name]
            opt = hint.__metadata__[0]
            opt.annotation = _written(hint.__origin__)
            got[name] = opt
        _declared[options] = got
    return got


def _names(options: type) -> KeysView[str]:
    """Return the option names of a declaration, in order, without evaluating its types (a first call's cost)."""
    names = _name_cache.get(options)
    if names is None:  # its bases' in order, then its own: as a TypedDict lists them
        names = {}
        for base in options.__bases__:
            if base is not object:
                names.update(dict.fromkeys(_names(base)))
        names.update(dict.fromkeys(vars(options).get("__annotations__", ())))
        _name_cache[options] = names
    return names.keys()


_name_cache: dict[type, dict[str, None]] = {}


def _written(tp: Any) -> str:
    text = getattr(tp, "__name__", None) if isinstance(tp, type) else None
    text = text or repr(tp)
    for prefix in ("typing.", "collections.abc.", "os."):
        text = text.replace(prefix, "")
    return text


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``ezflow.map``'s keywords into (stage options, run options)."""
    run_keys = _names(RunOptions)
    stage = {k: v for k, v in options.items() if k not in run_keys}
    run = {k: v for k, v in options.items() if k in run_keys}
    return stage, run


# old keyword -> what to say instead
RENAMED = {
    "timeout": (
        "the per-item limit is now item_timeout= (seconds per attempt of one item); "
        "timeout= only ever means how long a caller waits (handle.wait, batch, start)"
    ),
}


def refuse_keywords(where: str, given: Iterable[str], options: type) -> None:
    """Raise TypeError for a keyword `options` does not declare, naming the right one.

    Args:
        where: the public name, e.g. "ezflow.map".
        given: the keywords the call received.
        options: the declaration they must come from (`StageOptions`, ...).
    """
    known = _names(options)
    for key in given:
        if key in known:
            continue
        if key in RENAMED:
            raise TypeError(f"{where}() got {key!r}: {RENAMED[key]}")
        import difflib  # only on this error path: it is not needed to start

        close = difflib.get_close_matches(key, list(known), n=1)
        hint = f"; did you mean {close[0]}=?" if close else ""
        raise TypeError(f"{where}() got an unexpected keyword argument {key!r}{hint}")


def options_table(options: type) -> str:
    """Return a declaration as a Markdown table (name, type, default, meaning) for the docs."""
    lines = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for name, opt in declared(options).items():
        default = _written(opt.default).replace("<class '", "").replace("'>", "")  # (Exception,)
        cells = (f"`{name}`", f"`{opt.annotation}`", f"`{default}`", opt.doc)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
