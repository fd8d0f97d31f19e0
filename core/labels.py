"""Are a batch's labels believable? Checked against the table before anything trains on them.

GX checks that each label is 0 or 1; that cannot see a batch whose labels are inverted, shuffled or all
the same. Three checks, each a one-sided test at the configured confidence, so a clean batch is refused
rarely and a small batch is never refused on noise alone:
1. re-measured rows (already in the table at measurement precision) must come back with the same label;
2. the share of potable labels must not move far from the table's (a batch of all zeros is an export bug);
3. confident learning (cleanlab): a quick model fitted on the table's train rows gives probabilities for
   the table's own evaluation rows (rows it never saw) and for the batch; cleanlab flags the rows whose
   label the probabilities contradict. The table's share of flagged rows is its own noise level (this
   data set is noisy: about 30 %); a batch is refused when its share is higher by more than the policy's
   excess. Inverted labels flag ~80 % of a batch.
Plain Python (sklearn, cleanlab, scipy): tested without Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.settings import FEATURES, LABEL


@dataclass
class LabelReport:
    success: bool
    failures: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        f = self.figures
        if "batch_issue_share" not in f:
            return "; ".join(self.notes) or "labels: nothing to compare with"
        return (
            f"label issues {f['batch_issue_share']:.1%} of {f['batch_rows']} batch rows "
            f"(table's own {f['table_issue_share']:.1%} on {f['reference_rows']} evaluation rows); "
            f"potable share {f['batch_potable_share']:.1%} (table {f['table_potable_share']:.1%}); "
            f"{f['conflicts']} of {f['overlapping_rows']} re-measured rows with another label"
        )


def wilson_bounds(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """One-sided Wilson score bounds (each at `confidence`) of a binomial share."""
    from scipy.stats import norm

    if n == 0:
        return 0.0, 1.0
    z = float(norm.ppf(confidence))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def quick_model(train: pd.DataFrame, max_rows: int):
    """A fast, decent model of the table (histogram boosting handles missing values itself)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    if len(train) > max_rows:
        train = train.sample(max_rows, random_state=0)
    model = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.05, max_leaf_nodes=15, random_state=0)
    return model.fit(train.loc[:, list(FEATURES)], train[LABEL].astype(int))


def check_labels(batch: pd.DataFrame, table: pd.DataFrame, rules: dict[str, Any]) -> LabelReport:
    """`batch` and `table` in the table's shape (row_id, features, label, split); `rules` is
    configs/validation.yaml's label_quality."""
    report = LabelReport(True)
    confidence = rules["confidence"]
    known = table.set_index("row_id")[LABEL] if len(table) else pd.Series(dtype="int64")

    seen = batch["row_id"].isin(known.index).to_numpy()
    conflicts = int((known.reindex(batch.loc[seen, "row_id"]).to_numpy() != batch.loc[seen, LABEL].to_numpy()).sum())
    report.figures.update(overlapping_rows=int(seen.sum()), conflicts=conflicts)
    low, _ = wilson_bounds(conflicts, int(seen.sum()), confidence)
    if seen.any() and low > rules["max_conflict_share"]:
        report.failures.append(
            f"labels: {conflicts} of {int(seen.sum())} rows already in the table come back with the other label "
            f"({conflicts / seen.sum():.1%}; at most {rules['max_conflict_share']:.0%} allowed): "
            "re-measured samples must keep their label"
        )

    reference = table[table["split"] == "evaluation"]
    if len(reference) < rules["min_reference_rows"]:
        report.notes.append(
            f"labels not compared: the table has {len(reference)} evaluation rows, "
            f"{rules['min_reference_rows']} needed for a reference"
        )
        report.success = not report.failures
        return report

    table_share = float(table[LABEL].mean())
    batch_potable = int(batch[LABEL].sum())
    low, high = wilson_bounds(batch_potable, len(batch), confidence)
    shift = rules["max_potable_share_shift"]
    report.figures.update(batch_potable_share=batch_potable / len(batch), table_potable_share=table_share)
    if low > table_share + shift or high < table_share - shift:
        report.failures.append(
            f"labels: {batch_potable / len(batch):.1%} of the batch is labelled potable where the table has "
            f"{table_share:.1%} (beyond ±{shift:.0%} with {confidence:.0%} confidence): labels look wrong"
        )

    from cleanlab.filter import find_label_issues

    model = quick_model(table[table["split"] == "train"], rules["max_reference_rows"])
    ref_proba = model.predict_proba(reference.loc[:, list(FEATURES)])
    batch_proba = model.predict_proba(batch.loc[:, list(FEATURES)])
    labels = np.concatenate([reference[LABEL].to_numpy(int), batch[LABEL].to_numpy(int)])
    # n_jobs=1: cleanlab otherwise forks a process pool, and a fork of a process with threads (a Prefect
    # flow run has several) can deadlock in the child; one process is fast enough for these sizes.
    issues = find_label_issues(labels, np.vstack([ref_proba, batch_proba]), n_jobs=1)
    ref_issues, batch_issues = issues[: len(reference)], issues[len(reference) :]
    table_rate, batch_rate = float(ref_issues.mean()), float(batch_issues.mean())
    low, _ = wilson_bounds(int(batch_issues.sum()), len(batch), confidence)
    report.figures.update(
        batch_rows=len(batch),
        reference_rows=len(reference),
        batch_issue_share=batch_rate,
        batch_issue_share_lower=low,
        table_issue_share=table_rate,
    )
    if low > table_rate + rules["max_issue_share_excess"]:
        flagged = batch.loc[batch_issues].assign(p_potable=batch_proba[batch_issues, 1])
        flagged = flagged.iloc[np.argsort(np.abs(flagged["p_potable"].to_numpy() - flagged[LABEL].to_numpy()))[::-1]]
        examples = "; ".join(
            f"{LABEL}={int(r[LABEL])} where p(potable)={r['p_potable']:.2f} "
            f"(ph {r['ph']:.2f}, Solids {r['Solids']:.0f})"
            for _, r in flagged.head(rules["examples"]).iterrows()
        )
        report.failures.append(
            f"labels: {batch_rate:.1%} of the batch's labels are contradicted by the table (cleanlab confident "
            f"learning; at least {low:.1%} with {confidence:.0%} confidence) where the table's own share is "
            f"{table_rate:.1%} (at most +{rules['max_issue_share_excess']:.0%} allowed); e.g. {examples}"
        )
    report.success = not report.failures
    return report
