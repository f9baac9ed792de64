"""The stage and run options are declared once (`_plan.stage_options`); every signature, the plan and the docs draw from it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import ezflow
from ezflow._plan import stage_options
from ezflow._plan.spec import StageSpec, make_stage
from ezflow._plan.stage_options import MapOptions, RunOptions, StageOptions, declared, options_table

DOCS = Path(__file__).resolve().parent.parent / "docs" / "map.md"

# public entry point -> the declaration its **options must be
SIGNATURES = {
    ezflow.map: MapOptions,
    ezflow.imap: MapOptions,
    ezflow.apply: MapOptions,
    ezflow.Flow.map: StageOptions,
    ezflow.Flow.filter: StageOptions,
    ezflow.Flow.flat_map: StageOptions,
    ezflow.Flow.collect: RunOptions,
    ezflow.Flow.iter: RunOptions,
    ezflow.Flow.start: RunOptions,
}


@pytest.mark.parametrize("fn", list(SIGNATURES), ids=lambda f: f.__qualname__)
def test_every_public_signature_takes_its_options_from_the_declaration(fn):
    params = list(inspect.signature(fn).parameters.values())
    options = params[-1]
    assert options.kind is inspect.Parameter.VAR_KEYWORD and options.name == "options"
    assert options.annotation == f"Unpack[{SIGNATURES[fn].__name__}]"  # what type checkers read
    # no option is also written out as a parameter of its own
    assert not {p.name for p in params} & set(declared(SIGNATURES[fn]))


def test_map_takes_a_stage_and_a_run_option_each_once():
    stage, run = declared(StageOptions), declared(RunOptions)
    assert not set(stage) & set(run)
    assert list(declared(MapOptions)) == list(stage) + list(run)


def test_each_option_has_a_type_a_default_and_a_meaning():
    for name, opt in declared(MapOptions).items():
        assert opt.annotation and opt.doc, name
    assert declared(StageOptions)["item_timeout"].annotation == "float | None"
    assert declared(StageOptions)["errors"].default == "raise"


def test_the_plan_takes_its_defaults_from_the_declaration():
    spec = make_stage("map", abs, mode="thread", workers=1, name="abs")
    fields = set(StageSpec.__annotations__)
    for name, opt in declared(StageOptions).items():
        assert name in fields, f"StageSpec has no field for option {name}"
        assert getattr(spec, name) == opt.default or name in ("mode", "workers", "name"), name
    assert ezflow.Flow([1]).map(abs, mode="thread", workers=1).stages[0] == spec


def test_the_docs_table_is_the_declaration():
    text = DOCS.read_text()
    m = re.search(r"<!-- options table: .*? -->\n(.*?)\n<!-- end of options table -->", text, re.S)
    assert m, "docs/map.md lost its options table"
    assert m.group(1) == options_table(MapOptions), "regenerate it: options_table(MapOptions)"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ezflow.map(abs, [1], worker=2), r"ezflow.map\(\) got an unexpected keyword argument 'worker'; did you mean workers="),
        (lambda: ezflow.Flow([1]).filter(bool, ordred=1), r"Flow.filter\(\) got an unexpected keyword argument 'ordred'; did you mean ordered="),
        (lambda: ezflow.Flow([1]).collect(progres=False), r"Flow.collect\(\) got an unexpected keyword argument 'progres'; did you mean progress="),
        (lambda: ezflow.Flow([1]).iter(workers=2), r"Flow.iter\(\) got an unexpected keyword argument 'workers'"),
        (lambda: ezflow.Flow([1]).start(timeout=1, checkpoint_fail=True), r"did you mean checkpoint_failures="),
        (lambda: make_stage("map", abs, timeout=1), r"Flow.map\(\) got 'timeout': the per-item limit is now item_timeout="),
    ],
)
def test_a_keyword_outside_the_declaration_names_the_right_one(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_import_ezflow_does_not_evaluate_the_declaration():
    import subprocess
    import sys

    code = "import ezflow._plan.stage_options as s; print(len(s._declared))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
    assert stage_options.declared(StageOptions)  # and it evaluates when asked
