"""A spawn/forkserver script without the main guard gets a StageError naming the fix."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

UNGUARDED = textwrap.dedent(
    """
    import sys
    import ezflow

    def sq(x):
        return x * x

    print(ezflow.map(sq, range(4), workers=2, progress=False, start_method=sys.argv[1]))
    """
)

GUARDED = UNGUARDED.replace("\nprint(", '\nif __name__ == "__main__":\n    print(')


def _run(tmp_path, source, method):
    path = tmp_path / "script.py"
    path.write_text(source)
    return subprocess.run([sys.executable, str(path), method], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_unguarded_script_names_the_missing_guard(tmp_path, method):
    proc = _run(tmp_path, UNGUARDED, method)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()
    err = proc.stderr
    assert "StageError: stage 'sq' could not start" in err, err
    assert 'if __name__ == "__main__":' in err and "results = ezflow.map(fn, items)" in err
    assert "TaskError" not in err and "failed on item 0" not in err
    assert last[-1].startswith("(or use start_method")


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_guarded_script_runs(tmp_path, method):
    proc = _run(tmp_path, GUARDED, method)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 1, 4, 9]"


def test_fork_needs_no_guard(tmp_path):
    proc = _run(tmp_path, UNGUARDED, "fork")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 1, 4, 9]"


ENTRIES = {
    "imap": "print(list(ezflow.imap(sq, range(4), workers=2, progress=False, start_method=sys.argv[1])))",
    "Flow iteration": "print([x for x in ezflow.Flow(range(4)).map(sq, workers=2, start_method=sys.argv[1])])",
    "Flow.collect": "print(ezflow.Flow(range(4)).map(sq, workers=2, start_method=sys.argv[1]).collect(progress=False))",
    "start/wait": "print(ezflow.Flow(range(4)).map(sq, workers=2, start_method=sys.argv[1]).start(progress=False).wait())",
    "Executor": "print(ezflow.Executor(2, start_method=sys.argv[1]).submit(sq, 3).result(timeout=60))",
}


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_every_entry_point_names_the_missing_guard(tmp_path, entry):
    call = "print(ezflow.map(sq, range(4), workers=2, progress=False, start_method=sys.argv[1]))"
    proc = _run(tmp_path, UNGUARDED.replace(call, ENTRIES[entry]), "spawn")
    assert proc.returncode != 0
    assert "could not start" in proc.stderr and 'if __name__ == "__main__":' in proc.stderr, proc.stderr
    assert "TaskError" not in proc.stderr and "noqa" not in proc.stderr


def test_every_public_entry_point_goes_through_the_one_error_surface():
    import ezflow
    from ezflow._engine.handle import Handle

    ex = ezflow.Executor
    entries = [ezflow.map, ezflow.imap, ezflow.Flow.collect, ezflow.Flow.iter, ezflow.Flow.start, Handle.wait]
    entries += [ex.__init__, ex.submit, ex.map, ex.shutdown, ezflow.apply]
    for fn in entries:
        # @public: the main-guard check, the error translation and the traceback cut, written once
        assert fn.__code__.co_filename.endswith("entry.py"), fn
        assert fn.__code__.co_name == fn.__wrapped__.__name__, fn
