"""Threshold choice on out-of-fold train predictions, then one evaluation on the held-out test split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.base import clone
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline


def false_potable_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of not-potable samples called potable: the costly error for drinking water."""
    negatives = np.asarray(y_true) == 0
    return float(np.mean(np.asarray(y_pred)[negatives] == 1)) if negatives.any() else 0.0


def choose_threshold(y_true: np.ndarray, proba: np.ndarray, rule: dict[str, Any]) -> float:
    """Pick the decision threshold on out-of-fold probabilities according to the configured rule.

    `f1` maximises F1; `max_recall_at_false_potable_rate` takes the highest recall whose share of
    not-potable samples called potable stays within the limit (ties: the higher, stricter threshold).
    """
    strategy = rule["strategy"]
    if strategy == "f1":
        precision, recall, thresholds = precision_recall_curve(y_true, proba)
        f1 = np.divide(
            2 * precision * recall,
            precision + recall,
            out=np.zeros_like(precision),
            where=(precision + recall) > 0,
        )
        return float(thresholds[int(np.argmax(f1[:-1]))])
    if strategy == "max_recall_at_false_potable_rate":
        fpr, tpr, thresholds = roc_curve(y_true, proba, drop_intermediate=False)
        allowed = np.flatnonzero(fpr <= rule["max_false_potable_rate"])
        best = allowed[np.argmax(tpr[allowed])]  # first maximum = highest threshold among ties
        return float(min(thresholds[best], 1.0))  # roc_curve's first threshold is +inf: predict none
    raise ValueError(f"unknown threshold strategy {strategy!r}")


def out_of_fold_proba(pipeline: Pipeline, X: pd.DataFrame, y: pd.Series, folds: int, seed: int) -> np.ndarray:
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(clone(pipeline), X, y, cv=splitter, method="predict_proba")[:, 1]


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    pred = (proba >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, pred, labels=[0, 1]).ravel()
    return {
        "accuracy": accuracy_score(y_true, pred),
        "precision": precision_score(y_true, pred, zero_division=0),
        "recall": recall_score(y_true, pred, zero_division=0),
        "f1": f1_score(y_true, pred, zero_division=0),
        "roc_auc": roc_auc_score(y_true, proba),
        "pr_auc": average_precision_score(y_true, proba),
        "brier": brier_score_loss(y_true, proba),
        "log_loss": log_loss(y_true, np.clip(proba, 1e-6, 1 - 1e-6), labels=[0, 1]),
        "false_potable_rate": false_potable_rate(y_true, pred),
        "tn": float(tn),
        "fp": float(fp),
        "fn": float(fn),
        "tp": float(tp),
    }


@dataclass
class Evaluation:
    threshold: float
    metrics: dict[str, float]
    plots: list[Path] = field(default_factory=list)


def save_plots(y_true: np.ndarray, proba: np.ndarray, threshold: float, out_dir: Path) -> list[Path]:
    """ROC, PR, calibration and confusion-matrix figures as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    out_dir.mkdir(parents=True, exist_ok=True)
    pred = (proba >= threshold).astype(int)
    drawers = {
        "roc_curve.png": lambda ax: RocCurveDisplay.from_predictions(y_true, proba, ax=ax, name="test"),
        "pr_curve.png": lambda ax: PrecisionRecallDisplay.from_predictions(y_true, proba, ax=ax, name="test"),
        "calibration.png": lambda ax: CalibrationDisplay.from_predictions(y_true, proba, n_bins=10, ax=ax),
        "confusion_matrix.png": lambda ax: ConfusionMatrixDisplay.from_predictions(
            y_true, pred, display_labels=["not potable", "potable"], ax=ax, colorbar=False
        ),
    }
    paths = []
    for name, draw in drawers.items():
        fig, ax = plt.subplots(figsize=(5, 4))
        draw(ax)
        ax.set_title(f"{name.removesuffix('.png').replace('_', ' ')} (threshold {threshold:.3f})")
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths


@task(name="choose-threshold", cache_policy=NO_CACHE)
def choose_threshold_task(
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: pd.Series,
    folds: int,
    seed: int,
    rule: dict[str, Any],
    oof_proba: np.ndarray | None = None,
) -> float:
    """Out-of-fold probabilities on the train split only: the test split stays unseen until evaluation.

    Tuning already produced them for most winners; otherwise (a calibrated SVC) they are computed here.
    """
    if oof_proba is None:
        oof_proba = out_of_fold_proba(pipeline, X, y, folds, seed)
    return choose_threshold(y.to_numpy(), oof_proba, rule)


@task(name="evaluate-on-test", cache_policy=NO_CACHE)
def evaluate_model(
    model: Pipeline, X_test: pd.DataFrame, y_test: pd.Series, threshold: float, plot_dir: Path
) -> Evaluation:
    proba = model.predict_proba(X_test)[:, 1]
    y_true = y_test.to_numpy()
    metrics = {k: float(v) for k, v in classification_metrics(y_true, proba, threshold).items()}
    return Evaluation(threshold, metrics, save_plots(y_true, proba, threshold, plot_dir))
