"""The notebook runner and the notebooks' shape."""

import ast
import json
import os
import subprocess
import sys
import textwrap

import pytest

from histodistill import notebook_runs, runner


def test_every_notebook_starts_with_a_commented_parameters_cell():
    sources = notebook_runs.notebook_sources()
    assert sources and sources[0].name.startswith("01_")
    for source in sources:
        nb = notebook_runs.to_notebook(source)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), source.name
        lines = [l for l in code[0].source.splitlines() if l.strip()]
        assert lines[0].startswith("profile = "), source.name
        for line in lines:  # plain literals, each with a comment, one '=' (papermill parses it)
            target, _, rest = line.partition("=")
            value, _, comment = rest.partition("#")
            ast.literal_eval(value.strip())
            assert comment.strip(), f"{source.name}: no comment on {line!r}"
            assert line.count("=") == 1, f"{source.name}: papermill cannot parse {line!r}"


def test_parse_value():
    assert runner.parse_value("64") == 64
    assert runner.parse_value("0.5") == 0.5
    assert runner.parse_value("None") is None
    assert runner.parse_value("npz") == "npz"
    assert runner.parse_value("'a b'") == "a b"


def test_unknown_override_fails_before_running():
    with pytest.raises(SystemExit, match="image_sise"):
        runner.plan("smoke", {"image_sise": 64}, None)


def test_plan_passes_only_declared_parameters():
    items = runner.plan("smoke", {"image_size": 32}, "mine")
    source, nb, params = items[0]
    assert params["profile"] == "smoke" and params["run_name"] == "mine" and params["image_size"] == 32


def write_notebook(folder, name, body):
    text = textwrap.dedent(
        """\
        # %% tags=["parameters"]
        profile = "demo"  # profile

        # %%
        """
    ) + textwrap.dedent(body)
    (folder / name).write_text(text)


def test_runner_stops_at_the_first_failure_and_names_it(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    marker = tmp_path / "ran_03"
    write_notebook(folder, "01_ok.py", "x = 1\n")
    write_notebook(folder, "02_fails.py", "raise ValueError('boom: the data is missing')\n")
    write_notebook(folder, "03_never.py", f"open({str(marker)!r}, 'w').write('ran')\n")
    result = subprocess.run(
        [sys.executable, "-m", "histodistill.runner", "--profile", "smoke", "--notebooks", str(folder)],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )
    assert result.returncode == 1
    assert "FAILED 02_fails.py" in result.stderr
    assert "ValueError: boom: the data is missing" in result.stderr
    # The block names the code cell as Jupyter numbers it, and papermill's chatter is gone.
    assert "in code cell [" in result.stderr and "raise ValueError('boom" in result.stderr
    assert "Executing Cell" not in result.stderr and "Input Notebook" not in result.stderr
    assert "01_ok done" in result.stdout
    assert not marker.exists()


def test_run_times_keep_the_notebooks_not_run_again():
    import pandas as pd

    path = notebook_runs.write_times([("01_data", 8.04), ("02_ldm", 500.0)], "demo", "timing")
    notebook_runs.write_times([("02_ldm", 7.5), ("03_pool", 20.0)], "demo", "timing")  # --only 02 03
    table = pd.read_csv(path)
    assert table["notebook"].tolist() == ["01_data", "02_ldm", "03_pool", "total"]
    assert table["seconds"].tolist() == [8.0, 7.5, 20.0, 35.5]
    assert table["finished"].notna().all()
    notebook_runs.write_times([("01_data", 3.0)], "smoke", "timing")  # another profile: a fresh table
    assert pd.read_csv(path)["notebook"].tolist() == ["01_data", "total"]



@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", ".hidden", "x..y", "with space", "/abs"])
def test_run_names_are_plain_folder_names(name, runs_nothing):
    from histodistill import runner

    with pytest.raises(SystemExit, match="not a plain folder name"):
        runner.main(["--profile", "smoke", "--only", "01", "--run-name", name])
    with pytest.raises(SystemExit, match="not a plain folder name"):
        runner.main(["--profile", "smoke", "--only", "01", "-p", "run_name", name])
    assert runs_nothing == []


def test_a_changed_profile_needs_its_own_run_name(runs_nothing, output_root):
    from histodistill import runner

    with pytest.raises(SystemExit, match=r"-p image_size changes the demo profile.*committed in the repository"):
        runner.main(["--only", "01", "-p", "image_size", "64"])
    with pytest.raises(SystemExit, match="the demo profile's own folder"):
        runner.main(["--profile", "smoke", "--only", "01", "--run-name", "demo"])
    (output_root / "outputs" / "mine").mkdir(parents=True)
    (output_root / "outputs" / "mine" / "run.json").write_text('{"profile": "smoke", "stages": {}}')
    with pytest.raises(SystemExit, match="holds results of profile 'smoke'"):
        runner.main(["--only", "01", "--run-name", "mine"])
    assert runs_nothing == []
    runner.main(["--only", "01", "--run-name", "big", "-p", "image_size", "64"])  # named: fine
    runner.main(["--only", "01", "-p", "image_size", "64", "--overwrite"])  # said so: fine
    runner.main(["--profile", "smoke", "--only", "01", "--run-name", "mine"])  # the recorded profile
    runner.main(["--profile", "smoke", "--only", "01"])  # the profile itself, unchanged
    assert runs_nothing == ["big", "demo", "mine", "smoke"]


def test_ctrl_c_ends_with_one_line(tmp_path):
    import signal
    import time

    folder = tmp_path / "nbs"
    folder.mkdir()
    started = tmp_path / "started"
    write_notebook(folder, "01_slow.py", f"import time\nopen({str(started)!r}, 'w').close()\ntime.sleep(60)\n")
    # A shell starts background jobs with Ctrl-C ignored, and children inherit that (Python then
    # installs no KeyboardInterrupt handler): give the runner the default disposition of a
    # foreground command, whatever launched these tests.
    process = subprocess.Popen(
        [sys.executable, "-m", "histodistill.runner", "--profile", "smoke", "--notebooks", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(), start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not started.exists() and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted in 01_slow.py" in stderr and "resumes" in stderr
    assert "Traceback" not in stderr, stderr[-2000:]


@pytest.mark.parametrize("name,value,message", [
    ("ipc", "ten", "-p ipc 'ten': sets selection.ipc, which takes a whole number"),
    ("image_size", 28.5, "-p image_size 28.5: sets data.size, which takes a whole number"),
    ("networks", "resnet18", "-p networks 'resnet18': sets evaluation.networks, which takes a tuple of texts"),
    ("selection.seed", -1, "-p selection.seed -1: sets selection.seed, a seed: a whole number >= 0"),
    ("data.seed", -1, "-p data.seed -1: sets data.seed, a seed"),
    ("steps", 0, "-p steps 0: steps, batch_size, eval_every and width_scale must be positive"),
    ("downstream.dsa", "yes", "-p downstream.dsa 'yes': sets downstream.dsa, which takes True or False"),
    ("diffusion.lrr", 1, "-p diffusion.lrr: 'diffusion.lrr': the diffusion configuration has no field 'lrr'"),
    ("difusion.lr", 1, "-p difusion.lr: 'difusion.lr' is not stage.field; stages:"),
])
def test_bad_parameters_are_refused_before_any_notebook_runs(name, value, message, runs_nothing):
    from histodistill import runner

    with pytest.raises(SystemExit) as refused:
        runner.main(["--run-name", "mine", "-p", name, repr(value)])
    assert message in str(refused.value) and "nothing was run" in str(refused.value)
    assert runs_nothing == []


def test_good_parameters_pass_the_check():
    overrides = {"ipc": 10, "networks": ["convnet", "resnet18"], "guidance_scale": None, "downstream.lr": 1,
                 "downstream.seed": 3, "image_size": 64, "ablation.contrastive_weights": (0.1, 0.3)}
    assert len(runner.plan("demo", overrides, "mine")) == len(notebook_runs.notebook_sources())


def test_a_field_goes_into_the_config_of_the_notebook_configuring_its_stage():
    items = runner.plan("demo", {"diffusion.lr": 3e-4, "selection.k": 15, "ipc": 20,
                                 "config": {"data.seed": 2}}, "mine")
    config = {source.name[:2]: params.get("config") for source, _, params in items}
    assert config == {"01": {"data.seed": 2}, "02": {"diffusion.lr": 3e-4}, "03": None,
                      "04": {"selection.k": 15}, "05": None, "06": None, "07": None}
    assert [params.get("ipc") for _, _, params in items] == [None, None, None, 20, None, None, None]
    with pytest.raises(SystemExit, match=r"-p diffusion.lr sets a field of notebook 02's stage \(--only 05\)"):
        runner.plan("demo", {"diffusion.lr": 3e-4}, "mine", only=["05"])
    with pytest.raises(SystemExit, match="-p ipc and -p selection.ipc both set selection.ipc"):
        runner.plan("demo", {"ipc": 20, "selection.ipc": 30}, "mine")


def test_every_named_parameter_is_declared_by_the_notebook_configuring_its_stage():
    from histodistill import parameters

    declared = {s.name[:2]: set(notebook_runs.declared_parameters(notebook_runs.to_notebook(s))) for s in notebook_runs.notebook_sources()}
    for name, targets in parameters.NAMED.items():
        for target in targets:
            stage, _ = parameters.split_target(target)
            assert name in declared[parameters.CONFIGURED_BY[stage]], (name, target)
    assert set(parameters.CONFIGURED_BY) == set(parameters.presets.STAGES)
    assert all(parameters.CONFIG in names for names in declared.values())


def test_a_notebook_applies_its_named_parameters_and_config():
    from histodistill import parameters

    namespace = {"ipc": 20, "graph": None, "config": {"selection.k": 15, "diffusion.lr": 1.0},
                 "use_shipped_generator": False}
    cfg = parameters.configure("selection", "demo", namespace)
    assert (cfg.ipc, cfg.k) == (20, 15) and cfg.graph == parameters.presets.stage_config("selection", "demo").graph
    assert parameters.configure("diffusion", "demo", namespace).lr == 1.0
    assert parameters.configure("diffusion", "demo", namespace).shipped is False
    assert parameters.configure("autoencoder", "demo", {"use_shipped_generator": True}).shipped is True
    assert parameters.configure("sampling", "demo", {"config": {"sampling.guidance_interval": [0.1, 2]}}
                                ).guidance_interval == (0.1, 2)


def test_tuple_parameters_reach_the_notebook_as_sequences_of_their_items(tmp_path):
    """Papermill writes a tuple as the string of its repr; the notebooks' ``tuple(networks)``
    then split it into characters. The runner passes tuples as lists, which every notebook
    turns back into tuples: the injected cell, executed, holds the items themselves."""
    overrides = {"networks": ("convnet",), "privacy.timesteps": (50, 100)}
    written = notebook_runs.export(runner.plan("demo", overrides, "mine"), tmp_path)
    seen = {}
    for path in written:
        nb = json.loads(path.read_text())
        injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
        namespace: dict = {}
        exec("".join(injected[0]["source"]), namespace)
        seen.update({k: namespace[k] for k in ("networks", "config") if namespace.get(k)})
    assert tuple(seen["networks"]) == ("convnet",)
    assert tuple(seen["config"]["privacy.timesteps"]) == (50, 100)
    assert notebook_runs.injectable({"a": ((1, 2), [3])}) == {"a": [[1, 2], [3]]}


def test_progress_bars_print_whole_lines_without_a_terminal(monkeypatch, capsys):
    from histodistill import progress

    monkeypatch.setenv(progress.MODE_VARIABLE, "lines")
    for _ in progress.tqdm(range(4), desc="stage", mininterval=0):
        pass
    out = capsys.readouterr().out
    assert "\r" not in out and out.count("\n") >= 2
    assert out.splitlines()[-1].startswith("stage: 100%") and "4/4" in out.splitlines()[-1]
    monkeypatch.delenv(progress.MODE_VARIABLE)
    assert not isinstance(progress.tqdm(range(2), disable=True), progress._LineBar)


def test_the_runner_streams_progress_lines_from_a_notebook(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    write_notebook(folder, "01_bar.py", "from histodistill.progress import tqdm\n"
                                        "for _ in tqdm(range(3), desc='long stage', mininterval=0):\n    pass\n")
    result = subprocess.run(
        [sys.executable, "-m", "histodistill.runner", "--profile", "smoke", "--notebooks", str(folder),
         "--run-name", "bar"], capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "long stage: 100%" in result.stderr + result.stdout


def test_own_data_without_a_run_name_is_refused_before_running(runs_nothing, output_root):
    with pytest.raises(SystemExit) as refused:
        runner.main(["--only", "01", "-p", "data_source", "npz", "-p", "data_path", "my.npz"])
    assert str(refused.value) == (
        "-p data_path, data_source changes the demo profile, and an unnamed run writes into figures/demo/ and "
        "paper_results/demo/, the results committed in the repository; name this run (--run-name NAME) or pass "
        "--overwrite to replace them")
    assert runs_nothing == []
    assert not (output_root / "figures").exists() and not (output_root / "paper_results").exists()


def test_bad_parameters_together_are_each_named_in_full(runs_nothing):
    with pytest.raises(SystemExit) as refused:
        runner.main(["--run-name", "mine", "-p", "ipc", "ten", "-p", "image_size", "28.5", "-p", "networks",
                     "resnet18", "-p", "selection.seed", "-1", "-p", "data.seed", "-1"])
    lines = str(refused.value).splitlines()
    assert lines[0] == "bad parameter(s); nothing was run:"
    assert sorted(line.strip() for line in lines[1:]) == sorted([
        "-p ipc 'ten': sets selection.ipc, which takes a whole number",
        "-p image_size 28.5: sets data.size, which takes a whole number",
        "-p networks 'resnet18': sets evaluation.networks, which takes a tuple of texts, e.g. ('convnet',)",
        "-p selection.seed -1: sets selection.seed, a seed: a whole number >= 0",
        "-p data.seed -1: sets data.seed, a seed: a whole number >= 0",
    ])
    assert runs_nothing == []
