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


def verdict(table: pd.DataFrame, by_class: pd.DataFrame | None = None, audited: str = "distilled (InfoDist)") -> dict:
    """The audited set's verdict (passed every test), which tests it failed, and whether every
    control and reference was caught (a control that passes means that test cannot see the
    leak it is for, and the audit is inconclusive there). With `by_class`, also where the
    evidence of each failed distance test sits ("where", per space: `_where`). That locates
    a failure; it does not excuse it: the verdict stays the whole-set one."""
    own = table[table["set"] == audited]
    failed = _named(own[~own["passed"].astype(bool)], ["test", "space"])
    controls = table[table["expected"] == "fail"]
    missed = _named(controls[controls["passed"].astype(bool)], ["test", "set", "space"])
    generator = table[(table["set"] == "the run's generator")]
    return {"set": audited, "passed": not failed and bool(generator["passed"].astype(bool).all()),
            "failed_tests": failed + [f"{t} / the run's generator" for t in
                                      generator.loc[~generator["passed"].astype(bool), "test"]],
            "controls_caught": not missed, "controls_missed": missed,
            "where": _where(own, by_class, audited) if by_class is not None else {}}


def _where(own: pd.DataFrame, by_class: pd.DataFrame, audited: str) -> dict[str, list[str]]:
    """Per space in which a distance test failed, one line per failed test saying which
    classes carry it: near-copies by class, the classes whose own DCR share is significantly
    above the null, or that no class does alone (the excess is spread over the set, or a
    class holds too few images for its own test); C_T's cells are k-means cells of train,
    not classes, so it is not broken down."""
    failed = own[~own["passed"].astype(bool)]
    where = {}
    for space in failed["space"].unique():
        tests = set(failed.loc[failed["space"] == space, "test"])
        rows = by_class[(by_class["set"] == audited) & (by_class["space"] == space)].to_dict("records")
        notes = []
        if "near-copies" in tests:
            hits = [f"{r['class']} {r['near_copies']}" for r in rows if r["near_copies"]]
            notes.append("near-copies: " + ", ".join(hits))
        if "DCR share" in tests:
            hits = [f"{r['class']} {r['dcr_share']:.2f} (p = {r['dcr_p_value']:.2g})" for r in rows
                    if pd.notna(r["dcr_p_value"]) and r["dcr_p_value"] < measures.ALPHA]
            notes.append("DCR share: " + (", ".join(hits) if hits else
                                          "no class significant alone: spread over the set"))
        if "data-copying C_T" in tests:
            notes.append("C_T: a whole-set test (its cells are k-means cells, not classes)")
        if notes:
            where[space] = notes
    return where


def markdown(table: pd.DataFrame) -> str:
    """The audit table as Markdown: one line per test, set and space, with its interval or
    p-value and whether it passed (and whether it was meant to)."""
    def interval(row):
        if pd.notna(row["ci_low"]):
            return f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        return f"p = {row['p_value']:.3g}" if pd.notna(row["p_value"]) else ""

    def outcome(row):
        got = "pass" if row["passed"] else "FAIL"
        return got if row["expected"] == "pass" else f"{got} (must fail: {'caught' if not row['passed'] else 'MISSED'})"

    shown = table.assign(
        statistic=table["statistic"].map(lambda v: f"{v:.3f}" if float(v) != int(v) else f"{int(v)}"),
        interval=table.apply(interval, axis=1),
        tpr=table["tpr_at_1pct_fpr"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}"),
        outcome=table.apply(outcome, axis=1),
    )
    columns = {"test": "test", "set": "set", "space": "space", "statistic": "statistic", "threshold": "threshold",
               "interval": "95 % interval / p", "tpr": "TPR at 1 % FPR", "n": "n", "outcome": "outcome"}
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
    """The verdict in words, loud when the set failed or a control was missed."""
    lines = []
    if result["passed"]:
        lines.append(f"{result['set']}: passed every test of the audit.")
    else:
        lines.append(f"WARNING: {result['set']} FAILED the privacy audit: " + "; ".join(result["failed_tests"])
                     + ". Exporting it still works, and the data card says so; do not share it as is.")
        for space, notes in result.get("where", {}).items():
            lines.append(f"  where, in {space}: " + "; ".join(notes))
    if result["controls_caught"]:
        lines.append("Every control and reference was caught: each test can see the leak it is for.")
    else:
        lines.append("WARNING: controls not caught (those tests could not have seen a leak; their passes "
                     "mean little): " + "; ".join(result["controls_missed"]))
    return "\n".join(lines)


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


def write_card(product: Path, table: pd.DataFrame, result: dict) -> Path:
    """Add the audit to the distilled set's ``data_card.json``: each test's value and verdict,
    the overall verdict, the date and the code version. A failed audit is written there too."""
    card_path = Path(product) / "data_card.json"
    card = json.loads(card_path.read_text())
    own = table[table["set"].isin([result["set"], "the run's generator"])]
    card["audit"] = {
        "verdict": "passed" if result["passed"] else "FAILED",
        "failed_tests": result["failed_tests"],
        "where": result.get("where", {}),
        "controls_caught": result["controls_caught"],
        "tests": [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
                  for row in own[["test", "set", "space", "statistic", "threshold", "p_value", "ci_low", "ci_high",
                                  "passed"]].to_dict("records")],
        "members": "the real train split", "non_members": "the real val split (never seen by an audited model)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "note": "statistical tests at the power the set sizes allow; not a differential-privacy guarantee",
    }
    card_path.write_text(json.dumps(card, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
    return card_path
