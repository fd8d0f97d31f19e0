"""Slice assessment with fairlearn's MetricFrame over groups of water samples that matter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from sklearn.metrics import recall_score, roc_auc_score


def slice_labels(X: pd.DataFrame, spec: dict[str, Any]) -> pd.Series:
    """Label each sample with its slice of one dimension (bins on a column, or measured vs missing)."""
    values = X[spec["column"]]
    if spec.get("missing"):
        return pd.Series(np.where(values.isna(), "missing", "measured"), index=X.index)
    edges = [-np.inf, *spec["bins"], np.inf]
    labels = pd.cut(values, bins=edges, labels=spec["labels"]).astype(object)
    return labels.where(values.notna(), "missing")


def _roc_auc(y_true, proba) -> float:
    return float(roc_auc_score(y_true, proba)) if len(np.unique(y_true)) == 2 else float("nan")


@dataclass
class SliceReport:
    table: pd.DataFrame  # one row per (dimension, slice): roc_auc, recall, false_potable_rate, support, judged
    min_support: int

    def gap(self, metric: str = "roc_auc") -> float:
        """Largest within-dimension difference of a metric among slices big enough to judge."""
        judged = self.table[self.table["judged"]].dropna(subset=[metric])
        gaps = judged.groupby("dimension")[metric].agg(lambda s: s.max() - s.min() if len(s) > 1 else 0.0)
        return float(gaps.max()) if len(gaps) else 0.0

    def markdown(self) -> str:
        lines = [
            "| dimension | slice | support | ROC-AUC | recall | false-potable rate | judged |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in self.table.itertuples(index=False):
            judged = "yes" if row.judged else f"no (< {self.min_support} samples)"
            lines.append(
                f"| {row.dimension} | {row.slice} | {row.support} | {row.roc_auc:.3f} | {row.recall:.3f} | "
                f"{row.false_potable_rate:.3f} | {judged} |"
            )
        return "\n".join(lines)


def assess_slices(
    X: pd.DataFrame, y: np.ndarray, proba: np.ndarray, threshold: float, config: dict[str, Any]
) -> SliceReport:
    """Per-slice ROC-AUC, recall, false-potable rate and support for every configured dimension."""
    y = np.asarray(y)
    pred = (np.asarray(proba) >= threshold).astype(int)

    def recall(y_true, y_pred) -> float:
        return float(recall_score(y_true, y_pred, zero_division=0)) if (y_true == 1).any() else float("nan")

    def false_potable(y_true, y_pred) -> float:
        negatives = y_true == 0
        return float(np.mean(y_pred[negatives] == 1)) if negatives.any() else float("nan")

    frames = []
    for dimension, spec in config["dimensions"].items():
        groups = slice_labels(X, spec).to_numpy()
        by_label = MetricFrame(
            metrics={"recall": recall, "false_potable_rate": false_potable, "support": lambda t, p: len(t)},
            y_true=y,
            y_pred=pred,
            sensitive_features=groups,
        ).by_group
        by_score = MetricFrame(
            metrics={"roc_auc": _roc_auc}, y_true=y, y_pred=np.asarray(proba), sensitive_features=groups
        ).by_group
        frame = by_label.join(by_score).reset_index(names="slice")
        frame.insert(0, "dimension", dimension)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table["support"] = table["support"].astype(int)
    table["judged"] = table["support"] >= config["min_support"]
    return SliceReport(
        table[["dimension", "slice", "support", "roc_auc", "recall", "false_potable_rate", "judged"]],
        config["min_support"],
    )
