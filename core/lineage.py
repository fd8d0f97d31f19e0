"""A version's rows, kept with its MLflow run: logged once at training, read back by every consumer.

The run gets the training table version as a dataset input (context `training`, source =
`<table uri>@v<version>`, digest = the version's content digest) and the rows it used (train and
evaluation, with their `split`) as an artifact, so tuning shares on other workers, drift monitoring,
ONNX parity and the release's golden rows use the rows the version was really trained and judged on —
on any machine that reaches the tracking store — and never whatever the table or this disk holds now.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

from core.batches import BatchError, read_batch
from core.settings import FEATURES, LABEL

CONTEXT = "training"
ARTIFACT = "training_data/rows.csv"
# MLflow keeps dataset digests in a 36-character column; the full hash rides along as an input tag.
DIGEST_LENGTH = 36


class LineageMissing(LookupError):
    """The run has no training batch recorded (or the stored copy does not match its hash)."""


@dataclass(frozen=True)
class TrainingBatch:
    """The rows a version used: `split` says which it fitted on (`train`) and which judged it."""

    source: str
    sha256: str
    frame: pd.DataFrame
    dataset_version: int | None = None

    @property
    def features(self) -> pd.DataFrame:
        return self.frame.loc[:, list(FEATURES)].astype("float64")

    def part(self, split: str) -> pd.DataFrame:
        if "split" not in self.frame:
            return self.frame
        return self.frame[self.frame["split"] == split]


def log_training_rows(rows: pd.DataFrame, table_uri: str, version: int, digest: str) -> str:
    """In the active run: the rows as an artifact and the table version as the `training` dataset input.
    Returns the sha256 of the stored rows (what `training_batch` checks on reading them back)."""
    columns = ["row_id", *FEATURES, LABEL, "split", "batch_sha256"]
    with tempfile.TemporaryDirectory(prefix="rows-") as tmp:
        stored = Path(tmp) / Path(ARTIFACT).name
        rows.loc[:, columns].to_csv(stored, index=False)
        sha256 = hashlib.sha256(stored.read_bytes()).hexdigest()
        mlflow.log_artifact(str(stored), artifact_path=str(Path(ARTIFACT).parent))
    source = f"{table_uri}@v{version}"
    dataset = mlflow.data.from_pandas(
        rows.loc[:, [*FEATURES, LABEL, "split"]],
        source=source,
        name=f"training-table-v{version}",
        digest=digest[:DIGEST_LENGTH],
        targets=LABEL,
    )
    tags = {"data_sha256": sha256, "data_uri": source, "dataset_version": str(version), "table_digest": digest}
    mlflow.log_input(dataset, context=CONTEXT, tags=tags)
    return sha256


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
    version = tags.get("dataset_version")
    return TrainingBatch(tags.get("data_uri", ""), actual, frame, int(version) if version else None)
