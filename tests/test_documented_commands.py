"""Every ``qinyu-lit`` command the documentation shows parses as written.

Commands are collected from the fenced ``bash`` blocks and inline code of README.md, docs/*.md and
the notebooks' markdown, and from the ``# Needs:`` / ``# Launch:`` header lines of the recipes. Each runs as a dry run:
LightningCLI commands (fit/validate/test/predict) with ``--print_config`` (recipe files, links and
every override are resolved; no data is read, no model is built), the other commands through their
real jsonargparse parser (argument names, positionals and types checked; nothing runs).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from jsonargparse import CLI, capture_parser

from qinyu_lit.cli import COMMANDS, LIGHTNING_COMMANDS, _entry, command_args, main

ROOT = Path(__file__).resolve().parents[1]
# a command name, then up to what ends a command inside prose: a parenthesis, a chain, a comment,
# the end of an inline code span ("not a qinyu-lit dependency" is prose, not a command)
_NAMES = "|".join(map(re.escape, COMMANDS))
_COMMAND = re.compile(rf"qinyu-lit (?:{_NAMES})(?![\w-])[^()&;`#\n]*")


def _markdown_commands(path: Path) -> list[str]:
    if path.suffix == ".ipynb":  # a notebook's markdown cells
        cells = json.loads(path.read_text())["cells"]
        text = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    else:
        text = path.read_text()
    found = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            found += _COMMAND.findall(line.split(" #")[0])
    for span in re.findall(r"`(qinyu-lit [^`]+)`", text):
        if "|" not in span:  # `qinyu-lit data build|inspect|validate` names commands, it is not one
            found += _COMMAND.findall(span)
    return found


def _recipe_commands(path: Path) -> list[str]:
    found = []
    for line in path.read_text().splitlines():
        if line.startswith(("# Launch:", "# Needs:")):
            found += _COMMAND.findall(line.replace(", then ", " ; "))
    return found


def documented() -> list[tuple[str, str]]:
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "notebooks").glob("*.ipynb"))]
    pairs = [(str(p.relative_to(ROOT)), c) for p in sources for c in _markdown_commands(p)]
    pairs += [(str(p.relative_to(ROOT)), c) for p in sorted((ROOT / "recipes").rglob("*.yaml")) for c in _recipe_commands(p)]
    out = []
    for where, command in pairs:
        words = shlex.split(command.strip().rstrip("."))
        while words and words[-1] in ("...", "…"):  # "and so on" in prose, not an argument
            words.pop()
        if any(re.search(r"<\w+>", w) for w in words):
            continue  # a template (`recipes/<stage>.yaml`), not a command
        out.append((where, " ".join(shlex.quote(w) for w in words)))
    return sorted(set(out))


COMMANDS_SHOWN = documented()


def test_fenced_blocks_name_only_real_commands():
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for path in sources:
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", path.read_text(), flags=re.S):
            for name in re.findall(r"qinyu-lit ([\w-]+)", block.split(" #")[0]):
                assert name in COMMANDS or name.startswith("-"), f"{path.name}: `qinyu-lit {name}` is no command"


def test_the_docs_show_every_kind_of_command():
    shown = {shlex.split(c)[1] for _, c in COMMANDS_SHOWN if len(shlex.split(c)) > 1}
    assert {"fit", "demo-data", "data", "generate", "export", "demo-persona", "persona-data", "persona-reply"} <= shown


@pytest.mark.parametrize(("where", "command"), COMMANDS_SHOWN, ids=[f"{w}: {c}" for w, c in COMMANDS_SHOWN])
def test_documented_command_parses(where, command, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the docs' paths are relative to the repository root
    args = shlex.split(command)[1:]
    name = args[0]
    if len(args) == 1 or (name == "data" and len(args) == 2):  # a command named in prose: its --help
        with pytest.raises(SystemExit) as done:
            main([*args, "--help"])
        assert done.value.code in (0, None)
        return
    assert name in COMMANDS, f"{where}: `{command}`: no command {name!r}"
    if name in LIGHTNING_COMMANDS:
        with pytest.raises(SystemExit) as done:
            main([*args, "--print_config"])
        assert done.value.code in (0, None), f"{where}: `{command}` failed: {capsys.readouterr().err[-2000:]}"
        assert "class_path:" in capsys.readouterr().out
        return
    rest = command_args(name, args[1:])
    parser = capture_parser(lambda: CLI(_entry(name)[0], args=rest, prog=f"qinyu-lit {name}"))
    try:
        parser.parse_args(rest)
    except SystemExit as e:
        pytest.fail(f"{where}: `{command}` does not parse: {capsys.readouterr().err[-2000:]} ({e})")
