"""Quiet exits (issue 15 point 7): nothing internal is printed on a clean or a handled exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
START_METHODS = ["fork", "spawn", "forkserver"]


def _stderr_of(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    return done.stderr


_ASYNC = """
import asyncio, time, ezflow

async def f(x):
    if x == 3:
        raise ValueError("x")
    await asyncio.sleep(0.01)
    return x

try:
    ezflow.map(f, range(20), progress=False)
except ezflow.TaskError:
    pass
h = ezflow.Flow(range(100)).map(f, errors="skip").start(progress=False)
time.sleep(0.05)
h.cancel()
"""


def test_failed_and_cancelled_async_runs_print_nothing() -> None:
    assert _stderr_of(_ASYNC) == ""


_UNFINISHED_IMAP = """
import ezflow

def f(x):
    return x

it = ezflow.imap(f, range(100000), workers=2, progress=False)
print(next(it))
"""


@pytest.mark.parametrize("round_", range(3))  # a race with the exit clean-up: try a few times
def test_script_ending_with_an_unfinished_imap_prints_nothing(round_: int) -> None:
    assert _stderr_of(_UNFINISHED_IMAP) == ""


_PARENT_KILLED = """
import os, signal, sys, threading, time, ezflow

def slow(x):
    time.sleep(3)
    return x

if __name__ == "__main__":
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGKILL)).start()
    ezflow.map(slow, range(8), workers=2, start_method=sys.argv[1], progress=False)
"""


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", START_METHODS)
def test_workers_of_a_killed_parent_exit_quietly(tmp_path: Path, start_method: str) -> None:
    err = tmp_path / "stderr.txt"
    with err.open("w") as f:  # the workers inherit it and outlive the parent for a moment
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_PARENT_KILLED), start_method], stderr=f, timeout=60, cwd=REPO
        )
    assert proc.returncode == -9
    time.sleep(4)  # the workers finish their item, find the pipe broken and exit
    assert err.read_text() == ""
