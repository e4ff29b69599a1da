"""The training budget checked on val (budget.py): the rule, its verdict, the curve."""

import pandas as pd
import pytest

from histodistill.evaluate import budget


def curve_of(accs: dict[str, list[float]], budgets=(150, 300, 600, 1200)) -> pd.DataFrame:
    return pd.DataFrame([{"network": n, "budget": b, "val_acc_mean": a, "val_acc_std": 0.01, "runs": 3}
                         for n, values in accs.items() for b, a in zip(budgets, values)])


def test_the_rule_picks_where_val_accuracy_stops_rising():
    table = curve_of({"convnet": [0.40, 0.50, 0.54, 0.545], "resnet18": [0.45, 0.49, 0.50, 0.49]})
    picks = budget.choose(table, tolerance=0.02)
    # ConvNet: 300 -> 600 still adds 0.04; nothing after 600 adds more than 0.02.
    # ResNet-18: nothing after 300 adds more than 0.02 (a later dip does not matter).
    assert picks == {"convnet": 600, "resnet18": 300, "all": 600}
    assert "is the one the rule picks" in budget.verdict(table, picks, 600)
    assert "set steps=600" in budget.verdict(table, picks, 300)
    # A looser tolerance accepts earlier plateaus.
    assert budget.choose(table, tolerance=0.05)["convnet"] == 300


def test_a_curve_still_rising_at_the_longest_budget_says_so():
    table = curve_of({"convnet": [0.40, 0.50, 0.60, 0.70]})
    picks = budget.choose(table, tolerance=0.02)
    assert picks["all"] == 1200
    assert "still rises" in budget.verdict(table, picks, 1200)


def test_the_curve_uses_each_runs_last_evaluation():
    rows = []
    for seed, (early, last) in enumerate([(0.9, 0.5), (0.1, 0.7)]):
        rows += [{"network": "convnet", "budget": 10, "seed": seed, "step": 5, "val_acc": early, "val_auc": 0.5},
                 {"network": "convnet", "budget": 10, "seed": seed, "step": 10, "val_acc": last, "val_auc": 0.8}]
    table = budget.curve(pd.DataFrame(rows).sample(frac=1, random_state=0))  # order must not matter
    assert table.loc[0, "val_acc_mean"] == pytest.approx(0.6) and table.loc[0, "runs"] == 2
    assert table.loc[0, "val_auc_mean"] == pytest.approx(0.8)
