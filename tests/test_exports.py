"""The public surface is exactly what ezflow/__init__.py lists: a change here is an API change."""

from __future__ import annotations

import subprocess
import sys

import ezflow

PUBLIC = {
    "Cancelled",
    "CheckpointError",
    "Executor",
    "FailedItem",
    "Failure",
    "Flow",
    "FlowStats",
    "FlowStopped",
    "ItemTimeout",
    "MemoryLimitExceeded",
    "Msg",
    "NUM_CPUS",
    "NUM_THREADS",
    "Q",
    "RemoteError",
    "SharedMemoryWarning",
    "SlowItem",
    "StageError",
    "StageStats",
    "TaskError",
    "WorkerDied",
    "WorkerStats",
    "__version__",
    "apply",
    "imap",
    "map",
    "run",
    "run_thread",
    "share",
    "shutdown",
}


# public, spelled ezflow.map, but kept out of __all__: a star import must not shadow the builtin
NOT_STARRED = {"map"}


def test_all_is_pinned():
    assert set(ezflow.__all__) == PUBLIC - NOT_STARRED
    for name in PUBLIC:
        assert hasattr(ezflow, name), name


def test_star_import_shadows_no_builtin():
    import builtins

    namespace: dict = {}
    exec("from ezflow import *", namespace)
    shadowed = sorted(n for n in namespace if n != "__builtins__" and hasattr(builtins, n))
    assert shadowed == [], shadowed
    exec("result = list(map(str.upper, ['a']))", namespace)  # the builtin map, not ezflow's
    assert namespace["result"] == ["A"]


def test_internals_are_private():
    public_modules = [n for n in dir(ezflow) if not n.startswith("_") and n not in PUBLIC]
    # submodules are private (_name); nothing else leaks into the namespace
    assert public_modules == [], public_modules


def test_import_is_light():
    code = "import sys, ezflow; print(sorted(m for m in ('tqdm', 'ipywidgets', 'IPython', 'dask', 'distributed', 'dill', 'numpy', 'pandas', 'pyarrow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_signatures_put_the_callable_first_and_options_keyword_only():
    import inspect

    for fn in (ezflow.map, ezflow.imap, ezflow.Flow.map, ezflow.Flow.filter, ezflow.Flow.flat_map):
        params = list(inspect.signature(fn).parameters.values())
        if params[0].name == "self":
            params = params[1:]
        assert params[0].kind is inspect.Parameter.POSITIONAL_ONLY
        if fn in (ezflow.map, ezflow.imap):  # then the iterables, as builtin map takes them
            assert params[1].kind is inspect.Parameter.VAR_POSITIONAL
        rest = params[2:] if fn in (ezflow.map, ezflow.imap) else params[1:]
        # the options: keyword-only by nature, declared once (tests/test_stage_options.py)
        assert [p.kind for p in rest] == [inspect.Parameter.VAR_KEYWORD], fn


def test_stats_records_are_frozen_values():
    got = ezflow.Flow(range(5)).map(abs, mode="thread").map(abs, mode="thread")
    got.collect(progress=False)
    stats = got.stats
    stage = stats["abs"]
    assert stage.items_in == 5 and stage == stats[0] and hash(stage) == hash(stats[0])
    assert repr(stage).startswith("StageStats(name='abs', kind='map'")
    try:
        stage.items_in = 0
    except AttributeError:
        pass
    else:  # pragma: no cover
        raise AssertionError("StageStats must be frozen")
    import pickle

    assert pickle.loads(pickle.dumps(stats)) == stats
    assert [s.name for s in got.stages] == ["abs", "abs_2"]
