"""Tuning over the work pool: `tune-share` flow runs on a real Prefect worker take trials from the train run's
study on Postgres; with no worker to take them, the train run does the whole budget itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

from core.settings import CONFIG_DIR, PROJECT_ROOT
from flows.training import train
from tests.figures import figure
from tests.processes import stop_group

pytestmark = pytest.mark.e2e


def _pool_with_share_deployment() -> str:
    """A process work pool on the test server and the `tune-share` deployment on it (as prefect.yaml has it)."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = f"tuning-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"), overwrite=True)
        client.create_deployment(
            flow_id=client.create_flow_from_name("tune-share"),
            name="tune-share",
            work_pool_name=pool,
            entrypoint="flows/tuning_share.py:tune_share",
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}],
        )
    return pool


def _config(tmp_path: Path, monkeypatch, **tuning) -> None:
    config = yaml.safe_load((CONFIG_DIR / "training.yaml").read_text())
    config["tuning"] |= {"warm_start": [], "pruner": {"n_startup_trials": 100, "n_warmup_steps": 1}} | tuning
    config["search_space"] = {k: v for k, v in config["search_space"].items() if k in ("logistic_regression", "svc")}
    path = tmp_path / "training.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("POTABLE_TRAINING_CONFIG", str(path))


def _share_runs() -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["tune-share"])))


def test_with_no_worker_the_share_is_cancelled_and_the_budget_runs_here(
    prefect_api, settings, tmp_path, monkeypatch
) -> None:
    _pool_with_share_deployment()
    _config(tmp_path, monkeypatch, n_trials=4, workers=2, share_pickup_seconds=3)
    before = {r.id for r in _share_runs()}
    summary = train()
    study = optuna.load_study(study_name=summary["optuna_study"], storage=settings.optuna_url)
    assert len(study.trials) == 4 and {t.user_attrs["worker_pid"] for t in study.trials} == {os.getpid()}
    shares = [r for r in _share_runs() if r.id not in before]
    assert len(shares) == 1 and shares[0].state.type.value == "CANCELLED"
    assert "not started by any worker" in shares[0].state.message


def test_without_a_share_deployment_the_train_run_does_every_trial(
    prefect_api, settings, tmp_path, monkeypatch
) -> None:
    """`potable train` runs on a private Prefect server with no deployments: `tuning.workers` changes nothing."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.delete_deployment(client.read_deployment_by_name("tune-share/tune-share").id)
        except ObjectNotFound:
            pass
    _config(tmp_path, monkeypatch, n_trials=3, workers=3)
    summary = train()
    study = optuna.load_study(study_name=summary["optuna_study"], storage=settings.optuna_url)
    assert len(study.trials) == 3 and {t.user_attrs["worker_pid"] for t in study.trials} == {os.getpid()}


def test_a_worker_on_the_pool_takes_a_share_of_the_trials(
    prefect_api, settings, tmp_path, monkeypatch, postgres_db
) -> None:
    from prefect.settings import PREFECT_API_URL

    optuna_db, mlflow_db = postgres_db(), postgres_db()
    monkeypatch.setenv("POTABLE_OPTUNA_STORAGE", optuna_db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_db)
    pool = _pool_with_share_deployment()
    _config(tmp_path, monkeypatch, n_trials=6, workers=2, share_pickup_seconds=90, parallel_folds=1)
    # The worker: its own POTABLE_HOME and PREFECT_HOME; only the services are shared.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POTABLE_", "PREFECT_", "BENTOML_"))}
    env |= {
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_HOME": str(tmp_path / "worker-prefect"),
        "POTABLE_HOME": str(tmp_path / "worker-home"),
        "POTABLE_OPTUNA_STORAGE": optuna_db,
        "MLFLOW_TRACKING_URI": mlflow_db,
    }
    prefect = str(Path(sys.executable).with_name("prefect"))
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [prefect, "worker", "start", "--pool", pool, "--type", "process"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        began = time.monotonic()
        summary = train()
        took = time.monotonic() - began
    finally:
        stop_group(worker)
    study = optuna.load_study(study_name=summary["optuna_study"], storage=optuna_db)
    by_process: dict[int, int] = {}
    for trial in study.trials:
        by_process[trial.user_attrs["worker_pid"]] = by_process.get(trial.user_attrs["worker_pid"], 0) + 1
    assert len(study.trials) == 6 and all(t.state.is_finished() for t in study.trials)
    assert len(by_process) == 2 and os.getpid() in by_process, (by_process, log.read_text()[-3000:])
    share = [r for r in _share_runs() if r.parameters.get("study_name") == summary["optuna_study"]]
    assert len(share) == 1 and share[0].state.type.value == "COMPLETED"
    mlflow.set_tracking_uri(mlflow_db)
    nested = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{summary['mlflow_run_id']}'")
    assert len(nested) == 6 and nested["tags.potable.host"].notna().all()
    figure(
        f"\ntuning over the work pool: 6 trials, {by_process.get(os.getpid())} in the train run, "
        f"{6 - by_process.get(os.getpid(), 0)} on the pool's worker; train run {took:.0f} s"
    )
