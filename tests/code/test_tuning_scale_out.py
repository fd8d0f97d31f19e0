"""Scale-out: two processes share one Optuna study on Postgres (and MLflow on Postgres) without duplicates."""

from __future__ import annotations

import mlflow
import optuna

from core import configs
from tasks.data import split_batch
from tasks.registry import setup_mlflow
from tasks.tuning import run_study, shares


def test_shares_split_the_budget_exactly() -> None:
    assert shares(7, 2) == [4, 3] and shares(2, 3) == [1, 1, 0] and sum(shares(8, 3)) == 8


def test_two_processes_share_one_postgres_study_without_duplicates(
    postgres_db, settings, reference_frame, monkeypatch
) -> None:
    optuna_db, mlflow_db = postgres_db(), postgres_db()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_db)  # MLflow on Postgres too
    config = configs.training(settings).rules()
    config["tuning"] |= {"n_trials": 6, "processes": 2, "parallel_folds": 1, "warm_start": []}
    config["search_space"] = {k: v for k, v in config["search_space"].items() if k in ("logistic_regression", "svc")}
    config["tuning"]["pruner"] = {"n_startup_trials": 100, "n_warmup_steps": 1}  # count every trial as complete
    parts = split_batch(reference_frame.sample(600, random_state=0), 0.25, 0)
    setup_mlflow(settings.model_copy(update={"mlflow_tracking_uri": mlflow_db}))
    with mlflow.start_run(run_name="scale-out") as parent:
        result = run_study(parts.X_train, parts.y_train, config, optuna_db, "scale-out", seed=0)
    study = optuna.load_study(study_name="scale-out", storage=optuna_db)
    trials = study.trials
    assert result.n_trials == 6 and len(trials) == 6
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6  # no configuration evaluated twice
    assert len({t.user_attrs["worker_pid"] for t in trials}) == 2  # both processes took trials
    nested = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(nested) == 6
