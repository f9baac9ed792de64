"""README.md and the site's pages tell the truth: their examples run as pasted, their signatures are the code's.

    README.md, docs/*.md --pytest-examples' find_examples--> every ```python block
        - a block whose first line is `# fragment` is not run (a sketch); nothing else is skipped
        - every other block runs alone in a fresh interpreter, as pasted into a notebook
          cell or the Python prompt (`__main__` without a file), and must exit cleanly
        - a block fenced ```{.python .notebook}``` holds a top-level `await`: it runs inside a
          running event loop, as a Jupyter cell does
    ```text blocks --ast--> the signatures shown for ezflow.map / imap and Flow's
        methods, compared with inspect.signature: names, order, kinds and defaults

Each block runs with its page's line numbers, so a failure points at PAGE.md:LINE.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_examples import CodeExample, find_examples

import ezflow
from ezflow._plan import stage_options
from ezflow._plan.stage_options import declared

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = list(find_examples(*PAGES))

# Runs one block as a notebook cell or a pasted script would: in __main__, which has no
# file (so spawn and forkserver children do not re-import it), with the README's line
# numbers; "notebook" blocks inside a running event loop (top-level await allowed).
RUNNER = r"""
import ast, asyncio, sys
path, first_line, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
source = "\n" * (first_line - 1) + sys.stdin.read()
namespace = vars(sys.modules["__main__"])
if kind == "notebook":
    code = compile(source, path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    async def cell():
        result = eval(code, namespace)
        if result is not None:
            await result
    asyncio.run(cell())
else:
    exec(compile(source, path, "exec"), namespace)
"""


def _run(source: str, first_line: int, kind: str, cwd: Path, page: Path = README) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", RUNNER, str(page), str(first_line), kind],
        input=source,
        capture_output=True,
        text=True,
        timeout=80,
        cwd=cwd,  # whatever a block writes stays out of the repo
    )


def _is_fragment(ex: CodeExample) -> bool:
    return ex.source.lstrip().startswith("# fragment")


def _kind(ex: CodeExample) -> str:
    return "notebook" if re.search(r"\bnotebook\b", ex.prefix) else "script"


def _where(ex: CodeExample) -> str:
    return f"{ex.path.relative_to(ROOT)}:{ex.start_line + 1}"


RUNNABLE = [ex for ex in EXAMPLES if not _is_fragment(ex)]


def test_readme_has_examples_and_says_what_is_not_run():
    assert len([ex for ex in RUNNABLE if ex.path == README]) >= 2, [str(ex) for ex in EXAMPLES]
    assert len(RUNNABLE) >= 12, [str(ex) for ex in EXAMPLES]
    for ex in EXAMPLES:
        if _is_fragment(ex):
            # a fragment says why it cannot run
            first = ex.source.lstrip().splitlines()[0]
            assert len(first) > len("# fragment") + 5, f"{ex}: say why it is a fragment"
        if "await " in ex.source and _kind(ex) != "notebook" and not _is_fragment(ex):
            pytest.fail(f"{ex}: a top-level await needs ```{{.python .notebook}} (or # fragment)")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("ex", RUNNABLE, ids=[f"{ex.path.stem}:{ex.start_line}" for ex in RUNNABLE])
def test_readme_example_runs_as_pasted(ex: CodeExample, tmp_path: Path):
    first_line = ex.start_line + 1  # find_examples gives the fence's line; the code starts below it
    done = _run(ex.source, first_line, _kind(ex), tmp_path, ex.path)
    assert done.returncode == 0, f"{_where(ex)} failed:\n{done.stdout}\n{done.stderr}"
    stderr = _DASK_HEARTBEAT_AT_CLOSE.sub("", done.stderr)
    assert "Traceback (most recent call last)" not in stderr, f"{_where(ex)}:\n{done.stderr}"


# distributed's own log when a worker's heartbeat is in flight while `cluster.close()` stops the
# scheduler (a race inside LocalCluster's shutdown, after the example's work is done): not ours
_DASK_HEARTBEAT_AT_CLOSE = re.compile(
    r"^.*distributed\.worker - ERROR - Failed to communicate with scheduler during heartbeat\.\n"
    r"(?:.*\n)*?.*CommClosedError: in <TCP \(closed\) ConnectionPool\.heartbeat_worker.*(?:\n|$)",
    re.MULTILINE,
)


def test_a_failing_block_points_at_its_readme_line(tmp_path: Path):
    ex = next(ex for ex in RUNNABLE if _kind(ex) == "script" and ex.path == README)
    lines = README.read_text().splitlines()
    assert lines[ex.start_line].strip() == ex.source.splitlines()[0].strip()  # the code's first line
    done = _run("x = 1\nraise ValueError('here')\n", ex.start_line + 1, "script", tmp_path)
    assert done.returncode != 0
    assert f'README.md", line {ex.start_line + 2}' in done.stderr, done.stderr
    done = _run("import asyncio\nawait asyncio.sleep(0)\nprint('awaited')\n", 1, "notebook", tmp_path)
    assert done.returncode == 0 and done.stdout == "awaited\n", done.stderr


# -- signatures --------------------------------------------------------------


def _all_text() -> str:
    return "\n".join(page.read_text() for page in PAGES)


# the pages that show the signatures of ezflow.map / imap and Flow's methods
SIGNATURE_PAGES = [README, ROOT / "docs" / "map.md", ROOT / "docs" / "flow.md"]


def _text_blocks() -> list[str]:
    text = "\n".join(page.read_text() for page in SIGNATURE_PAGES)
    return re.findall(r"^ *```text\n(.*?)^ *```", text, flags=re.M | re.S)


def _calls(block: str) -> list[tuple[str, str, str]]:
    """(owner, name, argument text) of every `ezflow.f(...)` / `flow.f(...)` shown in a block."""
    found = []
    for m in re.finditer(r"\b(ezflow|flow)\.(\w+)\(", block):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(block[i], 0)
            i += 1
        found.append((m.group(1), m.group(2), block[m.end() : i - 1]))
    return found


def _shown(args: str) -> list[tuple[str, inspect._ParameterKind, object]]:
    """Parameters as the README writes them: (name, kind, default or inspect.Parameter.empty)."""
    fn = ast.parse(f"def shown({args}): pass").body[0].args
    out = []
    positional = [(a, inspect.Parameter.POSITIONAL_ONLY) for a in fn.posonlyargs]
    positional += [(a, inspect.Parameter.POSITIONAL_OR_KEYWORD) for a in fn.args]
    defaults = [inspect.Parameter.empty] * (len(positional) - len(fn.defaults)) + list(fn.defaults)
    for (a, kind), d in zip(positional, defaults):
        out.append((a.arg, kind, d))
    if fn.vararg is not None:
        out.append((fn.vararg.arg, inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.empty))
    for a, d in zip(fn.kwonlyargs, fn.kw_defaults):
        out.append((a.arg, inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.empty if d is None else d))
    if fn.kwarg is not None:
        out.append((fn.kwarg.arg, inspect.Parameter.VAR_KEYWORD, inspect.Parameter.empty))
    return [
        (n, k, d if d is inspect.Parameter.empty else eval(compile(ast.Expression(d), "README", "eval"), {}))
        for n, k, d in out
    ]


def _real(fn) -> list[tuple[str, inspect._ParameterKind, object]]:
    """The parameters a caller may pass: ``**options: Unpack[X]`` is X's declared options, in order."""
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    out = [(p.name, p.kind, p.default) for p in params]
    if params and params[-1].kind == inspect.Parameter.VAR_KEYWORD:
        out.pop()
        for name, opt in declared(_unpacked(params[-1])).items():
            out.append((name, inspect.Parameter.KEYWORD_ONLY, opt.default))
    return out


def _unpacked(param: inspect.Parameter) -> type:
    m = re.fullmatch(r"Unpack\[(\w+)\]", str(param.annotation))
    assert m, f"**{param.name} must be annotated Unpack[<a declaration in _plan.stage_options>]"
    return getattr(stage_options, m.group(1))


def _stage_options() -> set[str]:
    text = _all_text()
    para = text[text.index("Stage options (on `map`, `filter`, `flat_map`):") :].split("\n\n")[0]
    para = re.sub(r"\([^)]*\)", "", para.split(":", 1)[1])  # drop the explanations in brackets
    return set(re.findall(r"`(\w+)`", para))


def _target(owner: str, name: str):
    if owner == "ezflow":
        return ezflow.Flow.__init__ if name == "Flow" else getattr(ezflow, name)
    return getattr(ezflow.Flow, name)


def test_stage_options_listed_are_the_codes():
    real = {n for n, k, _ in _real(ezflow.Flow.map) if k == inspect.Parameter.KEYWORD_ONLY}
    assert _stage_options() == real == set(declared(stage_options.StageOptions))
    for method in (ezflow.Flow.filter, ezflow.Flow.flat_map):
        assert {n for n, k, _ in _real(method) if k == inspect.Parameter.KEYWORD_ONLY} == real


def test_readme_signatures_match_the_code():
    calls = [c for block in _text_blocks() for c in _calls(block)]
    checked = {f"{owner}.{name}" for owner, name, _ in calls}
    # the ones a reader looks up first must be there
    assert checked >= {
        "ezflow.map", "ezflow.imap", "ezflow.Flow", "flow.map", "flow.filter", "flow.flat_map",
        "flow.batch", "flow.unbatch", "flow.collect", "flow.iter", "flow.start",
    }, checked
    for owner, name, args in calls:
        where = f"README: {owner}.{name}({' '.join(args.split())[:60]}...)"
        shown, real = _shown(args), _real(_target(owner, name))
        if shown and shown[-1][1] == inspect.Parameter.VAR_KEYWORD:
            rest = shown.pop()[0]
            if rest == "same":  # imap: the same options as map
                assert real == _real(ezflow.map), where
            else:
                assert rest == "stage_options", where
                kw = {n for n, k, _ in real if k == inspect.Parameter.KEYWORD_ONLY}
                assert kw == _stage_options(), where
            real = [p for p in real if p[1] != inspect.Parameter.KEYWORD_ONLY]
        assert [(n, k) for n, k, _ in shown] == [(n, k) for n, k, _ in real], where
        for (n, _, d), (_, _, want) in zip(shown, real):
            assert d == want, f"{where}: {n}={d!r} in the README, {want!r} in the code"
