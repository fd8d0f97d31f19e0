"""The model families and how one candidate is scored: a Pipeline per family, stratified CV ROC-AUC.

Every candidate is one sklearn Pipeline (imputation and scaling inside), so cross-validation never
sees statistics of its own validation fold. tasks/tuning.py searches over these; evaluation and the
behavioural tests build the same pipelines.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    VotingClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

SCALED_FAMILIES = {"svc", "logistic_regression", "soft_vote"}


def make_estimator(
    family: str, params: dict[str, Any], seed: int, n_jobs: int, calibrated: bool = True
) -> ClassifierMixin:
    """The classifier of one family.

    Served models need probabilities (threshold, Brier score); an SVC gets them from a sigmoid
    calibration on internal folds. Ranking alone (CV ROC-AUC while tuning) skips that cost.
    """
    if family == "extra_trees":
        return ExtraTreesClassifier(**params, random_state=seed, n_jobs=n_jobs)
    if family == "random_forest":
        return RandomForestClassifier(**params, random_state=seed, n_jobs=n_jobs)
    if family == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(**params, random_state=seed)
    if family == "svc":
        svc = SVC(**params, kernel="rbf", random_state=seed)
        return CalibratedClassifierCV(svc, method="sigmoid", ensemble=False, cv=5) if calibrated else svc
    if family == "logistic_regression":
        return LogisticRegression(**params, max_iter=2000)
    if family == "soft_vote":
        # Trees and an RBF kernel err differently on these near-noise labels; averaging their
        # probabilities beats either alone. The SVC inside needs probabilities, so it is always calibrated.
        trees = {k.removeprefix("et_"): v for k, v in params.items() if k.startswith("et_")}
        kernel = {k.removeprefix("svc_"): v for k, v in params.items() if k.startswith("svc_")}
        members = [
            ("extra_trees", make_estimator("extra_trees", trees, seed, n_jobs)),
            ("svc", CalibratedClassifierCV(SVC(**kernel, random_state=seed), ensemble=False, cv=3)),
        ]
        return VotingClassifier(members, voting="soft")
    raise ValueError(f"unknown model family {family!r}")


def build_pipeline(
    family: str,
    params: dict[str, Any],
    seed: int,
    n_jobs: int = 1,
    imputer: str = "median",
    calibrated: bool = True,
) -> Pipeline:
    """Impute → (scale) → classify, as one estimator that `sklearn.base.clone` can re-create."""
    steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy=imputer))]
    if family in SCALED_FAMILIES:
        steps.append(("scale", StandardScaler()))
    steps.append(("model", make_estimator(family, params, seed, n_jobs, calibrated)))
    return Pipeline(steps)


def positive_scores(model: Pipeline, X: pd.DataFrame) -> np.ndarray:
    """Ranking scores for ROC-AUC: probabilities where the model has them, else its decision function."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(X)[:, 1]
    return model.decision_function(X)


def _fit_and_score(pipeline: Pipeline, X: pd.DataFrame, y: pd.Series, fit_idx, val_idx) -> np.ndarray:
    model = clone(pipeline).fit(X.iloc[fit_idx], y.iloc[fit_idx])
    return positive_scores(model, X.iloc[val_idx])


def cv_roc_auc(
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: pd.Series,
    folds: int,
    seed: int,
    trial: optuna.Trial | None,
    parallel_folds: int = 1,
) -> tuple[list[float], np.ndarray]:
    """Stratified CV ROC-AUC per fold plus the out-of-fold scores.

    Folds run `parallel_folds` at a time in threads (tree building and libsvm release the GIL), which
    keeps every core busy where a single fit would not. The running mean is reported after each round
    so a poor trial is pruned early; results do not depend on the parallelism. The out-of-fold scores
    let the threshold be chosen later without refitting the same folds.
    """
    splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(X, y))
    scores: list[float] = []
    oof = np.zeros(len(y), dtype=float)
    with Parallel(n_jobs=parallel_folds, prefer="threads") as parallel:
        for start in range(0, folds, parallel_folds):
            batch = splits[start : start + parallel_folds]
            results = parallel(delayed(_fit_and_score)(pipeline, X, y, f, v) for f, v in batch)
            for (_, val_idx), fold_scores in zip(batch, results, strict=True):
                oof[val_idx] = fold_scores
                scores.append(roc_auc_score(y.iloc[val_idx], fold_scores))
            if trial is not None:
                trial.report(float(np.mean(scores)), len(scores) - 1)
                if trial.should_prune():
                    raise optuna.TrialPruned()
    return scores, oof
