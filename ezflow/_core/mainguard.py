"""A spawn/forkserver script without ``if __name__ == "__main__":``.

    parent: python script.py -> ezflow.map -> starts workers (spawn/forkserver)
    child:  re-imports script.py as __mp_main__ -> top level calls ezflow.map again
            -> `refuse_in_bootstrap` exits with EXIT_NO_MAIN_GUARD (no grandchildren)
    parent: the worker died with that code -> `translate` raises StageError naming the fix

Python's own check fires in the child too (``RuntimeError: An attempt has been
made to start a new process before ...``), but the parent only saw an exit code
and blamed item 0; the dedicated exit code carries the cause back.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from .errors import StageError, TaskError, WorkerDied

if TYPE_CHECKING:
    import ast  # at run time imported where used: only a failed start reads the script

__all__ = ["EXIT_NO_MAIN_GUARD", "MESSAGE", "refuse_in_bootstrap", "translate", "unguarded_call"]

EXIT_NO_MAIN_GUARD = 86

MESSAGE = (
    "the script calls ezflow at its top level without `if __name__ == \"__main__\":`. "
    "Under the spawn and forkserver start methods every worker re-imports the script, which runs that call again, "
    "so no worker could start. Put the call under the guard:\n\n"
    "    if __name__ == \"__main__\":\n"
    "        results = ezflow.map(fn, items)\n\n"
    "(or use start_method=\"fork\" on Linux)"
)


def _importing_mp_main() -> tuple[bool, bool]:
    """(re-importing the script at module level, in the forkserver's own preload)."""
    importing = server = False
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "<module>" and frame.f_globals.get("__name__") == "__mp_main__":
            importing = True
        if code.co_name == "main" and code.co_filename.endswith("forkserver.py"):
            server = True
        frame = frame.f_back  # type: ignore[assignment]
    return importing, server


def refuse_in_bootstrap() -> None:
    """In a child re-importing the user's script: leave with a code the parent recognises."""
    importing, server = _importing_mp_main()
    if not importing:
        return
    if server:  # the forkserver preloading __main__: its children report it
        raise SystemExit(EXIT_NO_MAIN_GUARD)
    sys.stderr.write("ezflow: " + MESSAGE + "\n")
    sys.stderr.flush()
    os._exit(EXIT_NO_MAIN_GUARD)  # forkserver children turn a SystemExit into code 1


def _is_main_test(node: ast.expr) -> bool:
    import ast

    if not (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq)):
        return False
    sides = [node.left, *node.comparators]
    names = [n.id for n in sides if isinstance(n, ast.Name)]
    consts = [n.value for n in sides if isinstance(n, ast.Constant)]
    return names == ["__name__"] and consts == ["__main__"]


def unguarded_call() -> bool:
    """True when the script's module-level code made this call outside ``if __name__ == "__main__":``."""
    frame = sys._getframe(1)
    while frame is not None:
        g = frame.f_globals
        if frame.f_code.co_name == "<module>" and g.get("__name__") == "__main__" and g.get("__file__"):
            break
        frame = frame.f_back  # type: ignore[assignment]
    else:
        return False  # a notebook, the REPL, python -c, or a call from inside a function
    import ast

    try:
        with open(frame.f_globals["__file__"], encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return False
    line = frame.f_lineno
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test):
            end = node.body[-1].end_lineno or node.body[-1].lineno
            if node.body[0].lineno <= line <= end:
                return False
    return True


def translate(exc: BaseException) -> BaseException:
    """A TaskError caused by a worker that died re-importing the script becomes a StageError.

    The worker says so with its exit code (spawn); a forkserver's preload
    dies before any worker exists (code 1), so there the parent reads its
    own script: the failing call sits outside the main guard.
    """
    cause = exc.__cause__
    if not (isinstance(exc, TaskError) and isinstance(cause, WorkerDied)):
        return exc
    if cause.exitcode == EXIT_NO_MAIN_GUARD or (cause.exitcode == 1 and unguarded_call()):
        err = StageError(getattr(exc, "stage", "") or "", MESSAGE)
        err.__cause__ = cause
        err.__suppress_context__ = True
        return err
    return exc
