"""Tracebacks end at the user's call: their function and calling line, not ezflow's insides."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import ezflow

    def parse_record(x):
        return 10 // (x - 3)

    if __name__ == "__main__":
        ezflow.map(parse_record, range(6), workers=2, progress=False)  # the user's call
    """
)


def _run(tmp_path, env_extra=None):
    path = tmp_path / "user_script.py"
    path.write_text(SCRIPT)
    env = dict(os.environ, **(env_extra or {}))
    env.pop("EZFLOW_FULL_TRACEBACK", None) if not env_extra else None
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    return proc.stderr


def _internal_frames(text):
    return [m for m in re.findall(r'File "([^"]+)"', text) if re.search(r"ezflow[/\\]_", m)]


def test_script_traceback_shows_user_frames_only(tmp_path):
    err = _run(tmp_path)
    assert "in parse_record" in err and "return 10 // (x - 3)" in err
    assert "# the user's call" in err
    assert "TaskError" in err and "ZeroDivisionError" in err
    # only the public entry point's own frame remains, named after the call the user made
    assert [os.path.basename(f) for f in _internal_frames(err)] == ["entry.py"], err
    assert ", in map\n" in err
    assert "noqa" not in err  # no lint comment of ours in a user's traceback


def test_full_traceback_env_var_restores_internal_frames(tmp_path):
    err = _run(tmp_path, {"EZFLOW_FULL_TRACEBACK": "1"})
    assert len(_internal_frames(err)) > 3, err
    assert "in parse_record" in err


def test_exception_keeps_type_cause_and_attributes():
    import ezflow
    from ezflow._core.errors import TaskError

    def boom(x):
        raise ValueError(f"bad {x}")

    try:
        ezflow.map(boom, [7], mode="thread", progress=False)
    except TaskError as exc:
        assert isinstance(exc.__cause__, ValueError)
        assert exc.__cause__.__cause__ is not None  # the remote traceback text
        assert exc.__dict__  # attributes (index, item, ...) kept on the same object
        frames = [f.f_code.co_name for f, _ in __import__("traceback").walk_tb(exc.__traceback__)]
        assert frames[-1] == "map" and "collect" not in frames
    else:
        raise AssertionError("no TaskError")


ENTRY_POINTS = {
    "imap": "for _ in ezflow.imap(parse_record, range(6), workers=2, progress=False): pass",
    "Flow.iter": "for _ in ezflow.Flow(range(6)).map(parse_record, workers=2).iter(progress=False): pass",
    "Handle.wait": "ezflow.Flow(range(6)).map(parse_record, workers=2).start(progress=False).wait()",
}


def _run_call(tmp_path, call: str, env_extra=None) -> str:
    path = tmp_path / "user_script.py"
    path.write_text(SCRIPT.replace("ezflow.map(parse_record, range(6), workers=2, progress=False)", call))
    env = {k: v for k, v in os.environ.items() if k != "EZFLOW_FULL_TRACEBACK"}
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0, proc.stdout
    return proc.stderr


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_every_entry_point_ends_at_the_users_call(tmp_path, entry):
    err = _run_call(tmp_path, ENTRY_POINTS[entry])
    assert "in parse_record" in err and "return 10 // (x - 3)" in err
    assert "# the user's call" in err
    assert "TaskError" in err and "ZeroDivisionError" in err
    # at most the public entry point's own frame is left of ezflow's insides
    assert len(_internal_frames(err)) <= 1, err
    assert "noqa" not in err
    full = _run_call(tmp_path, ENTRY_POINTS[entry], {"EZFLOW_FULL_TRACEBACK": "1"})
    assert len(_internal_frames(full)) > len(_internal_frames(err)), full


INTERRUPTED = textwrap.dedent(
    """
    import os, signal, threading, time, ezflow

    def nap(x):
        time.sleep(0.2)
        return x

    if __name__ == "__main__":
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        for _ in ezflow.imap(nap, range(1000), workers=2, progress=False):  # the user's loop
            pass
    """
)


def test_interrupted_imap_traceback_is_short(tmp_path):
    path = tmp_path / "user_script.py"
    path.write_text(INTERRUPTED)
    env = {k: v for k, v in os.environ.items() if k != "EZFLOW_FULL_TRACEBACK"}
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert "KeyboardInterrupt" in proc.stderr
    assert "# the user's loop" in proc.stderr
    assert len(_internal_frames(proc.stderr)) <= 1, proc.stderr
    assert len(proc.stderr.splitlines()) <= 10, proc.stderr
