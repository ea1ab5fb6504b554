"""Bad input: every malformed scenario file and every bad command-line argument exits with code 2
and one line naming the file (for files), the field or option, and what was expected — never a
traceback.

Each file in tests/bad_scenarios/ states what its error must name in its first lines:
``# expect: <field path>`` (``(file)`` when the whole file is wrong; ``line`` for a YAML syntax
error, whose location is a line and column), optionally ``# message: <fragment>`` and, when the
mistake sits in another file the scenario names (a preset), ``# file: <that file>``.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import scenario_dict
from typer.testing import CliRunner

BAD = Path(__file__).parent / "bad_scenarios"
FILES = sorted(BAD.glob("*.yaml"))


def expectations(path: Path) -> dict[str, str]:
    head = path.read_bytes().decode("utf-8", errors="replace").splitlines()[:3]
    return dict(m.groups() for m in (re.match(r"# (expect|message|file): (.*)", line) for line in head) if m)


def invoke(*args: str):
    from clsim.cli import app

    return CliRunner().invoke(app, list(args))


def error_line(result) -> str:
    """The run must end with exit code 2 and exactly one ``error:`` line, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_there_are_at_least_25_malformed_scenarios():
    assert len(FILES) >= 25


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_malformed_scenario_is_one_line_naming_file_and_field(path: Path):
    meta = expectations(path)
    expect, message = meta["expect"], meta.get("message")
    line = error_line(invoke("validate", str(path)))
    assert str(path.parent / meta["file"] if "file" in meta else path) in line  # the file at fault
    if expect == "line":  # a YAML syntax error points at a line and column
        assert re.search(r": line \d+, column \d+: ", line), line
    elif expect != "(file)":
        assert f": {expect}: " in line, line  # the field path, as its own part of the message
    if message:
        assert message.lower() in line.lower(), line


def test_run_rejects_what_validate_rejects(tmp_path):
    path = BAD / "unknown_strategy.yaml"
    result = invoke("run", str(path), "--output", str(tmp_path))
    assert "strategies[1].preset" in error_line(result)
    assert list(tmp_path.iterdir()) == []  # nothing was started or written


# --------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "good.yaml"
    path.write_text(yaml.safe_dump(scenario_dict()))
    return path


@pytest.mark.parametrize("args, names", [
    (["run", "{good}", "--seed", "-1"], "--seed"),
    (["run", "{good}", "--seed", "abc"], "--seed"),
    (["run", "{good}", "--max-restarts", "-2"], "--max-restarts"),
    (["run", "{good}", "--device", "tpu"], "--device"),
    (["run", "{good}", "--strategies", "naive,bogus"], "--strategies"),
    (["run", "{good}", "--colour", "blue"], "--colour"),
    (["run", "{good}", "--run-id", "a/b"], "--run-id"),
    (["run", "{good}", "--output", "{file}"], "--output"),
    (["run"], "SCENARIO.yaml"),
    (["run", "{missing}"], "{missing}"),
    (["run", "{good}", "--resume", "{tmp}"], "--resume"),
    (["run", "--resume", "{tmp}/nope"], "--resume"),
    (["run", "--resume", "{tmp}"], "--resume"),
    (["run", "--resume", "{tmp}", "--seed", "3"], "--seed"),
    (["validate"], "SCENARIO.yaml"),
    (["list", "--root", "{tmp}/nope"], "--root"),
    (["frobnicate"], "frobnicate"),
], ids=["seed-negative", "seed-not-int", "restarts-negative", "device", "strategies", "unknown-option", "run-id-path",
        "output-is-file", "no-scenario", "missing-scenario", "scenario-and-resume", "resume-missing",
        "resume-not-a-run", "resume-with-seed", "validate-no-file", "list-root", "unknown-command"])
def test_bad_command_line_is_one_line_exit_2(args, names, good, tmp_path):
    (tmp_path / "a_file").write_text("x")
    fill = {"good": str(good), "tmp": str(tmp_path), "file": str(tmp_path / "a_file"),
            "missing": str(tmp_path / "missing.yaml")}
    line = error_line(invoke(*(a.format(**fill) for a in args)))
    assert names.format(**fill) in line, line


def test_existing_run_folder_is_not_overwritten(good, tmp_path):
    run_dir = tmp_path / "unit" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.md").write_text("an earlier run")
    line = error_line(invoke("run", str(good), "--output", str(tmp_path), "--run-id", "r1"))
    assert "--run-id" in line and "--resume" in line
    assert (run_dir / "summary.md").read_text() == "an earlier run"


def test_help_still_works():
    from clsim.cli import app

    result = CliRunner().invoke(app, ["run", "--help"])
    assert result.exit_code == 0 and "--resume" in result.output
