"""The package's layers are contracts: an import pointing back up fails here, as in CI.

import-linter reads the contracts from pyproject.toml ([tool.importlinter]);
a module that reaches one of ezflow's own modules through `import_module` or
`sys.modules` hides such an import from it, so that is checked too.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ezflow"

# Lookups that are known and owned elsewhere: none left (transport in rooms
# replaced the last ones with imports and explicit hooks). Keep it that way.
KNOWN_LOOKUPS: set[tuple[str, str]] = set()


def test_layer_contracts_are_kept():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail('lint-imports is not installed: pip install import-linter (it is in the "test" extra)')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [exe, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert " 0 broken" in out, out
    assert "BROKEN" not in out, out


def _contracts() -> list[dict]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_no_cycle_anywhere_is_a_contract():
    # acyclic_siblings on the root: the modules of each package (at any depth) form no cycle,
    # and neither do the packages themselves; a TYPE_CHECKING import counts too.
    acyclic = [c for c in _contracts() if c["type"] == "acyclic_siblings"]
    assert any("ezflow" in c["ancestors"] and not c.get("ignore_imports") for c in acyclic), acyclic


def test_the_no_cycle_contract_catches_a_cycle(tmp_path):
    # The contract type as pyproject.toml writes it, on a package with the two cycles ezflow had:
    # one through a lazy import inside a function, one through a TYPE_CHECKING import.
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail('lint-imports is not installed: pip install import-linter (it is in the "test" extra)')
    pkg = tmp_path / "cyc"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "serialize.py").write_text("def f():\n    from . import pickler\n")
    (pkg / "sub" / "pickler.py").write_text("from .serialize import f\n")
    (pkg / "state.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .broker import C\n")
    (pkg / "broker.py").write_text("from .state import TYPE_CHECKING\nclass C: pass\n")
    (tmp_path / ".importlinter").write_text(
        "[importlinter]\nroot_package = cyc\n\n[importlinter:contract:1]\nname = no cycle\n"
        "type = acyclic_siblings\nancestors = cyc\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [exe, "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "BROKEN" in out, out
    assert "cyc.sub" in out and "cyc." in out, out
    assert ".state -> .broker" in out or ".broker -> .state" in out, out
    assert ".serialize -> .pickler" in out or ".pickler -> .serialize" in out, out


def _own(name: str) -> bool:
    return name == "ezflow" or name.startswith(("ezflow.", "."))


def _text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):  # f"ezflow._executors.{x}": its constant parts
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
    return None


def _is_sys_modules(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "modules"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def lookups(tree: ast.AST) -> list[str]:
    """Return each place the module reaches an ezflow module by name at run time."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name in ("import_module", "__import__"):
                target = _text(node.args[0]) if node.args else None
                relative = len(node.args) > 1 or any(k.arg == "package" for k in node.keywords)
                if relative or target is None or _own(target):
                    found.append(f"{name}({target if target is not None else '?'})")
            elif isinstance(fn, ast.Attribute) and _is_sys_modules(fn.value) and node.args:
                target = _text(node.args[0])
                if target is not None and _own(target):
                    found.append(f"sys.modules[{target!r}]")
        elif isinstance(node, ast.Subscript) and _is_sys_modules(node.value):
            target = _text(node.slice)
            if target is not None and _own(target):
                found.append(f"sys.modules[{target!r}]")
    return found


def test_no_module_reaches_its_own_package_by_name():
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for what in lookups(ast.parse(path.read_text(), filename=rel)):
            found.add((rel, what))
    unknown = found - KNOWN_LOOKUPS
    assert not unknown, (
        f"import the module normally (fix the layering if that makes a cycle), do not look it up: {sorted(unknown)}"
    )
    fixed = KNOWN_LOOKUPS - found
    assert not fixed, f"these lookups are gone: remove them from KNOWN_LOOKUPS: {sorted(fixed)}"


def test_the_lookup_check_sees_what_it_should():
    src = (
        "import sys\nfrom importlib import import_module\n"
        "a = import_module('ezflow._executors.dask')\n"
        "b = import_module(f'ezflow._executors.{x}')\n"
        "c = import_module(name, __name__)\n"
        "d = sys.modules.get('ezflow._transport.shm')\n"
        "e = sys.modules['ezflow._core']\n"
        "f = sys.modules.get('numpy')\n"  # someone else's module: fine
        "g = import_module('json')\n"
    )
    assert lookups(ast.parse(src)) == [
        "import_module(ezflow._executors.dask)",
        "import_module(ezflow._executors.)",
        "import_module(?)",
        "sys.modules['ezflow._transport.shm']",
        "sys.modules['ezflow._core']",
    ]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
