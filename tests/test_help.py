"""Every stage script and every `python -m leod` command explains itself in plain text,
with at least one example command line."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from leod.plumbing.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
STAGES = sorted((ROOT / "stages").glob("*.py"))
# reStructuredText/Sphinx markup that a terminal shows literally
_MARKUP = re.compile(r"``|:(mod|func|class|meth|attr|data|exc|ref|obj):`")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices)


def _check(text: str, example: str) -> None:
    assert not _MARKUP.search(text), f"markup in help: {_MARKUP.search(text).group(0)!r}"
    assert re.search(r"^Examples?", text, re.M), "no 'Example' section"
    assert re.search(rf"^\s+{re.escape(example)}\b", text, re.M), f"no example line running {example!r}"
    listing = re.split(r"(?m)^(?:positional arguments|options|optional arguments):$", text, maxsplit=1)[-1]
    lines = listing.splitlines() + [""]
    for line, after in zip(lines, lines[1:], strict=False):  # every option says what it is for
        if re.fullmatch(r"\s+-{1,2}[\w-]+( [A-Z_]+| \{[^}]*\})?(, -{1,2}[\w-]+( [A-Z_]+)?)?", line):
            indent = len(line) - len(line.lstrip())
            wrapped = len(after) - len(after.lstrip()) > indent + 4 and not after.lstrip().startswith("-")
            assert wrapped, f"option without help: {line.strip()}"


def test_stages_are_all_checked() -> None:
    assert {p.stem for p in STAGES} >= {"synthesize", "preprocess", "subsample", "train", "evaluate"}


@pytest.mark.parametrize("script", STAGES, ids=[p.stem for p in STAGES])
def test_stage_help(script: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr
    _check(done.stdout, f"python stages/{script.name}")


def test_main_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    _check(text, "python -m leod")
    for name in _subcommands():  # the overview names every command
        assert re.search(rf"^  {re.escape(name)}\s", text, re.M), f"{name} missing from the overview"


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_command_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    _check(capsys.readouterr().out, f"python -m leod {command}")
