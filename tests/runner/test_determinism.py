"""One machine, one thread count: a training run repeats bit for bit in a fresh process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

# Trains the smoke profile's classifier (through the cache, on the bundled data) and a short
# downstream run on random images, then prints a SHA-256 of each model's weights and of each
# val history.
SCRIPT = textwrap.dedent(
    """
    import dataclasses, hashlib, json
    import numpy as np
    from histodistill import machine
    threads = machine.configure_torch()
    import os, torch
    # configure_torch leaves new memory unfilled; filling it with NaN must change nothing
    torch.utils.deterministic.fill_uninitialized_memory = bool(os.environ.get("FILL_NEW_MEMORY"))
    from histodistill.classifiers import judge, training
    from histodistill.data import dataset
    from histodistill.generate import stages
    from histodistill.presets import stage_config

    def weights_hash(model):
        digest = hashlib.sha256()
        for key, tensor in sorted(model.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def history_hash(history):
        return hashlib.sha256(history.to_csv(index=False).encode()).hexdigest()

    bundle = dataset.prepare_data(stage_config("data", "smoke"))
    artifact = judge.fit_classifier(stage_config("classifier", "smoke"), bundle, progress=False)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (27, 28, 28, 3), dtype=np.uint8)
    labels = np.arange(27) % 9
    recipe = dataclasses.replace(stage_config("downstream", "smoke"), network="convnet", seed=3)
    model, history = training.train_on_set(images[:18], labels[:18], images[18:], labels[18:], 9, recipe,
                                             progress=False)
    print(json.dumps({
        "threads": threads,
        "classifier": weights_hash(judge.load_classifier(artifact)),
        "classifier_history": history_hash(stages.history(artifact)),
        "downstream": weights_hash(model),
        "downstream_history": history_hash(history),
        "val_evaluations": len(history),
    }))
    """
)


def run_python(script: str, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result


def test_two_fresh_processes_train_identical_weights(tmp_path):
    outputs = []
    for i in range(2):  # each process with its own empty cache: both really train
        result = run_python(SCRIPT, HISTODISTILL_CACHE=str(tmp_path / f"cache{i}"))
        outputs.append(json.loads(result.stdout.strip().splitlines()[-1]))
        assert any((tmp_path / f"cache{i}" / "classifier").iterdir())
    first, second = outputs
    assert first["val_evaluations"] >= 2
    assert first == second


def test_no_result_reads_memory_that_was_never_written(tmp_path):
    """configure_torch turns off torch's NaN filling of new tensors (it only costs time); were
    any operation to read memory before writing it, the NaNs would change its result."""
    outputs = [json.loads(run_python(SCRIPT, HISTODISTILL_CACHE=str(tmp_path / name), FILL_NEW_MEMORY=fill)
                          .stdout.strip().splitlines()[-1]) for name, fill in (("unfilled", ""), ("filled", "1"))]
    assert outputs[0]["val_evaluations"] >= 2
    assert outputs[0] == outputs[1]


def test_configure_torch_uses_the_threads_asked_for():
    script = textwrap.dedent(
        """
        import torch
        from histodistill import machine
        used = machine.configure_torch()
        print(used, torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              machine.configure_torch(), torch.utils.deterministic.fill_uninitialized_memory)
        """
    )
    assert run_python(script, HISTODISTILL_THREADS="1").stdout.split() == ["1", "1", "True", "1", "False"]
    default = run_python(script, HISTODISTILL_THREADS="").stdout.split()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default == [str(cpus), str(cpus), "True", str(cpus), "False"]


def test_configure_torch_refuses_a_thread_count_that_is_not_a_number(monkeypatch):
    from histodistill import machine

    monkeypatch.setenv("HISTODISTILL_THREADS", "two")
    with pytest.raises(ValueError, match="HISTODISTILL_THREADS"):
        machine.configure_torch()


def test_freed_memory_is_reused_instead_of_faulted_in_anew():
    """With `keep_freed_memory`, a 64 MiB block allocated and freed again and again comes,
    once the heap has settled, from memory the process already holds; with glibc's
    defaults it is mapped anew every time, every page faulted in."""
    script = textwrap.dedent(
        """
        import os, resource
        import torch
        from histodistill import machine
        if os.environ["MEMORY"] == "keep":
            assert machine.keep_freed_memory()
        for i in range(40):
            if i == 30:  # the last ten rounds
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            block = torch.ones(16 * 2**20)  # 64 MiB, written in full
            del block
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        """
    )
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("a glibc setting")
    faults = {way: int(run_python(script, MEMORY=way).stdout.split()[-1]) for way in ("default", "keep")}
    assert faults["default"] > 10 * 16_384 * 0.9  # 16,384 pages of 4 KiB per block, every round
    assert faults["keep"] < 16_384  # not even one block's pages
