"""Resumable runs: a run killed or stopped part way, run again, computes only what is missing.

Every function here records its calls by appending a line to a file
(``<tag> <item>``, one ``write`` on an O_APPEND file, so lines from several
worker processes never interleave), so the tests count real calls in real
processes: a script that is SIGKILLed, a Jupyter kernel that is killed and
started again, a run stopped by Ctrl-C or by a failing item.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest

import ezflow
from ezflow._engine.checkpoint_store import Store, resolve_path

REPO = Path(__file__).resolve().parent.parent
KILL_WAIT = 60  # seconds a test waits for a child to reach the point where it is killed

# --- helpers -------------------------------------------------------------------

SCRIPT = """
import json, os, sys, time
import ezflow

CALLS = sys.argv[1]
CHECKPOINT = sys.argv[2]
N = int(sys.argv[3])
DELAY = float(sys.argv[4])

def work(x):
    time.sleep(DELAY)
    fd = os.open(CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{os.environ['EZ_TAG']} {x}\\n".encode())
    os.close(fd)
    return x * x

if __name__ == "__main__":
    out = ezflow.map(work, range(N), workers=2, checkpoint=CHECKPOINT, progress=False)
    print(json.dumps(out))
"""


def _calls(path: Path, tag: str | None = None) -> list[int]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        t, x = line.split()
        if tag is None or t == tag:
            out.append(int(x))
    return out


def _wait_for(cond, what: str, timeout: float = KILL_WAIT) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _stored(checkpoint: Path) -> set[int]:
    """Positions with a stored result, read the way the next run reads them."""
    return {p for seg in Store.peek(resolve_path(checkpoint)) for p in range(seg.start, seg.end)}


def _tag(tag: str) -> None:
    """Mark the calls from now on; process workers are started again to see it."""
    os.environ["EZ_TAG"] = tag
    ezflow.shutdown()


@pytest.fixture(autouse=True)
def _no_tag():
    yield
    if os.environ.pop("EZ_TAG", None) is not None:
        # A worker keeps the environment it was started with, and warm pools outlive
        # the test: stop the tagged ones, or the next test's first run writes this tag.
        ezflow.shutdown()


def _env(tag: str) -> dict:
    env = dict(os.environ, EZ_TAG=tag, PYTHONPATH=str(REPO))
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


# --- a SIGKILLed script ---------------------------------------------------------


def test_sigkilled_script_rerun_computes_only_the_missing_items(tmp_path):
    n, delay = 200, 0.05
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    calls, ck = tmp_path / "calls.txt", tmp_path / "runs" / "job"
    args = [sys.executable, str(script), str(calls), str(ck), str(n), str(delay)]
    proc = subprocess.Popen(args, env=_env("a"), cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE)
    try:
        _wait_for(lambda: len(_calls(calls)) >= n // 2, "half the items")
        done_a_second_before = len(_calls(calls))
        time.sleep(1.2)  # results wait at most ~0.5 s before they are written
        _kill_group(proc)  # SIGKILL: no handler, no flush
    finally:
        _kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    first = _calls(calls, "a")
    stored = _stored(ck)
    assert stored <= set(first)
    assert len(stored) >= done_a_second_before - 4, (len(stored), done_a_second_before)
    assert len(first) < n

    out = subprocess.run(args, env=_env("b"), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [x * x for x in range(n)]
    second = _calls(calls, "b")
    assert sorted(second) == sorted(set(range(n)) - stored)  # each missing item once, no stored one again


LOSS_SCRIPT = """
import os, sys, time
import ezflow

CALLS, CHECKPOINT = sys.argv[1], sys.argv[2]
CHUNKSIZE = None if sys.argv[3] == "auto" else int(sys.argv[3])
ORDERED = sys.argv[4] == "ordered"

def work(x):
    time.sleep(0.1)
    fd = os.open(CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"a {x}\\n".encode())
    os.close(fd)
    return x

if __name__ == "__main__":
    ezflow.map(work, range(400), workers=2, chunksize=CHUNKSIZE, ordered=ORDERED, checkpoint=CHECKPOINT, progress=False)
"""


@pytest.mark.parametrize(
    ("chunksize", "ordered"), [("auto", "ordered"), ("auto", "unordered"), ("80", "ordered")]
)
def test_sigkill_loses_about_a_second_of_work_whatever_the_chunking(tmp_path, chunksize, ordered):
    # 0.1 s items on 2 workers: 20 a second. Chunk-at-a-time storing lost 47-63 of the first 110-126
    # (source chunks of 1, 2, 4 ... 64 stored whole), or every item of a piece of 80 (8 s of work).
    script = tmp_path / "job.py"
    script.write_text(LOSS_SCRIPT)
    calls, ck = tmp_path / "calls.txt", tmp_path / "runs" / "job"
    args = [sys.executable, str(script), str(calls), str(ck), chunksize, ordered]
    proc = subprocess.Popen(args, env=_env("a"), cwd=tmp_path, start_new_session=True)
    try:
        _wait_for(lambda: len(_calls(calls)) >= 115, "115 items done")
        _kill_group(proc)
    finally:
        _kill_group(proc)
    computed = set(_calls(calls))
    stored = _stored(ck)
    assert stored <= computed
    lost = len(computed - stored)
    assert lost <= 30, f"{lost} of {len(computed)} computed items were not stored (about 1 s of work is 20)"


# --- a Jupyter kernel killed and started again -----------------------------------

KERNEL_CELL = """
import os, time, ezflow
def work(x):
    time.sleep(0.05)
    fd = os.open(CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{os.environ['EZ_TAG']} {x}\\n".encode())
    os.close(fd)
    return x + 1000
out = ezflow.map(work, range(N), workers=2, checkpoint="runs/nb", progress=False)
print("RESULT", sum(out), len(out))
"""


def _kernel(tmp_path: Path, tag: str):
    jc = pytest.importorskip("jupyter_client")
    km = jc.KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path), env=_env(tag))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


@pytest.mark.slow
def test_killed_kernel_rerun_computes_only_the_missing_items(tmp_path):
    n = 200
    calls = tmp_path / "calls.txt"
    setup = f"CALLS = {str(calls)!r}; N = {n}"
    km, kc = _kernel(tmp_path, "a")
    try:
        kc.execute_interactive(setup, timeout=30)
        kc.execute(KERNEL_CELL)  # do not wait: the kernel is killed while it runs
        _wait_for(lambda: len(_calls(calls)) >= n // 2, "half the items in the kernel")
        time.sleep(1.2)
        km.shutdown_kernel(now=True)  # a kill, as "Restart kernel" does with a busy kernel
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=True)
        km.context.destroy(linger=0)  # now, not in a later test's gc.collect() (faults/_kernel.release)
    first = set(_calls(calls, "a"))
    stored = _stored(tmp_path / "runs" / "nb")
    assert stored and stored <= first
    assert len(first) < n

    km, kc = _kernel(tmp_path, "b")  # a new kernel: the cell's function is defined afresh
    texts: list[str] = []

    def keep(msg):
        if msg["header"]["msg_type"] == "stream":
            texts.append(msg["content"]["text"])

    try:
        kc.execute_interactive(setup, timeout=30)
        reply = kc.execute_interactive(KERNEL_CELL, timeout=120, output_hook=keep)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert f"RESULT {sum(x + 1000 for x in range(n))} {n}" in "".join(texts)
    second = _calls(calls, "b")
    assert sorted(second) == sorted(set(range(n)) - stored)


# --- the file after a kill mid-write ----------------------------------------------

WRITER = """
import sys, ezflow
def big(x):
    return bytes([x % 256]) * 20_000   # 20 kB per result: rows of megabytes, written while killed
ezflow.map(big, range(int(sys.argv[2])), workers=2, mode="thread", checkpoint=sys.argv[1], progress=False)
"""


def test_file_killed_mid_write_stays_readable(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    ck = tmp_path / "runs" / "big"
    n = 200_000
    path = resolve_path(ck)
    for delay in (0.6, 0.9, 1.3, 1.7):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(ck), str(n)], env=_env("w"), start_new_session=True
        )
        try:
            _wait_for(lambda: path.exists(), "the checkpoint file")
            time.sleep(delay)
        finally:
            _kill_group(proc)
        for seg in Store.peek(path):  # every stored row reads back whole and right
            assert seg.outputs == [bytes([x % 256]) * 20_000 for x in range(seg.start, seg.end)]
    assert _stored(ck), "nothing was stored before the kills"


# --- editing the function ----------------------------------------------------------


def _define(source: str, calls: Path):
    scope = {"CALLS": str(calls), "os": os}
    exec(textwrap.dedent(source), scope)
    return scope["f"]


COUNTED = """
def f(x):
    fd = os.open(CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{os.environ.get('EZ_TAG', 'a')} {x}\\n".encode())
    os.close(fd)
    return x + {inc}
"""


def test_editing_the_function_starts_over_unless_matched_by_position(tmp_path):
    calls, ck = tmp_path / "calls.txt", tmp_path / "ck"
    f1 = _define(COUNTED.replace("{inc}", "1"), calls)
    assert ezflow.map(f1, range(50), mode="thread", checkpoint=ck) == [x + 1 for x in range(50)]
    _tag("b")
    f1_again = _define(COUNTED.replace("{inc}", "1"), calls)  # same code, a new object: kept
    assert ezflow.map(f1_again, range(50), mode="thread", checkpoint=ck) == [x + 1 for x in range(50)]
    assert _calls(calls, "b") == []

    _tag("c")
    f2 = _define(COUNTED.replace("{inc}", "2"), calls)
    with pytest.warns(UserWarning, match="changed since its 50 results were stored"):
        assert ezflow.map(f2, range(50), mode="thread", checkpoint=ck) == [x + 2 for x in range(50)]
    assert sorted(_calls(calls, "c")) == list(range(50))

    _tag("d")
    f3 = _define(COUNTED.replace("{inc}", "3"), calls)
    out = ezflow.map(f3, range(50), mode="thread", checkpoint=ck, checkpoint_match="position")
    assert out == [x + 2 for x in range(50)]  # the stored results, whatever the function
    assert _calls(calls, "d") == []


def test_a_changed_global_or_item_is_computed_again(tmp_path):
    calls, ck = tmp_path / "calls.txt", tmp_path / "ck"
    src = COUNTED.replace("{inc}", "K")
    f = _define(src, calls)
    f.__globals__["K"] = 10
    ezflow.map(f, range(30), mode="thread", checkpoint=ck)
    f.__globals__["K"] = 20  # the value it reads changed: a fresh run
    with pytest.warns(UserWarning):
        assert ezflow.map(f, range(30), mode="thread", checkpoint=ck) == [x + 20 for x in range(30)]
    _tag("b")
    data = list(range(30))
    data[7] = 700  # one item changed: its segment is computed again, the rest is reused
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ezflow.map(f, data, mode="thread", checkpoint=ck, chunksize=1)
    assert out == [x + 20 for x in data]
    again = _calls(calls, "b")
    assert 700 in again and len(again) < 30


# --- Ctrl-C, errors="raise", imap, flows, start ----------------------------------------

INTERRUPTED = """
import _thread, json, os, sys, threading, time
import ezflow
CALLS, CK = sys.argv[1], sys.argv[2]
def work(x):
    time.sleep(0.01)
    fd = os.open(CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{os.environ['EZ_TAG']} {x}\\n".encode())
    os.close(fd)
    return -x
def ctrl_c():
    while not os.path.exists(CALLS) or len(open(CALLS).read().splitlines()) < 40:
        time.sleep(0.01)
    _thread.interrupt_main()
if __name__ == "__main__":
    threading.Thread(target=ctrl_c, daemon=True).start()
    try:
        ezflow.map(work, range(150), workers=2, checkpoint=CK, progress=False)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    os.environ["EZ_TAG"] = "b"   # the workers of the next call are new ones
    ezflow.shutdown()
    out = ezflow.map(work, range(150), workers=2, checkpoint=CK, progress=False)
    print(json.dumps(out))
"""


def test_ctrl_c_then_the_same_call_again(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(INTERRUPTED)
    calls, ck = tmp_path / "calls.txt", tmp_path / "ck"
    out = subprocess.run(
        [sys.executable, str(script), str(calls), str(ck)], env=_env("a"), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "interrupted" in out.stderr
    assert json.loads(out.stdout) == [-x for x in range(150)]
    first, second = _calls(calls, "a"), _calls(calls, "b")
    assert 40 <= len(first) < 150
    assert len(second) == len(set(second))  # nothing twice in the second run
    assert set(first) | set(second) == set(range(150))
    assert len(second) < 150 - 20  # most of what the first run delivered was stored


def test_errors_raise_then_the_same_call_again(tmp_path):
    calls, ck, flag = tmp_path / "calls.txt", tmp_path / "ck", tmp_path / "broken"
    scope = {"CALLS": str(calls), "FLAG": str(flag), "os": os}
    exec(
        textwrap.dedent("""
        def f(x):
            if x == 37 and os.path.exists(FLAG):
                raise ValueError("bad item")
            fd = os.open(CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, f"{os.environ.get('EZ_TAG', 'a')} {x}\\n".encode())
            os.close(fd)
            return x * 3
        """),
        scope,
    )
    f = scope["f"]
    flag.touch()
    with pytest.raises(ezflow.TaskError) as info:
        ezflow.map(f, range(100), workers=2, checkpoint=ck, chunksize=1)
    assert info.value.index == 37  # the source position, as without a checkpoint
    stored = _stored(ck)
    assert stored and 37 not in stored  # what was computed is kept (after 37 too, ordered or not)
    flag.unlink()
    _tag("b")
    assert ezflow.map(f, range(100), workers=2, checkpoint=ck) == [x * 3 for x in range(100)]
    assert sorted(_calls(calls, "b")) == sorted(set(range(100)) - stored)


def test_imap_stopped_early_then_resumed(tmp_path):
    calls, ck = tmp_path / "calls.txt", tmp_path / "ck"
    f = _define(COUNTED.replace("{inc}", "5"), calls)
    it = ezflow.imap(f, (x for x in range(200)), workers=2, checkpoint=ck)
    got = [next(it) for _ in range(60)]
    it.close()  # stopping early stores what was delivered
    assert got == [x + 5 for x in range(60)]
    stored = _stored(ck)
    assert set(range(60)) <= stored
    _tag("b")
    flow = ezflow.Flow(x for x in range(200)).map(f, workers=2)
    assert list(flow.iter(checkpoint=ck)) == [x + 5 for x in range(200)]
    assert sorted(_calls(calls, "b")) == sorted(set(range(200)) - stored)
    assert flow.stats.from_checkpoint == len(stored)


def _parse(x):
    if x % 10 == 9:
        raise ValueError(x)
    return x


def test_multi_stage_flow_resumes_with_filters_flat_maps_and_failures(tmp_path):
    ck = tmp_path / "ck"
    flow = (
        ezflow.Flow(range(300))
        .map(_parse, workers=2, errors="return")
        .filter(lambda v: isinstance(v, ezflow.Failure) or v % 3 != 0, mode="thread")
        .flat_map(lambda v: [v] if isinstance(v, ezflow.Failure) else [v, -v], workers=2)
    )
    expected = flow.collect()
    it = flow.iter(checkpoint=ck)
    first = [next(it) for _ in range(100)]
    it.close()
    assert first == expected[:100]
    assert flow.collect(checkpoint=ck) == expected
    assert 0 < flow.stats.from_checkpoint < 300
    again = flow.collect(checkpoint=ck)  # failures are not stored: only they run again
    assert again == expected
    assert flow.stats.from_checkpoint == 300 - 30
    assert flow.stats[0].items_in == 30


def _model(batch):
    return [x * 10 for x in batch]


@pytest.mark.parametrize("stream", [False, True], ids=["list", "generator"])
def test_flow_with_batches_resumes_from_its_stored_prefix(tmp_path, stream):
    ck = tmp_path / "ck"

    def flow(data=None):
        data = list(range(400)) if data is None else data
        return (
            ezflow.Flow(iter(data) if stream else data)
            .map(_parse, mode="thread", errors="return")
            .filter(lambda v: isinstance(v, ezflow.Failure) or v % 5 != 0, mode="thread")
            .batch(16, timeout=0.05)
            .map(_model, workers=2)
            .unbatch()
        )

    def same(a, b):  # a failure passes a filling batch, so where it lands depends on timing
        def values(out):
            return [v for v in out if not isinstance(v, ezflow.Failure)]

        def failed(out):
            return sorted(v.index for v in out if isinstance(v, ezflow.Failure))

        return values(a) == values(b) and failed(a) == failed(b)

    expected = flow().collect()
    it = flow().iter(checkpoint=ck, checkpoint_failures=True)
    for _ in range(150):
        next(it)
    it.close()
    stored = _stored(ck)
    assert stored and stored == set(range(len(stored)))  # a prefix
    f = flow()
    assert same(f.collect(checkpoint=ck, checkpoint_failures=True), expected)
    assert f.stats.from_checkpoint == len(stored)
    assert f.stats[0].items_in == 400 - len(stored)
    f = flow()  # without checkpoint_failures, the prefix ends at the first stored failure (item 9)
    assert same(f.collect(checkpoint=ck), expected)
    assert f.stats.from_checkpoint <= 9
    data = list(range(400))
    data[3] = 1003  # a changed item ends the reusable prefix at its segment
    f = flow(data)
    assert same(f.collect(checkpoint=ck), flow(data).collect())
    assert f.stats.from_checkpoint <= 3


def test_failures_stored_when_asked(tmp_path):
    ck = tmp_path / "ck"
    opts = dict(workers=2, errors="return", checkpoint=ck, checkpoint_failures=True)
    first = ezflow.map(_parse, range(50), **opts)
    flow = ezflow.Flow(range(50)).map(_parse, workers=2, errors="return")
    assert flow.collect(checkpoint=ck, checkpoint_failures=True) == first
    assert flow.stats.from_checkpoint == 50
    flow = ezflow.Flow(range(50)).map(_parse, workers=2, errors="skip")
    assert flow.collect(checkpoint=ck, checkpoint_failures=True) == [x for x in range(50) if x % 10 != 9]
    assert flow.stats[0].skipped == 5


def test_start_handle_with_checkpoint(tmp_path):
    ck = tmp_path / "ck"
    flow = ezflow.Flow(range(80)).map(_square, workers=2)
    assert flow.start(checkpoint=ck).wait(60) == [x * x for x in range(80)]
    handle = flow.start(checkpoint=ck)
    assert handle.wait(60) == [x * x for x in range(80)]
    assert handle.stats.from_checkpoint == 80


def _square(x):
    return x * x


def _slow_square(x):
    time.sleep(0.01)
    return x * x


def test_cancelled_handle_keeps_what_was_stored(tmp_path):
    ck = tmp_path / "ck"
    flow = ezflow.Flow(range(300)).map(_slow_square, mode="thread", workers=2)
    handle = flow.start(checkpoint=ck)
    _wait_for(lambda: len(handle.results) >= 50, "50 results")
    handle.cancel()
    kept = len(handle.results)
    assert kept < 300
    again = flow.start(checkpoint=ck)
    assert again.wait(60) == [x * x for x in range(300)]
    assert again.stats.from_checkpoint >= kept  # what the cancelled run delivered was stored
    assert again.stats[0].items_in == 300 - again.stats.from_checkpoint


# --- what is refused, and how ----------------------------------------------------------


def test_options_are_checked_at_call_time(tmp_path):
    with pytest.raises(TypeError, match="checkpoint must be a path"):
        ezflow.map(_square, [1], checkpoint=42)
    with pytest.raises(TypeError, match="only apply with a checkpoint"):
        ezflow.map(_square, [1], checkpoint_match="position")
    with pytest.raises(ValueError, match="checkpoint_match must be"):
        ezflow.map(_square, [1], checkpoint=tmp_path / "x", checkpoint_match="nope")
    with pytest.raises(TypeError, match="checkpoint_failures must be"):
        ezflow.map(_square, [1], checkpoint=tmp_path / "x", checkpoint_failures="yes")
    (tmp_path / "adir.sqlite").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        ezflow.map(_square, [1], checkpoint=tmp_path / "adir")
    (tmp_path / "afile").write_text("")
    with pytest.raises(ezflow.CheckpointError, match="cannot create the checkpoint's directory"):
        ezflow.map(_square, [1], checkpoint=tmp_path / "afile" / "run")
    with pytest.raises(ValueError, match="needs every stage ordered"):
        ezflow.Flow(range(3)).batch(2).map(len, mode="thread", ordered=False).collect(checkpoint=tmp_path / "b")
    with pytest.raises(TypeError, match="needs a source"):
        ezflow.Flow().map(_square).start(checkpoint=tmp_path / "c")


def test_damaged_or_foreign_files_give_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ezflow.CheckpointError, match=r"damaged or not an ezflow checkpoint.*delete"):
        ezflow.map(_square, range(5), mode="thread", checkpoint=tmp_path / "bad")
    ck = tmp_path / "two"
    ezflow.Flow(range(5)).map(_square, mode="thread").collect(checkpoint=ck)
    with pytest.raises(ezflow.CheckpointError, match=r"different call .*delete"):
        ezflow.Flow(range(5)).map(_square, mode="thread").filter(bool, mode="thread").collect(checkpoint=ck)


def test_unpicklable_items_need_position_matching(tmp_path):
    locks = [threading.Lock() for _ in range(5)]
    with pytest.raises(ezflow.CheckpointError, match=r"item 0 .*cannot be pickled.*checkpoint_match='position'"):
        ezflow.map(lambda lock: 1, locks, mode="thread", checkpoint=tmp_path / "a")
    out = ezflow.map(lambda lock: 1, locks, mode="thread", checkpoint=tmp_path / "b", checkpoint_match="position")
    assert out == [1] * 5


# --- no item lost or repeated, whatever the sizes -----------------------------------------

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@hypothesis.settings(max_examples=30, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(
    n=st.integers(0, 400),
    chunksize=st.one_of(st.none(), st.integers(1, 64)),
    stop=st.floats(0, 1),
    ordered=st.booleans(),
    stream=st.booleans(),
    batch=st.one_of(st.none(), st.integers(1, 40)),
)
def test_interrupted_then_resumed_loses_and_repeats_nothing(
    tmp_path_factory, n, chunksize, stop, ordered, stream, batch
):
    tmp = tmp_path_factory.mktemp("h")
    calls, ck = tmp / "calls.txt", tmp / "ck"
    f = _define(COUNTED.replace("{inc}", "0"), calls)
    os.environ["EZ_TAG"] = "a"
    data = list(range(n))
    if batch is not None:
        ordered = True  # batch stages need ordered ones under a checkpoint

    def run():
        flow = ezflow.Flow(iter(data) if stream else data)
        flow = flow.map(f, mode="thread", workers=3, chunksize=chunksize, ordered=ordered)
        if batch is not None:
            flow = flow.batch(batch).map(_model, mode="thread").unbatch()
        return flow

    it = run().iter(checkpoint=ck)
    k = int(stop * n)
    got = [next(it) for _ in range(k)]
    it.close()
    stored = _stored(ck) if resolve_path(ck).exists() else set()
    assert len(stored) >= k or not ordered or batch is not None  # ordered: everything delivered was stored
    os.environ["EZ_TAG"] = "b"  # thread workers: seen at once
    out = run().collect(checkpoint=ck)
    want = data if batch is None else [x * 10 for x in data]
    assert sorted(out) == want if not ordered else out == want
    assert sorted(_calls(calls, "b")) == sorted(set(data) - stored)
    assert got == want[:k] if ordered else set(got) <= set(want)


# --- what the function key sees ------------------------------------------------------------


def test_function_key_follows_code_and_captured_values_not_names_or_docs():
    import functools

    from ezflow._engine.fingerprint import function_key as key

    def make(c):
        def f(x):
            return x + c

        return f

    assert key(make(1)) == key(make(1)) != key(make(2))  # closure values
    assert key(functools.partial(pow, 2)) != key(functools.partial(pow, 3))
    assert key(lambda x: x + 1) == key(lambda x: x + 1) != key(lambda x: x + 2)

    def g(x):
        """One docstring."""
        return x

    first = key(g)

    def g(x):  # noqa: F811 - redefined on purpose: same code, another docstring
        """Another docstring."""
        return x

    assert key(g) == first
    scope = {}
    exec("class M:\n    def __call__(self, x):\n        return x * 2\n", scope)
    m2 = key(scope["M"])
    exec("class M:\n    def __call__(self, x):\n        return x * 3\n", scope)
    assert key(scope["M"]) != m2  # a class stage: its methods' code


def _triple(x: int) -> int:
    return 3 * x


def test_run_and_checkpoint_run_are_one_typed_runner(tmp_path):
    # Flow and Handle see a run only through the Runner protocol (mypy checks the seam); a
    # CheckpointRun offers it explicitly, with no attribute lookup passed on to its inner run.
    from ezflow._engine.checkpoint import CheckpointRun, checkpoint_options
    from ezflow._engine.run import Run, Runner

    flow = ezflow.Flow(range(10)).map(_triple, mode="thread")
    plain = flow._run(False)
    assert type(plain) is Run and isinstance(plain, Runner)
    assert plain.collect() == [3 * x for x in range(10)]
    ck = flow._run(False, checkpoint=checkpoint_options(tmp_path / "ck", None, None))
    assert type(ck) is CheckpointRun and isinstance(ck, Runner)
    assert "__getattr__" not in vars(CheckpointRun)
    assert ck.collect() == [3 * x for x in range(10)]
    assert (ck.state, ck.stop_reason, ck.snapshot().stages[0].items_out) == ("done", None, 10)
