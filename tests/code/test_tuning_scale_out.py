"""Scale-out: two processes share one Optuna study on Postgres (and MLflow on Postgres) without duplicates."""

from __future__ import annotations

import uuid

import mlflow
import optuna
import pytest

from core import configs
from tasks.data import split_batch
from tasks.registry import setup_mlflow
from tasks.tuning import run_study, shares


@pytest.fixture
def postgres_db():
    """Fresh databases on the machine's Postgres (127.0.0.1:5432, trust auth): a factory; all dropped afterwards.

    Optuna and MLflow each need their own database (both keep an `alembic_version` table)."""
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError:
        pytest.skip("no Postgres on 127.0.0.1:5432")
    conn.autocommit = True
    created: list[str] = []

    def create() -> str:
        created.append(f"potable_test_{uuid.uuid4().hex[:8]}")
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{created[-1]}"')
        return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{created[-1]}"

    try:
        yield create
    finally:
        with conn.cursor() as cur:
            for name in created:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


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
