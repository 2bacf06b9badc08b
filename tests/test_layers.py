"""The package's layers only point down, and no module imports itself back through others.

    data (runtime)  <-  codec (codes <-> audio)  <-  prep (offline preparation, imported by the CLI alone)
    data            <-  model (torch + transformers, no Lightning)
    data, codec, model           <-  eval
    data, codec, model, eval     <-  stages (Lightning)
    everything above             <-  inference  <-  persona_bank  <-  cli

Every ``import`` statement counts, function-level ones included (a lazy import still makes a
cycle for the reader). Imports under ``if TYPE_CHECKING:`` are annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qinyu_lit"

# layer -> the layers it may import (itself always allowed)
ALLOWED = {
    "tiny_configs": set(),  # plain dicts of config fields: every layer may use them
    "data": {"tiny_configs"},
    "codec": {"data", "tiny_configs"},  # codes <-> audio at run time (validation audio, generate)
    "prep": {"data", "codec", "tiny_configs"},
    "model": {"data", "tiny_configs"},
    # prep/ is the offline layer: only the CLI imports it (runtime code reads codecs from codec.py)
    "eval": {"data", "codec", "model", "tiny_configs"},
    "stages": {"data", "codec", "model", "eval", "tiny_configs"},
    "inference": {"data", "codec", "model", "eval", "stages", "tiny_configs"},
    "persona_bank": {"data", "codec", "model", "eval", "stages", "inference", "tiny_configs"},
    # the evaluate command's wiring: the offline components (demo ASR, speaker encoder) from prep/
    "evaluate": {"data", "codec", "prep", "model", "eval", "stages", "inference", "tiny_configs"},
    "cli": {"data", "codec", "prep", "model", "eval", "stages", "inference", "persona_bank", "evaluate", "tiny_configs"},
    "__init__": set(),
}
NO_LIGHTNING = {"data/delay.py", "data/layout.py", "data/schema.py", "data/tokenizer.py", "model"}


def module_name(path: Path, root: Path = PACKAGE.parent) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path, root: Path = PACKAGE.parent) -> list[tuple[str, int]]:
    """Absolute names of every module ``path`` imports (relative imports resolved), with line numbers."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_lines(tree)
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # `from . import x` / `from .pkg import mod`: the names may be modules themselves
            found.append((name, node.lineno))
            found += [(f"{name}.{alias.name}", node.lineno) for alias in node.names]
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def internal_imports(path: Path) -> list[tuple[str, int]]:
    return [(name, line) for name, line in imports_of(path) if name in MODULES and name != module_name(path)]


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_layers_only_point_down():
    wrong = []
    for name, path in MODULES.items():
        mine = layer(name)
        for target, line in internal_imports(path):
            theirs = layer(target)
            if theirs != mine and theirs not in ALLOWED[mine]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({mine}) imports {target} ({theirs})")
    assert not wrong, "upward imports:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph = {name: {t for t, _ in internal_imports(path)} for name, path in MODULES.items()}
    # a package's __init__ re-exports its modules; an edge into a package means its __init__
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_model_and_data_contract_do_not_import_lightning():
    wrong = []
    for rel in NO_LIGHTNING:
        paths = [PACKAGE / rel] if rel.endswith(".py") else sorted((PACKAGE / rel).rglob("*.py"))
        for path in paths:
            for name, line in imports_of(path):
                if name.split(".")[0] in ("lightning", "pytorch_lightning"):
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_function_level_and_type_checking_imports(tmp_path):
    """The walker itself, on a fake package: a lazy upward import counts, a TYPE_CHECKING one does not."""
    bad = tmp_path / "qinyu_lit" / "model"
    bad.mkdir(parents=True)
    f = bad / "x.py"
    f.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .qinyu import QinYuModel\n"
        "def f():\n    from ..stages.base import QinYuStage\n    return QinYuStage\n"
    )
    names = {name for name, _ in imports_of(f, root=tmp_path)}
    assert "qinyu_lit.stages.base" in names and "qinyu_lit.stages.base.QinYuStage" in names
    assert "qinyu_lit.model.qinyu" not in names
    assert layer("qinyu_lit.stages.base") not in ALLOWED[layer("qinyu_lit.model.x")]


MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def test_modules_and_functions_stay_small():
    """A student reads the package in short files: no module over ~400 lines, no function body over ~60."""
    big = []
    for name, path in MODULES.items():
        source = path.read_text()
        if len(source.splitlines()) > MAX_FILE_LINES:
            big.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                # from the first statement after the docstring: a command's docstring is its --help manual
                body = node.body[1:] if ast.get_docstring(node) is not None and len(node.body) > 1 else node.body
                length = node.end_lineno - body[0].lineno + 1
                if length > MAX_FUNCTION_LINES:
                    big.append(f"{name}.{node.name}: {length} lines")
    assert not big, "\n".join(big)


def test_the_readme_tour_names_every_module():
    """README's "What is where" lists every module of the package (a new file is a new line there)."""
    readme = (PACKAGE.parent / "README.md").read_text()
    tour = readme.split("## What is where", 1)[1].split("```", 2)[1]
    missing = [p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" and p.name not in tour]
    assert not missing, f"README's layout tour does not name {missing}"
