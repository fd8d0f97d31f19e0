"""End to end: the `train` flow on a real Prefect server with real MLflow, GX, Optuna storage and moto S3."""

from __future__ import annotations

import boto3
import mlflow
import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from sklearn.base import clone

from core.settings import BUNDLED_DATA, FEATURES, MODEL_NAME
from flows.training import ArrivalRefused, BatchRejected, train
from governance.audit import audit_log
from tasks.data import BatchError

pytestmark = pytest.mark.e2e


def _versions(settings) -> list:
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    try:
        return client.search_model_versions(f"name='{MODEL_NAME}'")
    except mlflow.exceptions.MlflowException:
        return []


def test_train_registers_a_described_candidate(prefect_api, settings) -> None:
    state = train(data=str(BUNDLED_DATA), trials=2, return_state=True)
    summary = state.result()
    assert state.is_completed()

    # Registry: one version, alias candidate, tags that trace it to data, code, study and threshold.
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    version = client.get_model_version_by_alias(MODEL_NAME, "candidate")
    assert str(version.version) == summary["model_version"] == "1"
    tags = version.tags
    # Trained on the training table's first version, the bundled data (the same batch again added nothing).
    assert summary["dataset_version"] == int(tags["dataset_version"]) == 0 and summary["batch"]["rows_added"] == 0
    assert tags["data_sha256"] == summary["data_sha256"] and summary["rows"]["evaluation"] > 600
    assert tags["optuna_study"] == summary["optuna_study"] and len(tags["git_commit"]) >= 7
    assert float(tags["threshold"]) == pytest.approx(summary["threshold"], abs=1e-6)
    for metric in ("roc_auc", "pr_auc", "f1", "brier", "log_loss", "accuracy", "precision", "recall"):
        assert float(tags[f"test_{metric}"]) == pytest.approx(summary["metrics"][metric], abs=1e-6)
    assert 0.55 < summary["metrics"]["roc_auc"] < 0.8  # near-noise labels: far above means leakage

    # The registered Pipeline loads by alias, predicts with NaNs and clones to its configuration.
    mlflow.set_tracking_uri(settings.tracking_uri)
    model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}@candidate")
    rows = np.array([[np.nan, 204.9, 20791.3, 7.3, 368.5, 564.3, 10.4, 87.0, 2.96]])
    import pandas as pd

    proba = model.predict_proba(pd.DataFrame(rows, columns=list(FEATURES)))
    assert proba.shape == (1, 2)
    assert clone(model).get_params().keys() == model.get_params().keys()

    # Every trial is a nested MLflow run under the flow's parent run; the plots are artifacts.
    parent = summary["mlflow_run_id"]
    children = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 2
    artifacts = {a.path for a in client.list_artifacts(parent, "plots")}
    assert artifacts == {f"plots/{n}.png" for n in ("roc_curve", "pr_curve", "calibration", "confusion_matrix")}

    # The Optuna study persisted in its RDB storage.
    study = optuna.load_study(study_name=summary["optuna_study"], storage=settings.optuna_url)
    assert len(study.trials) == 2

    # The Prefect UI shows the result: summary and metrics artifacts on this flow run.
    with get_client(sync_client=True) as prefect:
        found = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    assert {"training-summary", "test-metrics", "batch-validation"} <= {a.key for a in found}


def test_bad_batch_is_quarantined_and_nothing_is_trained(prefect_api, settings, reference_frame, write_csv) -> None:
    bad = reference_frame.copy()
    bad.loc[5, "ph"] = 15.2
    path = write_csv(bad)
    with pytest.raises(BatchRejected) as caught:
        train(data=str(path), trials=1)
    message = str(caught.value)
    assert "expect_column_values_to_be_between [ph]" in message and "15.2" in message
    assert path.exists()  # named by a person, outside the landing area: copied into quarantine, not moved
    assert list(settings.quarantine_dir.glob("*/batch.csv")) and list(settings.quarantine_dir.glob("*/reason.json"))
    assert _versions(settings) == []
    mlflow.set_tracking_uri(settings.tracking_uri)
    assert mlflow.search_runs(search_all_experiments=True).empty  # no run was even started


def test_missing_input_fails_with_a_clear_message(prefect_api, settings, tmp_path) -> None:
    with pytest.raises(BatchError, match="input file not found"):
        train(data=str(tmp_path / "absent.csv"), trials=1)
    assert _versions(settings) == []


def test_train_from_s3_and_quarantine_under_a_prefix(
    prefect_api, settings, s3_bucket_name, moto_endpoint, reference_frame, monkeypatch
) -> None:
    monkeypatch.setenv("POTABLE_WATCH", f"s3://{s3_bucket_name}/incoming/")  # the landing area
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.upload_file(str(BUNDLED_DATA), s3_bucket_name, "incoming/water.csv")
    monkeypatch.setenv("POTABLE_SEED_DATA", "none")
    summary = train(data=f"s3://{s3_bucket_name}/incoming/water.csv", trials=1)
    assert summary["dataset_version"] == 0 and summary["batch"]["rows_added"] == 3276  # the S3 batch is v0

    bad = reference_frame.assign(Hardness=-1.0).to_csv(index=False).encode()
    s3.put_object(Bucket=s3_bucket_name, Key="incoming/bad.csv", Body=bad)
    with pytest.raises(BatchRejected, match=r"Hardness"):
        train(data=f"s3://{s3_bucket_name}/incoming/bad.csv", trials=1)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket_name)["Contents"]}
    assert "incoming/bad.csv" not in keys
    assert any(k.startswith("quarantine/") and k.endswith("incoming/bad.csv") for k in keys)
    assert any(k.endswith("incoming/bad.csv.reason.json") for k in keys)
    assert len(_versions(settings)) == 1  # only the good batch registered

    with pytest.raises(BatchError, match=r"cannot read s3://.*/incoming/absent.csv"):
        train(data=f"s3://{s3_bucket_name}/incoming/absent.csv", trials=1)


def test_an_arrival_outside_the_landing_area_is_refused_before_anything_is_read(
    prefect_api, settings, tmp_path, s3_bucket_name, moto_endpoint, reference_frame, monkeypatch
) -> None:
    """Whoever can post an event can name any path or object: the flow refuses it unread and unmoved."""
    monkeypatch.setenv("POTABLE_WATCH", f"s3://{s3_bucket_name}/incoming/")
    elsewhere = tmp_path / "secret.csv"
    reference_frame.assign(Hardness=-1.0).to_csv(elsewhere, index=False)  # would be quarantined if read
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.put_object(Bucket=s3_bucket_name, Key="private/bad.csv", Body=elsewhere.read_bytes())
    landing = f"s3://{s3_bucket_name}/incoming/"
    for named in (str(elsewhere), f"file://{elsewhere}", f"s3://{s3_bucket_name}/private/bad.csv", landing + "../x"):
        with pytest.raises(ArrivalRefused, match="outside the landing area"):
            train(data=named, trials=1, arrival=True)
    assert elsewhere.exists() and {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket_name)["Contents"]} == {
        "private/bad.csv"
    }
    assert not (settings.home_dir / "downloads").exists() and not list(settings.quarantine_dir.iterdir())
    refused = [e for e in audit_log(settings).entries() if e["action"] == "arrival_refused"]
    assert len(refused) == 4 and _versions(settings) == []
