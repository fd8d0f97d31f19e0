"""Hyper-parameter tuning: an Optuna study over several model families, every trial an MLflow run.

The families and their cross-validated scoring are in tasks/estimators.py; this module runs the study
(warm start, pruning, trials shared by processes on one storage) and logs each trial.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from core.settings import worker_name
from tasks.estimators import build_pipeline, cv_roc_auc
from tasks.tuning_pool import cancel_shares, settle_shares, submit_shares, trials_done

logger = logging.getLogger(__name__)

__all__ = ["build_pipeline", "cv_roc_auc", "suggest", "run_study", "shares", "tune_models", "refit_best"]


def suggest(trial: optuna.Trial, space: dict[str, Any], imputers: list[str]) -> tuple[str, dict, str]:
    """Draw a family and its parameters; names are prefixed by family so each keeps its own prior."""
    family = trial.suggest_categorical("family", list(space))
    params: dict[str, Any] = {}
    for name, spec in space[family].items():
        key = f"{family}__{name}"
        if "choices" in spec:
            params[name] = trial.suggest_categorical(key, spec["choices"])
        elif spec["type"] == "int":
            params[name] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1))
        else:
            params[name] = trial.suggest_float(key, spec["low"], spec["high"], log=spec.get("log", False))
    imputer = trial.suggest_categorical("imputer", imputers)
    return family, params, imputer


@dataclass
class TuningResult:
    study_name: str
    best_value: float
    best_family: str
    best_params: dict[str, Any]
    best_imputer: str
    n_trials: int
    n_pruned: int
    pipeline: Pipeline  # unfitted best configuration
    oof_proba: np.ndarray | None = None  # out-of-fold probabilities of the best trial, when it has them

    def params_for_logging(self) -> dict[str, Any]:
        return {"family": self.best_family, "imputer": self.best_imputer, **self.best_params}


@dataclass(frozen=True)
class ParentRun:
    """The MLflow run trials nest under; passed explicitly so worker processes can log under it too."""

    experiment_id: str
    run_id: str
    tracking_uri: str

    @classmethod
    def active(cls) -> ParentRun:
        run = mlflow.active_run()
        return cls(run.info.experiment_id, run.info.run_id, mlflow.get_tracking_uri())


def log_trial_run(
    parent: ParentRun, name: str, started: float, params: dict[str, Any], metrics: dict[str, float], state: str
) -> None:
    """One nested MLflow run per trial, written in a single batch (SQLite commits are the slow part)."""
    client = MlflowClient(tracking_uri=parent.tracking_uri)
    run = client.create_run(
        parent.experiment_id,
        start_time=int(started * 1000),
        tags={MLFLOW_PARENT_RUN_ID: parent.run_id, MLFLOW_RUN_NAME: name},
        run_name=name,
    )
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[
            RunTag("optuna.state", state),
            RunTag("potable.host", socket.gethostname()),
            RunTag("potable.worker", worker_name()),
        ],
    )
    client.set_terminated(run.info.run_id, end_time=now)


def make_objective(
    X: pd.DataFrame, y: pd.Series, config: dict[str, Any], seed: int, oof_store: dict, parent: ParentRun
):
    """The study objective; out-of-fold probabilities of each finished trial go into oof_store."""
    tuning = config["tuning"]

    def objective(trial: optuna.Trial) -> float:
        family, params, imputer = suggest(trial, config["search_space"], config["imputer_choices"])
        # One core per fit while folds run in parallel threads.
        pipeline = build_pipeline(family, params, seed, 1, imputer, calibrated=False)
        logged = {"family": family, "imputer": imputer, **params, "trial": trial.number}
        trial.set_user_attr("worker_pid", os.getpid())
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("worker", worker_name())  # workers may share a study
        started = time.time()
        try:
            scores, oof = cv_roc_auc(pipeline, X, y, config["cv_folds"], seed, trial, tuning["parallel_folds"])
        except optuna.TrialPruned:
            log_trial_run(
                parent, f"trial-{trial.number}", started, logged, {"duration_s": time.time() - started}, "PRUNED"
            )
            raise
        metrics = {"cv_roc_auc": np.mean(scores), "cv_roc_auc_std": np.std(scores), "duration_s": time.time() - started}
        log_trial_run(parent, f"trial-{trial.number}", started, logged, metrics, "COMPLETE")
        if hasattr(pipeline, "predict_proba"):  # decision-function scores are no probabilities
            oof_store[trial.number] = oof
        return float(np.mean(scores))

    return objective


def enqueue_warm_start(study: optuna.Study, warm_start: list[dict[str, Any]]) -> None:
    """Queue known-good configurations first, unless this study already tried them."""
    for entry in warm_start:
        family = entry["family"]
        params = {"family": family, "imputer": entry.get("imputer", "median")}
        params |= {f"{family}__{k}": v for k, v in entry.items() if k not in ("family", "imputer")}
        study.enqueue_trial(params, skip_if_exists=True)


def make_study(config: dict[str, Any], storage: str, study_name: str, seed: int) -> optuna.Study:
    """Create or load the named study; every process sharing it gets its own sampler seed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # multivariate+group: TPE models each family's parameters jointly within that family
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    return optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        sampler=sampler,
        pruner=optuna.pruners.MedianPruner(**config["tuning"]["pruner"]),
        load_if_exists=True,
    )


def optimize_share(
    X: pd.DataFrame,
    y: pd.Series,
    config: dict[str, Any],
    storage: str,
    study_name: str,
    seed: int,
    n_trials: int,
    worker: int,
    parent: ParentRun,
) -> int:
    """One extra process's share of the trials (tuning.processes > 1); the storage hands out the trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = make_study(config, storage, study_name, seed + worker)  # same seed would propose the same trials
    objective = make_objective(X, y, config, seed, {}, parent)
    study.optimize(objective, n_trials=n_trials, timeout=config["tuning"].get("timeout_seconds"))
    return os.getpid()


def shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_study(
    X: pd.DataFrame,
    y: pd.Series,
    config: dict[str, Any],
    storage: str,
    study_name: str,
    seed: int,
    show_progress: bool = False,
) -> TuningResult:
    """Run (or resume) the named study on persistent storage and return its best configuration.

    With `tuning.workers` > 1, `tune-share` flow runs on the work pool take shares first (tasks/tuning_pool.py;
    the storage must be one every worker reaches: Postgres). With `tuning.processes` > 1, extra processes
    here take shares of this run's part from the same storage (an RDB that takes concurrent writers:
    Postgres; SQLite serialises them). Their out-of-fold scores stay in
    their process, so the threshold step refits folds when the best trial ran elsewhere.
    """
    tuning = config["tuning"]
    study = make_study(config, storage, study_name, seed)
    enqueue_warm_start(study, tuning.get("warm_start") or [])
    oof_store: dict[int, np.ndarray] = {}
    parent = ParentRun.active()
    per_worker = shares(tuning["n_trials"], max(1, int(tuning.get("workers", 1))))
    remote = submit_shares(parent.run_id, study_name, seed, per_worker[1:]) if len(per_worker) > 1 else []
    per_process = shares(per_worker[0], max(1, int(tuning.get("processes", 1))))
    pool = extra = None
    if len(per_process) > 1:  # spawn: fork would copy Prefect's and MLflow's threads
        pool = ProcessPoolExecutor(len(per_process) - 1, mp_context=multiprocessing.get_context("spawn"))
        extra = [
            pool.submit(optimize_share, X, y, config, storage, study_name, seed, n, worker, parent)
            for worker, n in enumerate(per_process[1:], start=1)
            if n
        ]
    try:
        objective = make_objective(X, y, config, seed, oof_store, parent)
        timeout = tuning.get("timeout_seconds")
        study.optimize(objective, n_trials=per_process[0], timeout=timeout, show_progress_bar=show_progress)
        for future in extra or []:
            future.result()
        if len(per_worker) > 1:  # what the pool's shares did not do (not submitted, started, finished) runs here
            pickup, limit = tuning.get("share_pickup_seconds", 30), tuning.get("share_timeout_seconds")
            settled = settle_shares(remote, pickup, limit) if remote else {}
            missing = tuning["n_trials"] - trials_done(study)
            logger.info("tune-share runs: %s; %d trial(s) left to run here", settled, max(0, missing))
            if missing > 0:
                study.optimize(objective, n_trials=missing, timeout=timeout)
    except BaseException:
        if remote:
            with suppress(Exception):  # the error that ended tuning matters more than a failed cancel
                cancel_shares(remote)
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return tuning_result(study, config, seed, oof_store)


def tuning_result(study: optuna.Study, config: dict[str, Any], seed: int, oof_store: dict) -> TuningResult:
    """The study's best configuration as an unfitted Pipeline, with its out-of-fold scores if kept here."""
    best = study.best_trial
    family = best.params["family"]
    prefix = f"{family}__"
    params = {k.removeprefix(prefix): v for k, v in best.params.items() if k.startswith(prefix)}
    states = [t.state for t in study.trials]
    return TuningResult(
        study_name=study.study_name,
        best_value=float(best.value),
        best_family=family,
        best_params=params,
        best_imputer=best.params["imputer"],
        n_trials=len(states),
        n_pruned=states.count(optuna.trial.TrialState.PRUNED),
        pipeline=build_pipeline(family, params, seed, config["tuning"]["n_jobs"], best.params["imputer"]),
        oof_proba=oof_store.get(best.number),
    )


@task(name="tune-models", cache_policy=NO_CACHE)
def tune_models(
    X: pd.DataFrame,
    y: pd.Series,
    config: dict[str, Any],
    storage: str,
    study_name: str,
    seed: int,
    show_progress: bool = False,
) -> TuningResult:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = run_study(X, y, config, storage, study_name, seed, show_progress)
    get_run_logger().info(
        "study %s: best CV ROC-AUC %.4f with %s %s (%d trials, %d pruned)",
        study_name,
        result.best_value,
        result.best_family,
        result.best_params,
        result.n_trials,
        result.n_pruned,
    )
    return result


@task(name="refit-best", cache_policy=NO_CACHE)
def refit_best(pipeline: Pipeline, X: pd.DataFrame, y: pd.Series) -> Pipeline:
    """Fit the winning configuration on the whole train split."""
    return clone(pipeline).fit(X, y)
