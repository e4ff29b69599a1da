"""The notebooks' closing "What you just saw" text: read from the run's files, the numbers in
them, "no detectable difference" where an interval holds 0, and a clear line for a missing file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from histodistill import paths, run_outputs, summary

RUN = "made"
REPO = Path(__file__).resolve().parents[2]


def write(root: Path, name: str, text: str) -> None:
    path = root / "paper_results" / RUN / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.strip() + "\n")


def card(root: Path, audit: dict | None = None, filtered: dict | None = None) -> None:
    content = {"source": {"privacy_filter": filtered or {"applied": False}}, "method": "infodist",
               "params": {"ipc": 3}, "n_images": 6, "counts_per_class": {"adipose": 3, "debris": 3}}
    if audit is not None:
        content["audit"] = audit
    write(root, run_outputs.CARD, json.dumps(content))


def test_notebook_01_gives_the_split_sizes_and_classes(output_root):
    write(output_root, "data_splits.csv", """
split,images,image size,classes present,smallest class,largest class,origin
train,612,28x28x3,2,301,311,official
val,77,28x28x3,2,33,44,official
test,55,28x28x3,2,21,34,official""")
    write(output_root, "data_class_counts.csv", """
class,train,val,test,train %,val %,test %
adipose,301,33,21,49.2,42.9,38.2
debris,311,44,34,50.8,57.1,61.8""")
    text = summary.what_you_saw("01", RUN)
    for expected in ("612 train", "77 val", "55 test", "28x28x3", "2 classes", "from 301 to 311", "from 33 to 44",
                     "from 21 to 34", "adipose, debris"):
        assert expected in text


def test_notebook_02_gives_the_autoencoder_psnr_and_the_generator_loss(output_root):
    write(output_root, "autoencoder_reconstruction.csv", """
autoencoder,latent shape,mae,psnr_db
trained here,4x14x14,3.217,31.42""")
    write(output_root, "ldm_training.csv", """
stage,source,steps,final loss (mean of last 10%),build seconds,training seconds
autoencoder,trained,700,0.01234,1.0,
diffusion,trained,4321,0.05678,0.1,99.0""")
    text = summary.what_you_saw(2, RUN)
    for expected in ("31.42 dB", "3.217", "4,321 training steps", "0.0568", "700 training steps", "0.0123"):
        assert expected in text


def test_notebook_03_gives_consistency_fidelity_and_copies(output_root):
    write(output_root, "pool_class_consistency.csv", """
class,n_pool,pool_accuracy,n_val,val_accuracy
adipose,10,0.9,5,0.8
debris,10,0.5,5,0.6
mean over classes,20,0.7,10,0.7""")
    write(output_root, "pool_quality.csv", """
class,n_pool,n_train,fd_pool_vs_val,precision_pool,recall_pool,fd_train_vs_val,precision_train,recall_train
adipose,5,5,1.0,1.0,1.0,1.0,1.0,1.0
all,10,10,90.0,0.812,0.456,60.0,0.834,0.778""")
    write(output_root, "pool_memorisation.csv", """
space,percentile,threshold,n_pool,n_below,share_below,expected_below_if_unseen,median_pool_distance,median_val_distance,flagged_by_class
features,1.0,3.5,20,7,0.35,0.2,13.0,12.0,debris: 7
pixels,1.0,0.5,20,0,0.0,0.2,4.0,4.1,""")
    text = summary.what_you_saw("03_synthetic_pool", RUN)
    for expected in ("70.0 % of the 20 pool images", "70.0 % of the 10 real val", "pool 90.0", "real train 60.0",
                     "ratio 1.50", "0.812 / 0.456", "0.834 / 0.778", "7 of 20", "(debris: 7)", "0 of 20"):
        assert expected in text


def test_notebook_04_gives_images_and_modules_per_class(output_root):
    card(output_root, filtered={"applied": True, "removed": 11, "kept": 189})
    write(output_root, "selection_graphs.csv", """
class,class_name,n_modules,kind
0,adipose,4,knn
1,debris,1,knn""")
    text = summary.what_you_saw("04", RUN)
    for expected in ("6 images", "3 per class", "adipose: 3 images kept from 4 Infomap modules",
                     "debris: 3 images kept from 1 Infomap module.", "removed 11", "189 left"):
        assert expected in text


def test_notebook_04_without_a_graph_says_so(output_root):
    card(output_root)
    text = summary.what_you_saw("04", RUN)
    assert "builds no graph" in text and "adipose: 3 images kept." in text


MAIN = """
row,network,ipc,n_runs,acc_mean,acc_std,auc_mean,auc_std,macro_f1_mean,macro_f1_std,acc_low,acc_high,auc_low,auc_high,macro_f1_low,macro_f1_high
Full real,convnet,50,3,0.612,0.01,0.9,0.01,0.6,0.01,0.571,0.653,0.8,0.95,0.5,0.7
InfoDist (CE),convnet,2,3,0.423,0.01,0.8,0.01,0.4,0.01,0.381,0.467,0.7,0.85,0.3,0.5
"""
PAIRED = """
row,network,metric,reference,n_runs,n_test,diff,low,high,excludes_zero
Full real,convnet,acc,InfoDist (CE),3,100,0.189,0.111,0.222,True
Full real,convnet,auc,InfoDist (CE),3,100,0.01,-0.02,0.04,False
Random,convnet,acc,InfoDist (CE),3,100,0.003,-0.041,0.047,False
Random,convnet,auc,InfoDist (CE),3,100,0.001,-0.01,0.02,False
"""


def test_notebook_05_gives_each_row_and_the_differences_that_exclude_zero(output_root):
    write(output_root, "main_table.csv", MAIN)
    write(output_root, "paired_differences.csv", PAIRED)
    lines = summary.what_you_saw("05", RUN).splitlines()
    assert any("Full real: 0.612 [0.571, 0.653]" in line for line in lines)
    assert any("InfoDist (CE): 0.423 [0.381, 0.467]" in line for line in lines)
    full = next(line for line in lines if line.strip().startswith("Full real vs"))
    assert "ACC +0.189 [+0.111, +0.222]" in full and "no detectable difference in AUC" in full
    random = next(line for line in lines if line.strip().startswith("Random vs"))
    assert "no detectable difference" in random and "+0.003" not in random


def test_notebook_06_gives_the_variants_that_differ_and_says_which_ablations_did_not_run(output_root):
    write(output_root, "ablation_ipc_paired.csv", """
variant,network,metric,reference,n_runs,n_test,diff,low,high,excludes_zero
"Random real, IPC 1",convnet,acc,"InfoDist, IPC 1",3,100,-0.087,-0.123,-0.045,True
"Random real, IPC 1",convnet,auc,"InfoDist, IPC 1",3,100,-0.01,-0.03,0.01,False
"Random real, IPC 2",convnet,acc,"InfoDist, IPC 2",3,100,0.02,-0.01,0.05,False""")
    write(output_root, "ablation_rank_paired.csv", """
variant,network,metric,reference,n_runs,n_test,diff,low,high,excludes_zero
flow,convnet,acc,centrality,3,100,0.0,0.0,0.0,False""")
    write(output_root, "ablation_guidance.csv", "variant,ipc\nguidance 2,2")
    text = summary.what_you_saw("06", RUN)
    lines = text.splitlines()
    assert any("Random real, IPC 1" in line and "ACC -0.087 [-0.123, -0.045]" in line for line in lines)
    assert "no detectable difference for Random real, IPC 2" in text
    assert "Ablation rank: no detectable difference" in text
    assert "Ablation guidance: run, but no variant had a reference" in text
    for name in ("contrastive", "selection", "pool_size", "privacy_filter"):
        assert f"Ablation {name}: not run (no ablation_{name}_paired.csv)" in text


def test_notebook_07_gives_the_verdict_and_the_failed_tests(output_root):
    card(output_root, audit={"verdict": "FAILED", "failed_tests": ["near-copies / pixels", "DCR share / pixels"],
                             "details": ["near-copies (pixels): 9 under the threshold"],
                             "not_counted": {"uncalibrated": ["C_T / pixels"], "within_selection_bias": []},
                             "controls_caught": True, "negative_controls_passed": False})
    text = summary.what_you_saw("07", RUN)
    for expected in ("verdict on the distilled set: FAILED", "near-copies / pixels and DCR share / pixels",
                     "9 under the threshold", "Not counted (uncalibrated): C_T / pixels", "caught: yes",
                     "Negative controls: not all passed; the tests they fail do not count"):
        assert expected in text
    assert "within selection bias" not in text


def test_notebook_07_before_the_audit_says_so(output_root):
    card(output_root)
    assert "holds no audit yet: run notebook 07" in summary.what_you_saw("07", RUN)


@pytest.mark.parametrize("notebook, first, writer", [
    ("01", "data_splits.csv", "01"), ("02", "autoencoder_reconstruction.csv", "02"),
    ("03", "pool_class_consistency.csv", "03"), ("04", "distilled/data_card.json", "04"),
    ("05", "main_table.csv", "05"), ("07", "distilled/data_card.json", "04")])
def test_a_missing_file_gives_a_clear_line_and_creates_nothing(output_root, notebook, first, writer):
    text = summary.what_you_saw(notebook, RUN)
    assert text.splitlines()[0] == f"No {first} in paper_results/{RUN}/: run notebook {writer} for run '{RUN}' first."
    assert not (output_root / "paper_results" / RUN).exists()


def test_no_ablation_run_names_every_ablation(output_root):
    lines = summary.what_you_saw("06", RUN).splitlines()
    assert len(lines) == len(summary.ABLATIONS) and all("not run" in line for line in lines)


def test_an_unknown_notebook_is_refused():
    with pytest.raises(ValueError, match="no notebook '08'"):
        summary.what_you_saw("08", RUN)


@pytest.mark.parametrize("notebook", ["01", "02", "03", "04", "05", "06", "07"])
def test_the_committed_demo_outputs_read_without_a_missing_file(monkeypatch, notebook):
    monkeypatch.setenv("HISTODISTILL_OUTPUT_ROOT", str(REPO))
    assert paths.output_root() == REPO
    text = summary.what_you_saw(notebook, "demo")
    assert text.strip()
    assert "paper_results/demo/" not in text and "not run" not in text, text
