"""Search space, pipelines and the persistent Optuna study with one MLflow run per trial."""

from __future__ import annotations

import mlflow
import numpy as np
import optuna
import pytest
from sklearn.base import clone

from core import configs
from core.settings import Settings
from tasks.data import split_batch
from tasks.registry import setup_mlflow
from tasks.tuning import build_pipeline, cv_roc_auc, run_study, suggest

FAMILIES = {
    "extra_trees": {"n_estimators": 20, "min_samples_leaf": 3, "max_features": 0.8},
    "random_forest": {"n_estimators": 20, "min_samples_leaf": 3, "max_features": 0.5, "max_depth": 8},
    "hist_gradient_boosting": {
        "learning_rate": 0.1,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 20,
        "l2_regularization": 0.1,
        "max_iter": 50,
    },
    "svc": {"C": 1.0, "gamma": 0.1},
    "logistic_regression": {"C": 1.0},
    "soft_vote": {
        "et_n_estimators": 20,
        "et_min_samples_leaf": 3,
        "et_max_features": 0.8,
        "svc_C": 1.0,
        "svc_gamma": 0.1,
    },
}


@pytest.fixture(scope="module")
def small_split(reference_frame):
    return split_batch(reference_frame.sample(800, random_state=0), test_size=0.25, seed=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_is_a_cloneable_pipeline_with_probabilities(family, small_split) -> None:
    pipeline = build_pipeline(family, FAMILIES[family], seed=0)
    fitted = clone(pipeline).fit(small_split.X_train, small_split.y_train)  # NaNs handled inside
    proba = fitted.predict_proba(small_split.X_test)
    assert proba.shape == (len(small_split.X_test), 2) and np.allclose(proba.sum(axis=1), 1)
    assert fitted.steps[0][0] == "impute"


def test_search_space_covers_at_least_three_families() -> None:
    config = configs.training(Settings()).rules()
    assert len(config["search_space"]) >= 3
    assert set(config["search_space"]) <= set(FAMILIES)


def test_suggest_prefixes_parameters_by_family() -> None:
    space = {"svc": {"C": {"type": "float", "low": 0.1, "high": 10, "log": True}}}
    trial = optuna.trial.FixedTrial({"family": "svc", "svc__C": 2.0, "imputer": "mean"})
    assert suggest(trial, space, ["median", "mean"]) == ("svc", {"C": 2.0}, "mean")


def test_parallel_folds_do_not_change_the_scores(small_split) -> None:
    pipeline = build_pipeline("extra_trees", FAMILIES["extra_trees"], seed=0)
    one, oof_one = cv_roc_auc(pipeline, small_split.X_train, small_split.y_train, 3, 0, None, parallel_folds=1)
    two, oof_two = cv_roc_auc(pipeline, small_split.X_train, small_split.y_train, 3, 0, None, parallel_folds=2)
    assert one == two and np.array_equal(oof_one, oof_two)
    assert 0.0 <= oof_one.min() and oof_one.max() <= 1.0


def test_study_persists_and_logs_each_trial_as_a_nested_run(settings, small_split) -> None:
    config = configs.training(settings).rules()
    config = {**config, "tuning": {**config["tuning"], "n_trials": 3, "warm_start": [], "parallel_folds": 1}}
    setup_mlflow(settings)
    with mlflow.start_run() as parent:
        result = run_study(small_split.X_train, small_split.y_train, config, settings.optuna_url, "unit-study", 0)
    assert result.n_trials == 3 and result.best_family in config["search_space"]
    stored = optuna.load_study(study_name="unit-study", storage=settings.optuna_url)
    assert len(stored.trials) == 3 and (settings.home_dir / "optuna.db").exists()
    children = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 3
    assert set(children["tags.optuna.state"]) <= {"COMPLETE", "PRUNED"}
    assert children["params.family"].notna().all() and children["metrics.duration_s"].gt(0).all()
    assert clone(result.pipeline).get_params()["model"].__class__.__name__
