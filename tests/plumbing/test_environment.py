"""environment.yml, pyproject.toml, scripts/setup.sh, README and CI must agree."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def normalise(spec: str) -> tuple:
    req = Requirement(spec)
    return (req.name.lower().replace("_", "-"), str(req.specifier), str(req.marker or ""))


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_environment_yml_matches_pyproject():
    project = pyproject()
    wanted = {normalise(s) for s in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {normalise(s) for s in extra}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {normalise(s) for s in pip if not s.startswith("-e")}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"
    assert "-e ." in pip  # conda users get the project itself too
    assert f"python{project['requires-python']}" in conda


def test_medmnist_is_not_a_plain_dependency():
    """A plain dependency would pull torchvision, which breaks diffusers on CPU-only boxes."""
    names = {normalise(s)[0] for s in pyproject()["dependencies"]}
    assert "medmnist" not in names and "torchvision" not in names


def test_setup_installs_the_pathmnist_extra_without_dependencies():
    extra = pyproject()["optional-dependencies"]["pathmnist"]
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    spec = re.search(r'_hd_medmnist="([^"]+)"', setup).group(1)
    assert [spec] == extra
    assert '--no-deps "$_hd_medmnist"' in setup
    torch_first = setup.index('_hd_pip "$_hd_torch"')
    assert torch_first < setup.index('_hd_pip -e "$_hd_root')


def test_ci_calls_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"```bash\n(\./scripts/test\.sh)\n```", readme).group(1)
    ci_lines = [l for l in (ROOT / ".ci" / "run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    assert ci_lines == [command]


def test_no_module_imports_torchvision():
    for path in (ROOT / "histodistill").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "torchvision" for n in names), path


def test_sourcing_setup_leaves_the_callers_shell_alone(tmp_path):
    """`source scripts/setup.sh` in a user's shell: its strict options stay in its own child
    process, and a failure returns a status instead of closing the caller's terminal."""
    script = (f'source "{ROOT}/scripts/setup.sh"; echo "ok $? $-"; set -o | grep -E "errexit|nounset|pipefail"; '
              f'PYTHON=/nonexistent HISTODISTILL_VENV="{tmp_path}/venv" source "{ROOT}/scripts/setup.sh"; '
              f'echo "failed $?, still here"')
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=600)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ok 0") and "e" not in lines[0].split()[2] and "u" not in lines[0].split()[2]
    assert all(line.split()[-1] == "off" for line in lines[1:4])
    assert lines[-1] == "failed 1, still here" and "needs Python >= 3.10" in out.stderr
    assert not (tmp_path / "venv").exists()
