"""The few key figures of each notebook, in plain sentences, read back from the files the
notebook wrote to ``paper_results/<run>/``: what its closing "What you just saw" cell prints.

    >>> print(summary.what_you_saw("05", "demo"))

Every number comes from those files, never from a notebook's variables, so the text says what
a reader of the results folder would find. A file that is missing (a stage not run yet, an
ablation not chosen) gives one line saying so and which notebook writes it.
"""

from __future__ import annotations


import pandas as pd

from . import paths, run_outputs
from .classifiers.metrics import METRIC_LABELS, format_interval
from .evaluate.ablations import NAMES as ABLATIONS
from .evaluate.comparisons import format_difference

NO_DIFFERENCE = "no detectable difference"


def _row(table: pd.DataFrame, column: str, name: str) -> pd.Series:
    """The line whose `column` is `name` (the tables' summary lines), else the last line."""
    match = table[table[column].astype(str) == name]
    return (match if len(match) else table).iloc[-1]


def _share(value: float) -> str:
    return f"{100 * value:.1f} %"


def _holds_zero(low: float, high: float) -> bool:
    # An interval that could not be computed (NaN) detects nothing either.
    return not (low > 0 or high < 0)


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# --- 01 · data ---------------------------------------------------------------------------

def _splits(run_name: str) -> list[str]:
    splits = run_outputs.read_table(run_name, "data_splits.csv", "01").set_index("split")
    sizes = [f"{int(splits.loc[s, 'images'])} {s}" for s in splits.index]
    first = splits.iloc[0]
    lines = [f"The real data: {_listing(sizes)} images ({first['image size']}) "
             f"in {int(first['classes present'])} classes."]
    for split, line in splits.iterrows():
        low, high = int(line["smallest class"]), int(line["largest class"])
        per_class = f"{low}" if low == high else f"from {low} to {high}"
        lines.append(f"  {split}: {int(line['classes present'])} classes present, {per_class} images per class "
                     f"({line['origin']}).")
    return lines


def _classes(run_name: str) -> list[str]:
    counts = run_outputs.read_table(run_name, "data_class_counts.csv", "01")
    return [f"The classes: {', '.join(counts['class'].astype(str))}."]


# --- 02 · generator ----------------------------------------------------------------------

def _autoencoder(run_name: str) -> list[str]:
    line = run_outputs.read_table(run_name, "autoencoder_reconstruction.csv", "02").iloc[0]
    return [f"The autoencoder ({line['autoencoder']}, latents {line['latent shape']}) reconstructs real val "
            f"images at a PSNR of {line['psnr_db']:.2f} dB (mean absolute error {line['mae']:.3f} / 255)."]


def _training(run_name: str) -> list[str]:
    table = run_outputs.read_table(run_name, "ldm_training.csv", "02").set_index("stage")
    loss = "final loss (mean of last 10%)"
    lines = []
    for stage, name in (("diffusion", "The generator's denoiser"), ("autoencoder", "The autoencoder")):
        if stage in table.index:
            line = table.loc[stage]
            lines.append(f"{name} ({line['source']}) ended its {int(line['steps']):,} training steps at a loss "
                         f"of {line[loss]:.4f} (mean of the last 10 % of steps).")
    return lines


# --- 03 · pool ---------------------------------------------------------------------------

def _consistency(run_name: str) -> list[str]:
    mean = _row(run_outputs.read_table(run_name, "pool_class_consistency.csv", "03"), "class", "mean over classes")
    return [f"Class consistency: the real-trained judge puts {_share(mean['pool_accuracy'])} of the "
            f"{int(mean['n_pool'])} pool images in their own class (mean over classes), against "
            f"{_share(mean['val_accuracy'])} of the {int(mean['n_val'])} real val images."]


def _fidelity(run_name: str) -> list[str]:
    whole = _row(run_outputs.read_table(run_name, "pool_quality.csv", "03"), "class", "all")
    ratio = whole["fd_pool_vs_val"] / whole["fd_train_vs_val"]
    return [f"Fréchet distance to real val: pool {whole['fd_pool_vs_val']:.1f}, real train "
            f"{whole['fd_train_vs_val']:.1f} (ratio {ratio:.2f}; 1 is as close as real train).",
            f"Precision / recall against real val: pool {whole['precision_pool']:.3f} / {whole['recall_pool']:.3f}, "
            f"real train {whole['precision_train']:.3f} / {whole['recall_train']:.3f}."]


def _copies(run_name: str) -> list[str]:
    table = run_outputs.read_table(run_name, "pool_memorisation.csv", "03")
    lines = []
    for _, line in table.iterrows():
        where = line.get("flagged_by_class")
        where = f" ({where})" if isinstance(where, str) and where not in ("", "none") else ""
        lines.append(f"Copy check in {line['space']}: {int(line['n_below'])} of {int(line['n_pool'])} pool images "
                     f"are nearer a real train image than the {line['percentile']:g} % quantile of real val "
                     f"images' distances{where}; images the model never saw would give "
                     f"{line['expected_below_if_unseen']:g}.")
    return lines


# --- 04 · selection ----------------------------------------------------------------------

def _kept(run_name: str) -> list[str]:
    card = run_outputs.read_card(run_name)
    params = card.get("params", {})
    lines = [f"The distilled set: {card['n_images']} images, method {card['method']}"
             + (f", {params['ipc']} per class" if "ipc" in params else "") + "."]
    filtered = card.get("source", {}).get("privacy_filter", {})
    if filtered.get("applied"):
        lines.append(f"The privacy filter removed {filtered['removed']} pool images before selecting "
                     f"({filtered['kept']} left).")
    try:
        graphs = run_outputs.read_table(run_name, "selection_graphs.csv", "04").set_index("class_name")["n_modules"]
    except run_outputs.MissingOutput:
        graphs = None
        lines.append(f"{card['method']} builds no graph: no Infomap modules (no selection_graphs.csv).")
    for name, kept in card["counts_per_class"].items():
        count = None if graphs is None or name not in graphs.index else int(graphs[name])
        modules = "" if count is None else f" from {count} Infomap module{'' if count == 1 else 's'}"
        lines.append(f"  {name}: {kept} images kept{modules}.")
    return lines


# --- 05 · evaluation ---------------------------------------------------------------------

def _main_table(run_name: str) -> list[str]:
    table = run_outputs.read_table(run_name, "main_table.csv", "05")
    lines = []
    for network, part in table.groupby("network", sort=False):
        lines.append(f"Test ACC per training set, {network} (mean over runs [95 % interval]):")
        for _, line in part.iterrows():
            acc = (format_interval(line["acc_mean"], line["acc_low"], line["acc_high"]) if "acc_low" in line
                   else f"{line['acc_mean']:.3f} ± {line['acc_std']:.3f} (std over runs)")
            lines.append(f"  {line['row']}: {acc} ({int(line['n_runs'])} runs, IPC {int(line['ipc'])}).")
    return lines


def _differences(table: pd.DataFrame, by: str) -> list[str]:
    """One line per compared set and network: the metrics whose paired interval excludes 0,
    or that none does."""
    labels = dict(METRIC_LABELS)
    lines = []
    for (name, network), part in table.groupby([by, "network"], sort=False):
        reference = part["reference"].iloc[0]
        found = [f"{labels.get(m, m)} {format_difference(d, lo, hi)}"
                 for m, d, lo, hi in zip(part["metric"], part["diff"], part["low"], part["high"])
                 if not _holds_zero(lo, hi)]
        same = [labels.get(m, m) for m, lo, hi in zip(part["metric"], part["low"], part["high"]) if _holds_zero(lo, hi)]
        head = f"  {name} vs {reference} ({network}): "
        if not found:
            lines.append(head + f"{NO_DIFFERENCE} (every 95 % interval holds 0).")
        else:
            rest = f"; {NO_DIFFERENCE} in {_listing(same)}" if same else ""
            lines.append(head + "; ".join(found) + rest + ".")
    return lines


def _paired(run_name: str) -> list[str]:
    table = run_outputs.read_table(run_name, "paired_differences.csv", "05")
    return ["Paired differences on test (row minus reference, 95 % interval):", *_differences(table, "row")]


# --- 06 · ablations ----------------------------------------------------------------------

def _ablations(run_name: str) -> list[str]:
    lines = []
    for name in ABLATIONS:
        try:
            table = run_outputs.read_table(run_name, f"ablation_{name}_paired.csv", "06")
        except run_outputs.MissingOutput:
            ran = (run_outputs.folder(run_name) / f"ablation_{name}.csv").is_file()
            lines.append(f"Ablation {name}: " + ("run, but no variant had a reference to be paired with."
                                                if ran else f"not run (no ablation_{name}_paired.csv); "
                                                "add it to `ablations` in notebook 06."))
            continue
        detected = table[[not _holds_zero(lo, hi) for lo, hi in zip(table["low"], table["high"])]]
        shown = table[table["variant"].isin(set(detected["variant"]))]
        if shown.empty:
            lines.append(f"Ablation {name}: {NO_DIFFERENCE} between any variant and "
                         f"{_listing(list(dict.fromkeys(table['reference'])))} (every 95 % interval holds 0).")
        else:
            lines.append(f"Ablation {name}: the variants whose paired interval excludes 0 (variant minus reference):")
            lines += _differences(shown, "variant")
            quiet = [v for v in dict.fromkeys(table["variant"]) if v not in set(shown["variant"])]
            if quiet:
                lines.append(f"  {NO_DIFFERENCE} for {_listing(quiet)}.")
    return lines


# --- 07 · privacy audit ------------------------------------------------------------------

def _audit(run_name: str) -> list[str]:
    audit = run_outputs.read_card(run_name).get("audit")
    if audit is None:
        return [f"The data card in paper_results/{run_name}/distilled/ holds no audit yet: run notebook 07 "
                f"for run '{run_name}'."]
    failed = audit.get("failed_tests", [])
    lines = [f"The privacy audit's verdict on the distilled set: {audit['verdict']}.",
             "Failed tests: " + (_listing(failed) if failed else "none") + "."]
    lines += [f"  {detail}" for detail in audit.get("details", [])]
    not_counted = {k: v for k, v in audit.get("not_counted", {}).items() if v}
    for reason, tests in not_counted.items():
        lines.append(f"Not counted ({reason.replace('_', ' ')}): {_listing(tests)}.")
    lines.append("Positive controls caught: " + ("yes" if audit.get("controls_caught") else "NO") + ".")
    if audit.get("negative_controls_passed", True):
        lines.append("Negative controls (real images no model saw) passed: every test is calibrated.")
    else:
        # A failed negative control is not an error of the audit: it makes its test uncalibrated,
        # or (the selected unseen images) is the reference DCR share and C_T are read against.
        lines.append("Negative controls: not all passed; the tests they fail do not count, or are read against "
                     "them (privacy_audit.md, column 'not counted because').")
    return lines


def shareable_set(run_name: str) -> str:
    """Where a run's shareable set, its data card and its audit are, the verdict and what it
    means, and what to try when it failed: what ``./run_all.sh --distill`` ends with."""
    try:
        card = run_outputs.read_card(run_name)
    except run_outputs.MissingOutput as missing:
        return str(missing)
    folder = run_outputs.shown(run_outputs.folder(run_name) / "distilled")
    figures = run_outputs.shown(paths.output_root() / "figures" / run_name)
    side = "x".join(str(v) for v in card["image_size"]) if isinstance(card["image_size"], list) else card["image_size"]
    lines = [f"The shareable set: {folder}/distilled.npz ({card['n_images']} images of "
             f"{side} px, {len(card['counts_per_class'])} classes; MedMNIST layout), "
             f"one image grid per class beside it.",
             f"Its data card: {folder}/data_card.json (source, method, configuration, the audit).",
             f"The audit: {run_outputs.shown(run_outputs.folder(run_name))}/privacy_audit.md, figures in {figures}/07_*.png."]
    lines += _audit(run_name)
    audit = card.get("audit")
    if audit is None:
        return "\n".join(lines)
    if audit["verdict"] == "passed":
        lines.append("The verdict passed means no calibrated test found the set closer to the generator's training "
                     "images than real images no model saw are, at the power this set's size gives; it is evidence, "
                     "not a differential-privacy guarantee (docs/privacy_audit.md).")
        if not audit.get("controls_caught", True):
            lines.append("But not every positive control was caught: the tests that missed theirs could not have "
                         "seen a leak of that kind here, so their passes mean "
                         "little; privacy_audit.md names them.")
    else:
        lines += ["The verdict FAILED means at least one calibrated test found the set closer to the training "
                  "images than unseen real images are: do not share it as is. What to try, each a re-run that "
                  "reuses every cached stage:",
                  "  - for failed near-copy tests, the privacy filter, which drops the pool's near-copies before "
                  "selecting: the same command with -p privacy_filter True (notebooks 04 and 07 re-run);",
                  f"  - look at the closest pairs ({figures}/07_closest_pairs.png) and at the classes the verdict "
                  "names, to see what the set copies;",
                  "  - a generator that copies less (more training images, other settings of notebook 02), then "
                  "audit again; docs/privacy_audit.md says what each test measures."]
    return "\n".join(lines)


SECTIONS = {
    1: (_splits, _classes),
    2: (_autoencoder, _training),
    3: (_consistency, _fidelity, _copies),
    4: (_kept,),
    5: (_main_table, _paired),
    6: (_ablations,),
    7: (_audit,),
}


def what_you_saw(notebook: str | int, run_name: str) -> str:
    """Notebook `notebook`'s key figures for run `run_name` ("01", 1 or "01_data" name notebook
    01), read from ``paper_results/<run_name>/``; a missing file gives a line naming it."""
    number = int(str(notebook).split("_")[0])
    if number not in SECTIONS:
        raise ValueError(f"no notebook {notebook!r}: choose 01 to {len(SECTIONS):02d}")
    lines = []
    for section in SECTIONS[number]:
        try:
            lines += section(run_name)
        except run_outputs.MissingOutput as missing:
            lines.append(str(missing))
    return "\n".join(lines)
