"""Lineage end to end: a version trained on a batch other than the bundled one is checked against *that* batch.

The batch is an S3 object (moto) with ph shifted and a third of the rows dropped; after training, the
local download is deleted, so every consumer must read the batch back through MLflow: the ONNX parity
check while packaging, the drift monitor's reference and the release's golden rows.
"""

from __future__ import annotations

import shutil

import boto3
import numpy as np
import pandas as pd
import pytest
import yaml

from core.lineage import CONTEXT, training_batch
from core.settings import BUNDLED_DATA, CONFIG_DIR, FEATURES
from core.versions import ModelRegistry
from flows.monitoring import training_reference
from flows.training import train
from tasks.data import file_sha256
from tasks.release_evidence import judging_evidence

pytestmark = pytest.mark.e2e
PH_SHIFT = 0.75


@pytest.fixture
def shifted_batch(tmp_path, s3_bucket_name, moto_endpoint) -> tuple[str, pd.DataFrame, str]:
    frame = pd.read_csv(BUNDLED_DATA).sample(frac=2 / 3, random_state=5).reset_index(drop=True)
    frame["ph"] = (frame["ph"] + PH_SHIFT).clip(upper=14.0)
    path = tmp_path / "shifted.csv"
    frame.to_csv(path, index=False)
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").upload_file(
        str(path), s3_bucket_name, "batches/shifted.csv"
    )
    return f"s3://{s3_bucket_name}/batches/shifted.csv", pd.read_csv(path), file_sha256(path)


@pytest.fixture
def lenient_policy(tmp_path, monkeypatch) -> None:
    """The gate is not what this test checks: limits wide enough that the smaller batch is packaged."""
    policy = yaml.safe_load((CONFIG_DIR / "policy.yaml").read_text(encoding="utf-8"))
    for rule in policy["rules"]:
        if rule["op"] in ("<=", ">=") and isinstance(rule["limit"], float):
            rule["limit"] = 1.0 if rule["op"] == "<=" else 0.0
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    monkeypatch.setenv("POTABLE_POLICY_CONFIG", str(tmp_path / "policy.yaml"))


def test_every_consumer_reads_the_versions_own_batch(
    prefect_api, settings, shifted_batch, lenient_policy, monkeypatch
) -> None:
    uri, frame, sha256 = shifted_batch
    monkeypatch.setenv("POTABLE_SEED_DATA", "none")  # the table starts from this batch alone
    summary = train(data=uri, trials=2)
    assert summary["gate_passed"] and summary["bento_tag"], summary["gate_failures"]
    shutil.rmtree(settings.home_dir / "downloads")  # nothing may read the batch from this disk any more

    registry = ModelRegistry(settings)
    record = registry.get(summary["model_version"])
    assert record.dataset_version == summary["dataset_version"] == 0 and record.table_uri == settings.table

    # The run carries the table version as its `training` dataset input, and the rows it used.
    run = registry.client.get_run(record.run_id)
    inputs = run.inputs.dataset_inputs
    (given,) = [i for i in inputs if {t.key: t.value for t in i.tags}["mlflow.data.context"] == CONTEXT]
    assert f"{settings.table}@v0" in given.dataset.source
    stored = training_batch(record.run_id)
    assert stored.sha256 == record.data_sha256 != file_sha256(BUNDLED_DATA) and stored.dataset_version == 0
    assert set(stored.frame["batch_sha256"]) == {sha256}  # every row came from this batch
    as_rows = {tuple(np.round(r, 6)) for r in frame[list(FEATURES)].fillna(-1).to_numpy()}
    assert {tuple(np.round(r, 6)) for r in stored.features.fillna(-1).to_numpy()} == as_rows

    # ONNX parity ran on the version's own rows (all of them), not on the bundled data's 3,276.
    assert record.serving_runtime == f"onnx (parity {record.serving_runtime.split()[2]} on {len(frame)} rows)"

    # Drift reference: the served version's training rows, ph shifted as trained.
    reference, share = training_reference.fn(settings, record.version)
    assert len(reference) == len(frame) and 0.0 < share < 1.0
    assert reference["ph"].mean() == pytest.approx(frame["ph"].mean())

    # Release golden rows: the version's own evaluation rows, each row from the batch.
    judging = judging_evidence.fn(record, 25, None, settings)
    golden, expected, hold_out_share = judging.golden, judging.expected, judging.expected_share
    assert judging.replaced is None  # nothing live to compare with
    assert len(golden) == 25 and len(expected) == 25 and 0.0 < hold_out_share < 1.0
    batch_rows = {tuple(np.round(r, 6)) for r in frame[list(FEATURES)].fillna(-1).to_numpy()}
    assert all(tuple(np.round(r, 6)) in batch_rows for r in golden[list(FEATURES)].fillna(-1).to_numpy())
    model = registry.load_model(record.version)
    np.testing.assert_allclose(model.predict_proba(golden)[:, 1], expected)
