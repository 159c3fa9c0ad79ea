"""The layout is a contract (docs/architecture.md): imports point one way, no cycles, small modules and functions,
no side effects on import. Imports inside functions count too."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "tasks", "validation")
#: tasks' subpackages from the bottom up: each may import only those before it (and itself).
LAYERS = ("core", "data", "training", "gates", "governance", "steps")
#: validation/ (the Great Expectations suite) sits between the gates and the steps.
VALIDATION_MAY_IMPORT = {"core", "data", "gates"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
DATA_TABLE_MARK = "Data tables"  # a module whose docstring starts so holds data, not logic


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules ``name`` imports anywhere in its file (top level and inside functions)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "tasks" and len(parts) > 1:
        return parts[1]
    return parts[0]


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_point_one_way():
    """flows -> steps -> governance -> gates -> training -> data -> core; validation between gates and steps."""
    bad = []
    for m, targets in graph().items():
        src = layer(m)
        for t in targets:
            dst = layer(t)
            if src == "flows" or t in ("tasks",) or dst == src:
                continue
            if dst == "flows":
                bad.append(f"{m} -> {t} (nothing imports the flows)")
            elif src == "validation":
                if dst not in VALIDATION_MAY_IMPORT:
                    bad.append(f"{m} -> {t}")
            elif dst == "validation":
                if src != "steps":
                    bad.append(f"{m} -> {t} (only the steps run the validation suite)")
            elif src in LAYERS and dst in LAYERS and LAYERS.index(dst) > LAYERS.index(src):
                bad.append(f"{m} -> {t} ({src} may not import {dst})")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_every_tasks_package_says_what_it_owns():
    for pkg in LAYERS:
        doc = ast.get_docstring(ast.parse((ROOT / "tasks" / pkg / "__init__.py").read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) == 1, f"tasks/{pkg}/__init__.py needs a one-line docstring"


def test_modules_and_functions_stay_small():
    too_long, long_functions = [], []
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        doc = ast.get_docstring(tree) or ""
        if len(text.splitlines()) > MAX_MODULE_LINES and not doc.startswith(DATA_TABLE_MARK):
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}: {n} lines")
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_importing_tasks_has_no_side_effects(tmp_path):
    """Importing every module of ``tasks`` (in a fresh interpreter) sets no environment variable and creates no
    file or folder: the entry points apply the environment defaults, not an import."""
    names = ["tasks", *sorted(m for m in modules() if m.startswith("tasks."))]
    from tasks.core.state import ENV_DEFAULTS

    ours = ["PREFECT_HOME", *ENV_DEFAULTS]
    code = ("import os, importlib, json\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            f"print(json.dumps(sorted(k for k in {ours!r} if k in os.environ)))")
    env = {k: v for k, v in os.environ.items() if k not in ours and not k.startswith("ADAPTRAIL_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", f"importing tasks changed the environment: {done.stdout}"
    assert list(tmp_path.iterdir()) == [], f"importing tasks created {list(tmp_path.iterdir())} in the working dir"
