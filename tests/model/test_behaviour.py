"""Behavioural model tests on the configuration the default tuning picks.

The label-shuffle guard catches leakage (a model that still scores well on shuffled labels learns
from something other than the measurements); the invariance tests pin down what serving relies on.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_score

from core.settings import FEATURES, LABEL, Settings, load_config
from tasks.data import split_batch
from tasks.tuning import build_pipeline


@pytest.fixture(scope="module")
def tuned_pipeline():
    """The first warm-start configuration: what the default study has selected in every measured run."""
    config = load_config(Settings().training_config)
    entry = dict(config["tuning"]["warm_start"][0])
    family, imputer = entry.pop("family"), entry.pop("imputer")
    return build_pipeline(family, entry, seed=config["seed"], n_jobs=-1, imputer=imputer)


@pytest.fixture(scope="module")
def fitted(tuned_pipeline, reference_frame):
    parts = split_batch(reference_frame, test_size=0.2, seed=42)
    return clone(tuned_pipeline).fit(parts.X_train, parts.y_train), parts


def _cv_auc(pipeline, X, y) -> float:
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    return float(np.mean(cross_val_score(clone(pipeline), X, y, cv=cv, scoring="roc_auc")))


def test_label_shuffle_leakage_guard(tuned_pipeline, reference_frame) -> None:
    X, y = reference_frame[list(FEATURES)], reference_frame[LABEL]
    shuffled = y.sample(frac=1.0, random_state=1).to_numpy()
    assert abs(_cv_auc(tuned_pipeline, X, shuffled) - 0.5) <= 0.05
    assert _cv_auc(tuned_pipeline, X, y) >= 0.65  # and with true labels it does learn


def test_batch_and_single_row_predictions_agree(fitted) -> None:
    model, parts = fitted
    batch = model.predict_proba(parts.X_test.head(50))[:, 1]
    single = [model.predict_proba(parts.X_test.iloc[[i]])[0, 1] for i in range(50)]
    assert np.allclose(batch, single)


def test_row_order_does_not_change_a_rows_prediction(fitted) -> None:
    model, parts = fitted
    X = parts.X_test.head(200)
    forward = model.predict_proba(X)[:, 1]
    backward = model.predict_proba(X.iloc[::-1])[:, 1][::-1]
    assert np.allclose(forward, backward)


def test_missing_measurements_still_get_a_probability(fitted) -> None:
    model, parts = fitted
    X = parts.X_test.head(20).copy()
    X[["ph", "Sulfate", "Trihalomethanes"]] = np.nan
    proba = model.predict_proba(X)[:, 1]
    assert np.isfinite(proba).all() and ((proba >= 0) & (proba <= 1)).all()


def test_refit_with_the_same_seed_is_deterministic(tuned_pipeline, fitted) -> None:
    model, parts = fitted
    again = clone(tuned_pipeline).fit(parts.X_train, parts.y_train)
    assert np.allclose(model.predict_proba(parts.X_test)[:, 1], again.predict_proba(parts.X_test)[:, 1])


def test_more_strict_threshold_never_calls_more_samples_potable(fitted) -> None:
    model, parts = fitted
    proba = model.predict_proba(parts.X_test)[:, 1]
    counts = [(proba >= t).sum() for t in np.linspace(0, 1, 21)]
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))
