"""A new user finds every public name: dir(ezflow) and Tab completion list the lazily loaded ones too."""

from __future__ import annotations

import subprocess
import sys

LAZY = {"Msg", "Q", "run", "run_thread", "share", "SharedMemoryWarning", "Executor"}


def test_dir_lists_lazy_names_without_importing_them():
    # a fresh interpreter: in this one an earlier test may already have loaded them
    code = (
        "import sys, ezflow\n"
        "names = dir(ezflow)\n"
        "print(sorted(n for n in ezflow.__all__ if n not in names))\n"
        "print(sorted(m for m in ('ezflow._ezq.q', 'ezflow._transport.shm', 'ezflow._executor_api') if m in sys.modules))\n"
        "print(names == sorted(set(names)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    missing, loaded, is_sorted = out.splitlines()
    assert missing == "[]", f"dir(ezflow) misses {missing}"
    assert loaded == "[]", f"dir(ezflow) imported {loaded}: `import ezflow` should stay light"
    assert is_sorted == "True"


def test_dir_names_are_all_reachable():
    import ezflow

    names = set(dir(ezflow))
    assert set(ezflow.__all__) <= names and names >= LAZY
    for name in LAZY:
        assert getattr(ezflow, name) is not None


def test_ipython_completes_lazy_names():
    completer = __import__("pytest").importorskip("IPython.core.completer")
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_cell("import ezflow", store_history=False)
        with completer.provisionalcompleter():
            found = {c.text for c in shell.Completer.completions("ezflow.s", len("ezflow.s"))}
        assert "ezflow.share" in found or "share" in found, found
    finally:
        InteractiveShell.clear_instance()
