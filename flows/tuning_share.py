"""The `tune-share` flow: a share of a train run's Optuna trials, on whichever worker of the pool takes it.

Submitted by the train flow when `tuning.workers` > 1 (tasks/tuning_pool.py). Nothing comes from the
submitting machine's disk: the training batch and config from the parent MLflow run, the study from the
shared Optuna storage (POTABLE_OPTUNA_STORAGE), and each trial is logged as a nested MLflow run of the
parent, tagged with the host that ran it.
"""

from __future__ import annotations

import socket

import mlflow
import optuna
from prefect import flow, get_run_logger

from core import environment
from core.lineage import training_batch
from core.settings import get_settings
from tasks.dataset import split_rows
from tasks.registry import setup_mlflow
from tasks.tuning import ParentRun, optimize_share


class StudyNotShared(RuntimeError):
    """The study is not in this worker's Optuna storage: the workers do not share one."""


@flow(name="tune-share")
def tune_share(parent_run_id: str, study_name: str, n_trials: int, share: int, seed: int) -> dict:
    """Run `n_trials` trials of `study_name` for the train run `parent_run_id`."""
    settings = environment.apply(get_settings())
    setup_mlflow(settings)
    try:
        optuna.load_study(study_name=study_name, storage=settings.optuna_url)
    except KeyError as exc:
        raise StudyNotShared(
            f"study {study_name} is not in this worker's Optuna storage ({settings.optuna_url.split('@')[-1]}); "
            "workers that share tuning need POTABLE_OPTUNA_STORAGE on the same Postgres"
        ) from exc
    parent = mlflow.MlflowClient(settings.tracking_uri).get_run(parent_run_id)
    config = mlflow.artifacts.load_dict(f"runs:/{parent_run_id}/config/training.json")
    parts = split_rows(training_batch(parent_run_id).frame)  # the parent's rows, split as the table assigned them
    optimize_share(
        parts.X_train,
        parts.y_train,
        config,
        settings.optuna_url,
        study_name,
        seed,
        n_trials,
        share,
        ParentRun(parent.info.experiment_id, parent_run_id, settings.tracking_uri),
    )
    host = socket.gethostname()
    get_run_logger().info("share %d of study %s: %d trials on %s", share, study_name, n_trials, host)
    return {"share": share, "n_trials": n_trials, "host": host}
