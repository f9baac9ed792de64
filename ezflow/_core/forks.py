"""The fork registry: everything ezflow does when a process forks, in one list.

    at_fork(before=..., after_in_parent=..., after_in_child=...)   each module that owns
        fork() in any thread:  before hooks, newest first             process-wide state
                               then after hooks, oldest first          registers here once
                               (after_in_parent or after_in_child)

A forked child starts with a copy of every module's state but only the
forking thread, so whatever the parent's threads held (a broker, a watcher,
the owner ends of worker pipes, shared-memory descriptors) must be dropped
or reset in the child. Flow's worker pools (`procs`), shared memory
(`_transport.registry`), the SIGTERM cleanup (`sigterm`) and the Q layer
(`_ezq.state`, `.broker`, `.child`) register their hooks here rather than
each with ``os.register_at_fork``; `hooks()` lists them (a test reads it).

The order is the one ``os.register_at_fork`` keeps: ``before`` hooks run
newest first, the others oldest first, so a module that registers after
another (it imports it) may rely on it before a fork and after. As there,
a hook that raises does not keep the next from running: the first error is
raised once all have run, and Python reports it as unraisable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

__all__ = ["at_fork", "hooks"]

Hook = Callable[[], object]

_before: list[Hook] = []
_after_in_parent: list[Hook] = []
_after_in_child: list[Hook] = []


def at_fork(
    *, before: Hook | None = None, after_in_parent: Hook | None = None, after_in_child: Hook | None = None
) -> None:
    """Run the given hooks around every fork of this process, as ``os.register_at_fork`` would."""
    if before is not None:
        _before.append(before)
    if after_in_parent is not None:
        _after_in_parent.append(after_in_parent)
    if after_in_child is not None:
        _after_in_child.append(after_in_child)


def hooks() -> dict[str, list[str]]:
    """Return the registered hooks by moment, each as ``module.function``, in the order they run."""
    def names(fns: Iterable[Hook]) -> list[str]:
        return [f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', repr(f))}" for f in fns]

    return {
        "before": names(reversed(_before)),
        "after_in_parent": names(_after_in_parent),
        "after_in_child": names(_after_in_child),
    }


def _run(fns: Iterable[Hook]) -> None:
    error: BaseException | None = None
    for fn in list(fns):
        try:
            fn()
        except BaseException as exc:  # the next hooks must run all the same
            if error is None:
                error = exc
    if error is not None:
        raise error


def _run_before() -> None:
    _run(reversed(_before))


def _run_after_in_parent() -> None:
    _run(_after_in_parent)


def _run_after_in_child() -> None:
    _run(_after_in_child)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_run_before, after_in_parent=_run_after_in_parent, after_in_child=_run_after_in_child)
