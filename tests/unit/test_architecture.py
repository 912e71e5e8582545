"""The house's rules, checked on the code itself: the import contract in pyproject.toml (import-linter), no import
circle (type-only imports counted), no torch behind the store, `rsr sql` or `rsr status`, no function over 60
lines, and installed package names that cannot collide with another project's."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rsr", "rsr_tasks", "rsr_flows", "rsr_deployments")


def test_the_import_contract_holds() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_no_import_circle() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)  # TYPE_CHECKING imports included
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for nxt in sorted(graph.find_modules_directly_imported_by(module)):
            if seen.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[module] = 2

    for module in sorted(graph.modules):
        if module not in seen:
            visit(module, [module])


# A state folder with a database (made without torch), then the command in the same process.
_CLI = (
    "import os; from pathlib import Path; from rsr.store.writer import Store; "
    "Store.open(Path(os.environ['RSR_HOME']) / 'rsr.duckdb').close(); "
    "from typer.testing import CliRunner; from rsr.cli import app"
)

# ... and a one-record teacher file beside it: the CPU stages (ingest, dedup, verify under Prefect) need no torch
_TEACHER = (
    "f = Path(os.environ['RSR_HOME']).parent / 't.jsonl'; "
    'f.write_text(\'{"problem": "1+1?", "response": "The answer is 2.", "answer": "2"}\')'
)


@pytest.mark.parametrize(
    "code",
    [
        "import rsr.store.writer, rsr.store.queries, rsr.store.sql, rsr.metric, rsr.curate.ingest",
        f"{_CLI}; out = CliRunner().invoke(app, ['status']); assert out.exit_code == 0, out.output",
        f"{_CLI}; out = CliRunner().invoke(app, ['sql', 'SELECT 1']); assert out.exit_code == 0, out.output",
        f"{_CLI}; {_TEACHER}; out = CliRunner().invoke(app, ['add-teacher', 'm', str(f), '--no-score']); "
        "assert out.exit_code == 0, out.output",
    ],
    ids=["import rsr.store", "rsr status", "rsr sql", "rsr add-teacher --no-score"],
)
def test_no_torch_where_none_is_needed(code: str, tmp_path: Path) -> None:
    check = f"{code}\nimport sys\nassert 'torch' not in sys.modules, 'torch was loaded'"
    env = {"RSR_HOME": str(tmp_path / "state"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_no_function_over_60_lines() -> None:
    long = []
    for folder in ("rsr", "tasks", "flows", "deployments", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long, long


def test_installed_top_level_names_cannot_collide() -> None:
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    top = {p.split(".")[0] for p in setup["packages"]}
    assert top == set(PACKAGES), top
    assert setup["package-dir"] == {"rsr_tasks": "tasks", "rsr_flows": "flows", "rsr_deployments": "deployments"}
