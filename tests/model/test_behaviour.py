"""Behavioural model tests on the configuration the default tuning picks.

The label-shuffle guard catches leakage (a model that still scores well on shuffled labels learns
from something other than the measurements); the invariance tests pin down what serving relies on.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_score

from core import configs
from core.settings import FEATURES, LABEL, Settings
from tasks.data import split_batch
from tasks.tuning import build_pipeline


@pytest.fixture(scope="module")
def tuned_pipeline():
    """The first warm-start configuration: what the default study has selected in every measured run."""
    config = configs.training(Settings()).rules()
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


def test_higher_scores_mean_more_potable_samples_in_the_hold_out(fitted) -> None:
    """Monotonic sanity: sorted by predicted probability, each fifth of the held-out samples is at least
    as often potable as the fifth below it, give or take sampling noise, and the top clearly beats the bottom."""
    model, parts = fitted
    proba = model.predict_proba(parts.X_test)[:, 1]
    quintile = np.digitize(proba, np.quantile(proba, [0.2, 0.4, 0.6, 0.8]))
    rates = [float(parts.y_test.to_numpy()[quintile == q].mean()) for q in range(5)]
    noise = 2 * np.sqrt(0.25 / (len(proba) / 5))  # two standard errors of a share near 0.5
    assert all(upper >= lower - noise for lower, upper in zip(rates, rates[1:], strict=False)), rates
    assert rates[-1] - rates[0] >= 0.2, rates


def test_the_threshold_rule_holds_on_data_it_did_not_see(fitted) -> None:
    """The threshold is chosen on out-of-fold train scores for a false-potable rate <= the configured limit;
    on the held-out split that rate may exceed the limit only by sampling noise."""
    from sklearn.model_selection import cross_val_predict

    from tasks.evaluation import choose_threshold, classification_metrics

    model, parts = fitted
    rule = configs.training(Settings()).threshold.rules()
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    oof = cross_val_predict(clone(model), parts.X_train, parts.y_train, cv=cv, method="predict_proba")[:, 1]
    threshold = choose_threshold(parts.y_train.to_numpy(), oof, rule)
    held_out = classification_metrics(parts.y_test.to_numpy(), model.predict_proba(parts.X_test)[:, 1], threshold)
    assert held_out["false_potable_rate"] <= rule["max_false_potable_rate"] + 0.06
    assert held_out["recall"] > held_out["false_potable_rate"]  # better than calling samples potable at random
