"""Every runner command line the README, docs/ and run_all.sh's header quote is accepted by the
runner's checks (arguments, run name, destination, parameters), without running a notebook."""

import re
import shlex

import pytest

from histodistill import paths, run_record, runner

ROOT = paths.project_root()
RUNNER = re.compile(r"(?:\./run_all\.sh|python -m histodistill\.runner)(?=\s|$)")


def quoted_commands() -> list[tuple[str, str]]:
    """(where, command) for each runner command: a line of a code block or run_all.sh's header,
    or an inline code span, that starts with ./run_all.sh or python -m histodistill.runner."""
    found = []
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "run_all.sh",
                 ROOT / "histodistill" / "runner.py"]
    for document in documents:
        for number, line in enumerate(document.read_text().splitlines(), start=1):
            candidates = re.findall(r"`([^`]+)`", line) + [line.lstrip("#").strip()]
            for text in candidates:
                if RUNNER.match(text.strip()):
                    found.append((f"{document.relative_to(ROOT)}:{number}", text.strip()))
    return sorted(set(found))


COMMANDS = quoted_commands()


def test_the_docs_quote_runner_commands():
    quoted = {where.split(":")[0] for where, _ in COMMANDS}
    assert {"README.md", "run_all.sh", "docs/paper_profile.md", "docs/data.md"} <= quoted
    assert any("--distill" in command for _, command in COMMANDS)
    assert any("-p processes" in command for _, command in COMMANDS)


@pytest.mark.parametrize("where,command", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_every_quoted_command_passes_the_runner_checks(where, command, tmp_path, monkeypatch):
    # As on a fresh clone: the committed runs (for --compare-to), no earlier run recorded, a
    # home folder holding the images it names. Checking writes nothing.
    monkeypatch.setenv("HISTODISTILL_OUTPUT_ROOT", str(ROOT))
    monkeypatch.setattr(run_record, "recorded_profile", lambda run_name: None)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("patches", "my_images"):
        (tmp_path / name).mkdir()
    argv = shlex.split(command, comments=True)
    argv = argv[1:] if argv[0] == "./run_all.sh" else argv[3:]
    try:
        runner.prepare(argv)
    except SystemExit as refused:
        pytest.fail(f"{where}: `{command}` is refused: {refused}")
