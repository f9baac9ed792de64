"""One fork registry (`_core.forks`) serves Flow's workers, shared memory, SIGTERM and the Q layer."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ezflow"

pytestmark = pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="no fork on this platform")


def test_only_the_registry_registers_with_os():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "register_at_fork" and path.name != "forks.py":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"register with ezflow._core.forks.at_fork instead: {found}"


def test_flow_and_q_hooks_are_in_the_one_list():
    code = textwrap.dedent(
        """
        import ezflow._ezq.q, ezflow._executors.pool, ezflow._transport.registry
        from ezflow._core.forks import hooks
        print(" ".join(hooks()["after_in_child"]))
        """
    )
    out = _run(code)
    for owner in ("ezflow._core.procs.", "ezflow._core.sigterm.", "ezflow._transport.cleanup.", "ezflow._ezq.state."):
        assert owner in out, out


@pytest.mark.timeout(60)
def test_hooks_run_in_os_order_and_one_error_does_not_stop_the_rest():
    code = textwrap.dedent(
        """
        import os
        from ezflow._core.forks import at_fork

        seen = []
        def boom():
            seen.append("boom")
            raise RuntimeError("a hook failed")
        at_fork(before=lambda: seen.append("before 1"), after_in_child=lambda: seen.append("child 1"),
                after_in_parent=lambda: seen.append("parent 1"))
        at_fork(before=lambda: seen.append("before 2"), after_in_child=boom)
        at_fork(after_in_child=lambda: seen.append("child 3"))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, ",".join(seen).encode())
            os._exit(0)
        os.close(w)
        child = os.read(r, 1000).decode()
        os.waitpid(pid, 0)
        print("child:" + child)
        print("parent:" + ",".join(seen))
        """
    )
    out = _run(code)
    assert "child:before 2,before 1,child 1,boom,child 3" in out, out
    assert "parent:before 2,before 1,parent 1" in out, out


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout
