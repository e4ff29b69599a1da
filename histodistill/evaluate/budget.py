"""The downstream training budget, checked on val: how many steps every row trains.

A distilled set of 90 images is one batch, so a budget in epochs is a budget in steps, and
too few of them leave the network still improving when it stops; the comparison then
measures how fast a set is learnt, not how much it teaches. Every row of the main table
trains for the same number of steps (`DownstreamConfig.steps`), and this module checks that
number on val, never on test:

    >>> jobs = budget.jobs(up, down_cfg, eval_cfg)          # InfoDist (CE) at each budget
    >>> runs = evaluation.run_jobs(jobs, up.bundle)
    >>> curve = budget.curve(runs)                          # final val accuracy per budget
    >>> steps = budget.choose(curve, eval_cfg.budget_tolerance)

InfoDist (CE), runs 0.. of the main table (the same sets and seeds, so the runs at the
preset's budget are the main table's own models, read back from the cache), trains at
each budget of `EvaluationConfig.budget_steps` (each a full warm-up and cosine schedule);
the val accuracy at the end of training is averaged over the runs. The rule: the smallest
budget after which no longer budget adds more than `budget_tolerance` of val accuracy, per
network; the budget for every network is the largest of those. Like the sampler's
guidance (`guidance.verdict`), the preset carries the rule's pick, and `verdict` says
whether the run's budget still follows it.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from ..classifiers.config import DownstreamConfig
from .config import EvaluationConfig
from . import evaluation
from . import training_sets

ROW = "InfoDist (CE)"  # the row whose budget curve is measured


def jobs(up, down: DownstreamConfig, ev: EvaluationConfig) -> list[evaluation.Job]:
    """InfoDist (CE) models of runs 0..`ev.budget_seeds`-1 per network and budget; run i is
    the main table's run i (`evaluation.main_jobs`): its selection seed and training seed."""
    out = []
    for network in ev.networks:
        for i, seed in enumerate(evaluation.seeds(down, ev.budget_seeds)):
            selection = up.select(method="infodist", seed=up.selection_cfg.seed + i)
            infodist = training_sets.from_selection(selection, up.pool)
            for steps in ev.budget_steps:
                cfg = dataclasses.replace(down, network=network, seed=seed, contrastive="none", steps=steps)
                out.append(evaluation.Job(ROW, infodist, cfg, variant=f"{steps} steps"))
    return out


def histories(model_runs: pd.DataFrame, cache_root=None) -> pd.DataFrame:
    """The val history of every model of `model_runs` (`evaluation.run_jobs` of `jobs`), with
    its network, seed and budget."""
    parts = []
    for run in model_runs.itertuples():
        history = pd.read_csv(evaluation.model_artifact(run.model_key, cache_root).file("history.csv"))
        parts.append(history.assign(network=run.network, seed=run.seed, budget=int(run.variant.split()[0])))
    return pd.concat(parts, ignore_index=True)


def curve(history: pd.DataFrame) -> pd.DataFrame:
    """Per network and budget: the val accuracy (and AUC) at the end of training, mean and
    std over the runs, and how many runs."""
    final = history.sort_values("step").groupby(["network", "budget", "seed"]).tail(1)
    table = final.groupby(["network", "budget"]).agg(
        val_acc_mean=("val_acc", "mean"), val_acc_std=("val_acc", "std"),
        val_auc_mean=("val_auc", "mean"), runs=("seed", "nunique"))
    return table.reset_index()


def choose(curve_table: pd.DataFrame, tolerance: float) -> dict[str, int]:
    """Per network, the smallest budget whose mean final val accuracy no longer budget beats
    by more than `tolerance`; with ``"all"``: the largest of those, the one budget for every
    network."""
    picks = {}
    for network, part in curve_table.groupby("network", sort=False):
        part = part.sort_values("budget")
        budgets, accs = part["budget"].tolist(), part["val_acc_mean"].tolist()
        picks[network] = next(b for i, b in enumerate(budgets)
                              if all(later - accs[i] <= tolerance for later in accs[i + 1 :]))
    picks["all"] = max(picks.values())
    return picks


def verdict(curve_table: pd.DataFrame, picks: dict[str, int], steps: int) -> str:
    """One sentence: does the run's budget (`steps`) follow the rule, and has val accuracy
    stopped rising within the budgets compared?"""
    longest = int(curve_table["budget"].max())
    if picks["all"] == longest:
        return (f"val accuracy still rises up to the longest budget compared ({longest} steps): the rule cannot "
                f"show a plateau; add longer budgets to budget_steps")
    if steps == picks["all"]:
        return f"the training budget of {steps} steps is the one the rule picks on val"
    return (f"the rule picks {picks['all']} steps on val, but this run trains {steps}: "
            f"set steps={picks['all']} for converged training")
