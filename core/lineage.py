"""A version's training batch, kept with its MLflow run: logged once at training, read back by every consumer.

The run gets the batch as a dataset input (context `training`, source = the batch URI) and the file
itself as an artifact, so drift monitoring, ONNX parity and the release's golden rows use the data the
version was really trained on — for local and s3:// batches alike, on any machine that reaches the
tracking store — and never whatever happens to be on this disk.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

from core.batches import Batch, BatchError, read_batch
from core.settings import FEATURES

CONTEXT = "training"
ARTIFACT = "training_data/batch.csv"
# MLflow keeps dataset digests in a 36-character column; the full hash rides along as an input tag.
DIGEST_LENGTH = 36


class LineageMissing(LookupError):
    """The run has no training batch recorded (or the stored copy does not match its hash)."""


@dataclass(frozen=True)
class TrainingBatch:
    source: str
    sha256: str
    frame: pd.DataFrame

    @property
    def features(self) -> pd.DataFrame:
        return self.frame.loc[:, list(FEATURES)].astype("float64")


def log_training_batch(batch: Batch, frame: pd.DataFrame) -> None:
    """In the active run: the batch file as an artifact, and as the run's `training` dataset input."""
    with tempfile.TemporaryDirectory(prefix="batch-") as tmp:
        stored = Path(tmp) / Path(ARTIFACT).name  # one fixed name: a consumer need not know the file's own
        shutil.copyfile(batch.path, stored)
        mlflow.log_artifact(str(stored), artifact_path=str(Path(ARTIFACT).parent))
    dataset = mlflow.data.from_pandas(
        frame, source=batch.uri, name=Path(batch.uri).name, digest=batch.sha256[:DIGEST_LENGTH], targets="Potability"
    )
    mlflow.log_input(dataset, context=CONTEXT, tags={"data_sha256": batch.sha256, "data_uri": batch.uri})


def training_batch(run_id: str) -> TrainingBatch:
    """The batch the run trained on, checked against the hash recorded with it."""
    run = MlflowClient().get_run(run_id)
    inputs = [
        i
        for i in (run.inputs.dataset_inputs if run.inputs else [])
        if {t.key: t.value for t in i.tags}.get("mlflow.data.context") == CONTEXT
    ]
    if not inputs:
        raise LineageMissing(f"run {run_id} has no `{CONTEXT}` dataset input: it was trained before lineage was kept")
    tags = {t.key: t.value for t in inputs[0].tags}
    expected = tags.get("data_sha256", "")
    try:
        path = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ARTIFACT))
    except Exception as exc:  # MLflow raises several types for a missing artifact
        raise LineageMissing(f"run {run_id}: the training batch artifact {ARTIFACT} is missing ({exc})") from exc
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if expected and actual != expected:
        raise LineageMissing(f"run {run_id}: stored training batch hashes to {actual[:12]}, recorded {expected[:12]}")
    try:
        frame = read_batch(path)
    except BatchError as exc:
        raise LineageMissing(f"run {run_id}: stored training batch unreadable: {exc}") from exc
    return TrainingBatch(source=tags.get("data_uri", ""), sha256=actual, frame=frame)
