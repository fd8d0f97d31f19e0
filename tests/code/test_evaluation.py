"""Threshold rules, metrics and plots."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.evaluation import choose_threshold, classification_metrics, false_potable_rate, save_plots


@pytest.fixture
def scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 3000)
    proba = np.clip(0.25 * y + 0.75 * rng.random(3000), 0, 1)
    return y, proba


def test_false_potable_rate_counts_negatives_called_potable() -> None:
    assert false_potable_rate(np.array([0, 0, 0, 0, 1]), np.array([1, 0, 0, 1, 1])) == 0.5


@pytest.mark.parametrize("limit", [0.05, 0.25, 0.5])
def test_recall_rule_respects_the_false_potable_limit(scores, limit) -> None:
    y, proba = scores
    threshold = choose_threshold(
        y, proba, {"strategy": "max_recall_at_false_potable_rate", "max_false_potable_rate": limit}
    )
    assert false_potable_rate(y, (proba >= threshold).astype(int)) <= limit
    # no other threshold within the limit finds more of the potable samples
    chosen = classification_metrics(y, proba, threshold)["recall"]
    for other in np.unique(proba)[::25]:
        pred = (proba >= other).astype(int)
        if false_potable_rate(y, pred) <= limit:
            assert classification_metrics(y, proba, other)["recall"] <= chosen


def test_f1_rule_maximises_f1(scores) -> None:
    y, proba = scores
    threshold = choose_threshold(y, proba, {"strategy": "f1"})
    best = classification_metrics(y, proba, threshold)["f1"]
    for other in np.linspace(0.05, 0.95, 19):
        assert classification_metrics(y, proba, other)["f1"] <= best + 1e-12


def test_unknown_rule_is_refused(scores) -> None:
    with pytest.raises(ValueError, match="unknown threshold strategy"):
        choose_threshold(*scores, {"strategy": "coin"})


def test_metrics_on_a_hand_checked_case() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([0.1, 0.6, 0.4, 0.9])
    m = classification_metrics(y, proba, 0.5)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (1, 1, 1, 1)
    assert m["accuracy"] == 0.5 and m["roc_auc"] == 0.75 and m["false_potable_rate"] == 0.5
    assert m["brier"] == pytest.approx(np.mean((proba - y) ** 2))


def test_plots_are_written(scores, tmp_path) -> None:
    y, proba = scores
    paths = save_plots(y, proba, 0.5, tmp_path)
    assert sorted(p.name for p in paths) == ["calibration.png", "confusion_matrix.png", "pr_curve.png", "roc_curve.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
