"""The privacy audit's report: the verdict on the audited set (and where it failed), the
table as markdown and files, and the data card written beside an exported distilled set.

    >>> result = report.verdict(table, by_class)   # passed?, failed tests, controls caught, where
    >>> print(report.verdict_text(result))
    >>> report.write_card(product_folder, table, result)
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__, paths
from . import measures
from .controls import DISTILLED, GENERATOR, VERSUS_SELECTED


def verdict(table: pd.DataFrame, by_class: pd.DataFrame | None = None, audited: str = DISTILLED) -> dict:
    """The audited set's verdict: it passes when it passes every test that counts (a row
    whose ``reading`` is empty: calibrated by its negative controls, not explained by the
    selection's own bias, not passed by construction) and the generator passes its attack.
    Also: which tests failed, with the control each failed against (``details``); which
    were uncalibrated, within the selection's bias or passed by construction; whether every
    positive control was caught (one that passes means that test cannot see the leak it is
    for) and every negative control passed. With `by_class`, where the evidence of each
    failed distance test sits ("where", per space: `_where`): that locates a failure, it
    does not excuse it."""
    table = table.assign(reading=_readings(table))
    judged = table[table["set"].isin([audited, GENERATOR])]
    counts = judged["reading"] == ""
    failing = judged[counts & ~judged["passed"].astype(bool)]
    failed = [f"{r.test} / {r.space}" if r.set == audited else f"{r.test} / {GENERATOR}"
              for r in failing.itertuples(index=False)]
    controls = table[table["expected"] == "fail"]
    missed = _named(controls[controls["passed"].astype(bool)], ["test", "set", "space"])
    negatives = table[table["role"] == "negative control"]
    negatives_failed = _named(negatives[~negatives["passed"].astype(bool)], ["test", "set", "space"])

    def grouped(prefix: str) -> list[str]:
        rows = judged[judged["reading"].str.startswith(prefix)]
        return list(dict.fromkeys(_named(rows, ["test", "space"])))

    own = table[table["set"] == audited]
    by_construction = grouped("passes by construction")
    # With the privacy filter on, the evidence comes from the tests that do not share its
    # criterion: every counted test of the set and the generator.
    counted = judged[counts & ~judged["test"].str.endswith(VERSUS_SELECTED)]
    independent = list(dict.fromkeys(_named(counted, ["test", "space"]))) if by_construction else []
    return {"set": audited, "passed": not failed, "failed_tests": failed,
            "details": [_detail(row, table) for row in failing.to_dict("records")],
            "uncalibrated": grouped("uncalibrated"), "within_selection_bias": grouped("within the selection"),
            "by_construction": by_construction, "independent_of_filter": independent,
            "controls_caught": not missed, "controls_missed": missed,
            "negative_controls_passed": not negatives_failed, "negative_controls_failed": negatives_failed,
            "where": _where(own, by_class, audited) if by_class is not None else {}}


def _detail(row: dict, table: pd.DataFrame) -> str:
    """One failed test in words, with the control it failed against."""
    name = f"{row['test']} ({row['space']})"
    if row["test"] == "near-copies":
        return (f"{name}: {int(row['statistic'])} of {int(row['n'])} images closer to one train image than the "
                f"unseen real (val) images of their class get, where images like those would give "
                f"{row['threshold']:.1f} (p = {row['p_value']:.2g})")
    if row["test"] in ("DCR share", "data-copying C_T"):
        versus = table[(table["test"] == row["test"] + VERSUS_SELECTED) & (table["space"] == row["space"])]
        text = f"{name}: {row['statistic']:.3f} against {row['threshold']:.3f} for unseen real images (p = {row['p_value']:.2g})"
        if len(versus):
            v = versus.iloc[0]
            text += (f"; {v['statistic']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}] beyond the same selection "
                     "of unseen real images")
        return text
    if row["test"].startswith("MIA"):
        return (f"{row['test']} ({row['set']}): AUC {row['statistic']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}] "
                "telling train from unseen val images, where 0.5 is no advantage")
    return f"{name}: {row['statistic']:.3g}"


def _where(own: pd.DataFrame, by_class: pd.DataFrame, audited: str) -> dict[str, list[str]]:
    """Per space in which a counted distance test failed, one line per failed test saying
    which classes carry it: near-copies by class (low-information classes marked), the
    classes whose own DCR share is significantly above the null, or that no class does
    alone (the excess is spread over the set, or a class holds too few images for its own
    test); C_T by its comparison within each class (the whole-set test's cells are k-means
    cells of train, not classes)."""
    failed = own[~own["passed"].astype(bool) & (_readings(own) == "")]
    where = {}
    for space in failed["space"].unique():
        tests = set(failed.loc[failed["space"] == space, "test"])
        rows = by_class[(by_class["set"] == audited) & (by_class["space"] == space)].to_dict("records")
        notes = []
        if "near-copies" in tests:
            hits = [f"{r['class']} {r['near_copies']}" + (" (low-information)" if r.get("low_information") is True else "")
                    for r in rows if r["near_copies"]]
            notes.append("near-copies: " + ", ".join(hits))
        if "DCR share" in tests:
            hits = [f"{r['class']} {r['dcr_share']:.2f} (p = {r['dcr_p_value']:.2g})" for r in rows
                    if pd.notna(r["dcr_p_value"]) and r["dcr_p_value"] < measures.ALPHA]
            notes.append("DCR share: " + (", ".join(hits) if hits else
                                          "no class significant alone: spread over the set"))
        if "data-copying C_T" in tests:
            hits = [f"{r['class']} z = {r['c_t_z']:.2f} (p = {r['c_t_p_value']:.2g})" for r in rows
                    if pd.notna(r.get("c_t_p_value")) and r["c_t_p_value"] < measures.ALPHA]
            notes.append("C_T within class: " + (", ".join(hits) if hits else
                                                 "no class significant alone: spread over the set"))
        if notes:
            where[space] = notes
    return where


def markdown(table: pd.DataFrame) -> str:
    """The audit table as Markdown: one line per test, set and space, with its interval or
    p-value, Carlini et al.'s fixed near-copy count beside the calibrated one, whether it
    passed (and whether it was meant to) and, for an audited row that does not count in the
    verdict, why."""
    def interval(row):
        if pd.notna(row["ci_low"]):
            return f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        return f"p = {row['p_value']:.3g}" if pd.notna(row["p_value"]) else ""

    def outcome(row):
        got = "pass" if row["passed"] else "FAIL"
        if row["role"] == "negative control":
            return f"{got} (must pass: {'held' if row['passed'] else 'UNCALIBRATED'})"
        return got if row["expected"] == "pass" else f"{got} (must fail: {'caught' if not row['passed'] else 'MISSED'})"

    shown = table.assign(
        statistic=table["statistic"].map(lambda v: f"{v:.3f}" if float(v) != int(v) else f"{int(v)}"),
        interval=table.apply(interval, axis=1),
        tpr=table["tpr_at_1pct_fpr"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}"),
        outcome=table.apply(outcome, axis=1),
        carlini=table["carlini_near_copies"].map(lambda v: "" if pd.isna(v) else f"{int(v)}"),
        reading=_readings(table),
    )
    columns = {"test": "test", "set": "set", "space": "space", "statistic": "statistic", "threshold": "threshold",
               "interval": "95 % interval / p", "tpr": "TPR at 1 % FPR", "carlini": "Carlini 1/3", "n": "n",
               "outcome": "outcome", "reading": "not counted because"}
    return shown[list(columns)].rename(columns=columns).to_markdown(index=False, floatfmt=".3g")


def save(table: pd.DataFrame, run_name: str, by_class: pd.DataFrame | None = None) -> list[Path]:
    """``paper_results/<run>/privacy_audit.csv`` and ``.md``, and with `by_class`
    ``privacy_audit_by_class.csv``."""
    folder = paths.results_dir(run_name)
    table.to_csv(folder / "privacy_audit.csv", index=False)
    (folder / "privacy_audit.md").write_text(markdown(table) + "\n")
    written = [folder / "privacy_audit.csv", folder / "privacy_audit.md"]
    if by_class is not None:
        by_class.to_csv(folder / "privacy_audit_by_class.csv", index=False)
        written.append(folder / "privacy_audit_by_class.csv")
    return written


def verdict_text(result: dict) -> str:
    """The verdict in words, loud when the set failed or a control misbehaved."""
    lines = []
    if result["passed"]:
        lines.append(f"{result['set']}: passed every calibrated test of the audit.")
    else:
        lines.append(f"WARNING: {result['set']} FAILED the privacy audit: " + "; ".join(result["failed_tests"])
                     + ". Exporting it still works, and the data card says so; do not share it as is.")
        for detail in result.get("details", []):
            lines.append(f"  {detail}")
        for space, notes in result.get("where", {}).items():
            lines.append(f"  where, in {space}: " + "; ".join(notes))
    if result.get("uncalibrated"):
        lines.append("Not counted, uncalibrated (real images no model saw fail them too): "
                     + "; ".join(result["uncalibrated"]))
    if result.get("within_selection_bias"):
        lines.append("Not counted, failed only as far as the same selection of unseen real images does: "
                     + "; ".join(result["within_selection_bias"]))
    if result.get("by_construction"):
        lines.append("Not counted, passed by construction (the privacy filter removed what it flags): "
                     + "; ".join(result["by_construction"]))
        lines.append("Independent of the filter, and counted: " + "; ".join(result["independent_of_filter"]))
    if result["controls_caught"]:
        lines.append("Every positive control was caught: each test can see the leak it is for.")
    else:
        lines.append("WARNING: positive controls not caught (those tests could not have seen a leak; their "
                     "passes mean little): " + "; ".join(result["controls_missed"]))
    if result.get("negative_controls_passed", True):
        lines.append("Every negative control passed: unseen real images are not mistaken for leaks.")
    else:
        lines.append("Negative controls that failed (those tests do not count, or for DCR share and C_T of a "
                     "selected set are read against them): "
                     + "; ".join(result["negative_controls_failed"]))
    return "\n".join(lines)


def _readings(table: pd.DataFrame) -> pd.Series:
    """The ``reading`` column as strings ("" where empty: a csv reads an all-empty column as NaN)."""
    if "reading" not in table:
        return pd.Series("", index=table.index, dtype=object)
    return table["reading"].astype(object).where(table["reading"].notna(), "")


def _named(rows: pd.DataFrame, columns: list[str]) -> list[str]:
    return [" / ".join(map(str, values)) for values in rows[columns].itertuples(index=False)]


def code_version() -> str:
    """The package version, with the git commit when the code is a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=paths.project_root(),
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return f"{__version__}+{commit}"
    except (OSError, subprocess.SubprocessError):
        return __version__


MEANING = ("A pass means that these tests, at the power these set sizes allow, found no sign that the set "
           "or the models trained on it are closer to the train images than real images no model saw are; each "
           "test counted only where real unseen images pass it. It is not a differential-privacy guarantee and "
           "does not rule out leaks these tests cannot see.")


def write_card(product: Path, table: pd.DataFrame, result: dict) -> Path:
    """Add the audit to the distilled set's ``data_card.json``: each test's value and verdict,
    the overall verdict, the date and the code version. A failed audit is written there too."""
    card_path = Path(product) / "data_card.json"
    card = json.loads(card_path.read_text())
    own = table[table["set"].isin([result["set"], GENERATOR])]
    card["audit"] = {
        "verdict": "passed" if result["passed"] else "FAILED",
        "failed_tests": result["failed_tests"],
        "details": result.get("details", []),
        "where": result.get("where", {}),
        "not_counted": {"uncalibrated": result.get("uncalibrated", []),
                        "within_selection_bias": result.get("within_selection_bias", []),
                        "by_construction": result.get("by_construction", [])},
        "independent_of_filter": result.get("independent_of_filter", []),
        "controls_caught": result["controls_caught"],
        "negative_controls_passed": result.get("negative_controls_passed", True),
        "tests": [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
                  for row in own[[c for c in ("test", "set", "space", "statistic", "threshold", "p_value", "ci_low",
                                              "ci_high", "passed", "reading") if c in own]].to_dict("records")],
        "members": "the real train split", "non_members": "the real val split (never seen by an audited model)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "note": MEANING,
    }
    card_path.write_text(json.dumps(card, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
    return card_path
