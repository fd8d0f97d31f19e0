"""Two machines, rehearsed on one: two Prefect workers, each with its own POTABLE_HOME, PREFECT_HOME and
working copy, sharing nothing on disk, only the services: Postgres (Optuna study, audit trail, prediction
log, MLflow's store), an MLflow tracking server keeping artifacts on S3 (moto) and the Prefect API.

Machine A takes the train-on-arrival run and machine B a share of its trials; B releases the version
(its Bento rebuilt from the registry) and serves it; A's drift run reads B's shipped predictions; one
audit chain holds both machines' entries and verifies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import optuna
import pandas as pd
import pytest
import yaml

from core.settings import BUNDLED_DATA, CONFIG_DIR, FEATURES, PROJECT_ROOT
from governance.audit_postgres import PostgresAuditTrail
from tests.conftest import free_port
from tests.figures import figure
from tests.journey.conftest import release_config
from tests.postgres import postgres_databases
from tests.processes import stop_group

pytestmark = [pytest.mark.journey, pytest.mark.e2e]
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
DEPLOYMENTS = {  # deployment → (entrypoint, the machine whose queue it is on)
    "train/train-on-arrival": ("flows/training.py:train", "a"),
    "promote/promote": ("flows/promotion.py:promote", "a"),
    "monitor-drift/monitor-drift": ("flows/monitoring.py:monitor_drift", "a"),
    "tune-share/tune-share": ("flows/tuning_share.py:tune_share", "b"),
    "release/release": ("flows/release.py:release", "b"),
}


def _mlflow_server(backend: str, artifacts: str, moto: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    argv = [mlflow, "server", "--backend-store-uri", backend, "--artifacts-destination", artifacts]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "POTABLE_"))}
    env |= AWS | {"MLFLOW_S3_ENDPOINT_URL": moto}
    with open(log, "wb") as out:
        server = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        assert server.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)
    stop_group(server)
    raise AssertionError(f"MLflow server not up: {log.read_text()[-3000:]}")


def _working_copy(dest: Path) -> Path:
    """The machine's own checkout of the project (what a worker image or host would hold)."""
    shutil.copytree(
        PROJECT_ROOT,
        dest,
        ignore=shutil.ignore_patterns(".venv", ".git", ".potable", "__pycache__", ".ruff_cache", "*.egg-info"),
    )
    return dest


def _deploy(pool: str) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $POTABLE_PROJECT_DIR }}"}}]
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"), overwrite=True)
        for name, (entrypoint, machine) in DEPLOYMENTS.items():
            flow_name, deployment = name.split("/")
            client.create_deployment(
                flow_id=client.create_flow_from_name(flow_name),
                name=deployment,
                work_pool_name=pool,
                work_queue_name=machine,
                entrypoint=entrypoint,
                pull_steps=pull,
            )


def _start_machine(machine: str, root: Path, shared: dict[str, str], pool: str) -> tuple[subprocess.Popen, dict]:
    """A Prefect worker on queue `machine` with its own homes and checkout; only `shared` points outside."""
    root.mkdir()
    ours = ("POTABLE_", "PREFECT_", "MLFLOW_", "BENTOML_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)} | shared
    env |= {
        "POTABLE_WORKER_NAME": f"machine-{machine}",
        "POTABLE_HOME": str(root / "home"),
        "PREFECT_HOME": str(root / "prefect"),
        "POTABLE_PROJECT_DIR": str(_working_copy(root / "checkout")),
        "POTABLE_RELEASE_CONFIG": str(release_config(root)),
        "POTABLE_TRAINING_CONFIG": str(_tuning_config(root / "checkout", workers=2)),
    }
    prefect = str(Path(sys.executable).with_name("prefect"))
    argv = [prefect, "worker", "start", "--pool", pool, "--work-queue", machine, "--name", f"machine-{machine}"]
    with open(root / "worker.log", "wb") as out:
        worker = subprocess.Popen(argv, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return worker, {"root": root, "env": env}


def _tuning_config(checkout: Path, workers: int) -> Path:
    """The machine's own configs/training.yaml: 6 trials in `workers` shares."""
    path = checkout / "configs" / "training.yaml"
    training = yaml.safe_load((CONFIG_DIR / "training.yaml").read_text())
    training["tuning"] |= {"n_trials": 6, "workers": workers, "share_pickup_seconds": 120, "parallel_folds": 1}
    path.write_text(yaml.safe_dump(training))
    return path


def _run(name: str, timeout: float, **parameters):
    from prefect.deployments import run_deployment

    run = run_deployment(name, parameters=parameters, timeout=timeout)
    assert run.state is not None and run.state.is_completed(), f"{name}: {run.state}"
    return run


@pytest.mark.timeout(1500)
def test_two_workers_share_nothing_but_the_services(prefect_api, moto_endpoint, tmp_path: Path) -> None:
    import boto3
    from prefect.settings import PREFECT_API_URL

    bucket = f"rehearsal-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, **_aws_kwargs())
    s3.create_bucket(Bucket=bucket)
    batch_uri = f"s3://{bucket}/incoming/water-{uuid.uuid4().hex[:6]}.csv"
    s3.upload_file(str(BUNDLED_DATA), bucket, batch_uri.split("/", 3)[3])
    pool, processes = f"machines-{uuid.uuid4().hex[:6]}", []
    with postgres_databases() as create:
        db = {name: create() for name in ("optuna", "mlflow", "audit", "predictions")}
        mlflow_server, tracking = _mlflow_server(
            db["mlflow"], f"s3://{bucket}/mlflow", moto_endpoint, tmp_path / "mlflow.log"
        )
        processes.append(mlflow_server)
        shared = AWS | {
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "MLFLOW_TRACKING_URI": tracking,
            "POTABLE_OPTUNA_STORAGE": db["optuna"],
            "POTABLE_AUDIT_DATABASE_URL": db["audit"],
            "POTABLE_PREDICTION_LOG_DATABASE_URL": db["predictions"],
            "POTABLE_PREDICTION_LOG_SHIP_SECONDS": "1",
            "POTABLE_S3_ENDPOINT_URL": moto_endpoint,
            "POTABLE_LANDING_AREAS": f"s3://{bucket}/incoming/",
            "POTABLE_REPORTS_URI": f"s3://{bucket}/reports/",
            "POTABLE_AUTO_APPROVE": "1",
        }
        machines = {}
        try:
            _deploy(pool)
            for machine in ("a", "b"):
                worker, machines[machine] = _start_machine(machine, tmp_path / f"machine-{machine}", shared, pool)
                processes.append(worker)

            began = time.monotonic()
            _run("train/train-on-arrival", 900, data=batch_uri, arrival=True)
            two_workers = time.monotonic() - began
            study_name = _latest_study(db["optuna"])
            study = optuna.load_study(study_name=study_name, storage=db["optuna"])
            per_worker = pd.Series([t.user_attrs["worker"] for t in study.trials]).value_counts().to_dict()
            assert len(study.trials) == 6 and set(per_worker) == {"machine-a", "machine-b"}, per_worker

            _run("promote/promote", 300, version="1")
            _run("release/release", 900)
            router = yaml.safe_load((machines["b"]["root"] / "release.yaml").read_text())["router"]["listen"]
            rows = pd.read_csv(BUNDLED_DATA).sample(300, random_state=3)
            with httpx.Client(timeout=10) as client:
                for _, row in rows.iterrows():
                    sample = {f: (None if pd.isna(row[f]) else float(row[f])) for f in FEATURES}
                    answer = client.post(f"http://127.0.0.1:{router}/predict", json=sample)
                    assert answer.status_code == 200 and answer.json()["model_version"] == "1", answer.text
            time.sleep(3)  # the slot's workers ship every second
            drift = _run("monitor-drift/monitor-drift", 600)
            # The same budget on one worker (machine A alone), for the wall-time comparison.
            _tuning_config(machines["a"]["root"] / "checkout", workers=1)
            again = batch_uri.replace(".csv", "-again.csv")
            s3.copy_object(
                Bucket=bucket, Key=again.split("/", 3)[3], CopySource=f"{bucket}/{batch_uri.split('/', 3)[3]}"
            )
            began = time.monotonic()
            _run("train/train-on-arrival", 900, data=again, arrival=True)
            one_worker = time.monotonic() - began
        finally:
            stop = (
                subprocess.run(  # machine B's slots and router (started by its release run)
                    [str(Path(sys.executable).with_name("potable")), "rollout", "stop"],
                    env=machines.get("b", {}).get("env", os.environ),
                    capture_output=True,
                    timeout=120,
                )
                if "b" in machines
                else None
            )
            for process in processes:
                stop_group(process)
        trail = PostgresAuditTrail(db["audit"])
        verdict = trail.verify()
        writers = pd.Series([e["writer"] for e in trail.entries()]).value_counts().to_dict()
        actions = {e["action"] for e in trail.entries()}
        live_rows = _drift_rows(db["predictions"])
    assert stop is None or stop.returncode == 0, stop.stderr if stop else ""
    assert verdict.ok and set(writers) == {"machine-a", "machine-b"}, (verdict, writers)
    assert {"model_registered", "bento_rebuilt", "drift_checked"} <= actions, actions
    assert drift.state.is_completed() and live_rows >= 300
    stored = s3.list_objects_v2(Bucket=bucket, Prefix="mlflow/").get("KeyCount", 0)
    assert stored > 0  # the tracking server keeps the artifacts on S3, not on either machine
    reports = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="reports/").get("Contents", [])]
    for kind in ("reports/drift-", "reports/model_cards/model_card_v1.md", "reports/data_docs/"):
        assert any(key.startswith(kind) for key in reports), (kind, reports)
    figure(
        f"\ntwo machines: trials per worker {per_worker}; train-on-arrival {two_workers:.0f} s with 2 workers vs "
        f"{one_worker:.0f} s on one (same 6-trial budget, 2 cores: no speed-up expected); "
        f"{stored} MLflow artifact objects on S3; "
        f"audit entries per writer {writers}, chain verified ({verdict.entries} entries); "
        f"{live_rows} predictions shipped by machine B's slot, read by machine A's drift run"
    )


def _aws_kwargs() -> dict[str, str]:
    return {
        "region_name": "us-east-1",
        "aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"],
    }


def _latest_study(storage: str) -> str:
    summaries = optuna.get_all_study_summaries(storage=storage)
    return max(summaries, key=lambda s: s.datetime_start).study_name


def _drift_rows(url: str) -> int:
    from tasks.drift import read_prediction_table

    return len(read_prediction_table(url))
