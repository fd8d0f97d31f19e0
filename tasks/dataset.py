"""The training table stage: seed a new table, check a batch's labels, append it, read a version to train on.

Plain functions do the work (tested without Prefect); the `@task` wrappers name them in the run's graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from core.batches import Batch, BatchError
from core.labels import LabelReport, check_labels
from core.settings import FEATURES, LABEL, Settings
from core.table import Appended, TableError, TableVersion, TrainingTable, training_table
from governance.audit import audit_log
from tasks.data import Split

__all__ = ["TableRefused", "training_table", "seed_table", "check_batch_labels", "append_batch", "read_training_rows"]


class TableRefused(Exception):
    """The table cannot give a run what it needs (no such version, too few rows, damaged files)."""


@dataclass(frozen=True)
class TrainingRows:
    """The rows a run uses: a verified table version, after the history window and the size cap."""

    uri: str
    version: int
    digest: str
    frame: pd.DataFrame  # row_id, features, label, split, batch_sha256
    table_rows: int  # rows in the version before window and cap
    note: str = ""

    def split(self) -> Split:
        return split_rows(self.frame)

    def counts(self) -> dict[str, int]:
        split = self.frame["split"]
        return {"train": int((split == "train").sum()), "evaluation": int((split == "evaluation").sum())}


def split_rows(frame: pd.DataFrame) -> Split:
    """Train and evaluation parts as the table assigned them (never re-drawn per run)."""
    train, evaluation = frame[frame["split"] == "train"], frame[frame["split"] == "evaluation"]

    def xy(part: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
        return part.loc[:, list(FEATURES)].astype("float64"), part[LABEL].astype("int64")

    (X_train, y_train), (X_test, y_test) = xy(train), xy(evaluation)
    return Split(X_train, X_test, y_train, y_test)


def seed_table(table: TrainingTable, batch: Batch, frame: pd.DataFrame, settings: Settings, actor: str) -> Appended:
    """A new table's first version: the seed data (bundled, POTABLE_SEED_DATA, or `potable data init`)."""
    if table.exists():
        raise TableRefused(f"the training table at {table.uri} already has versions 0..{table.latest_version()}")
    appended = table.append(frame, batch.sha256, batch.uri)
    audit_log(settings).append(
        actor,
        "table_seeded",
        {"data_sha256": batch.sha256, "dataset_version": str(appended.version)},
        {"source": batch.uri, "table": table.uri, "rows_added": appended.rows_added, "duplicates": appended.duplicates},
    )
    return appended


def check_batch_labels(table: TrainingTable, frame: pd.DataFrame, batch_sha256: str, settings: Settings) -> LabelReport:
    from core import configs

    rules = configs.validation(settings).label_quality.rules()
    rows = table.rows_for(frame, batch_sha256)
    reference = table.read().frame if table.exists() else rows.iloc[:0]
    return check_labels(rows, reference, rules)


def append_batch(table: TrainingTable, batch: Batch, frame: pd.DataFrame, labels: str, settings: Settings) -> Appended:
    """Append a batch that passed the gate; the audit entry names the version it made (or kept)."""
    appended = table.append(frame, batch.sha256, batch.uri)
    audit_log(settings).append(
        "train-flow",
        "batch_appended",
        {"data_sha256": batch.sha256, "dataset_version": str(appended.version)},
        {
            "source": batch.uri,
            "table": table.uri,
            "committed": appended.committed,
            "batch_rows": appended.batch_rows,
            "rows_added": appended.rows_added,
            "duplicates": appended.duplicates,
            "labels": labels,
        },
    )
    return appended


def read_training_rows(table: TrainingTable, version: int | None, data_rules: dict[str, Any]) -> TrainingRows:
    """Read and verify a version, apply the history window, cap the size; refuse what cannot be trained."""
    history = data_rules["history"]
    if not table.exists():
        raise TableRefused(
            f"no training table at {table.uri} yet: give a batch (--data), start it with `potable data init FILE`, "
            "or let POTABLE_SEED_DATA name its first version"
        )
    try:
        rows: TableVersion = table.read(version, history["last_versions"], history["last_days"])
    except TableError as exc:
        raise TableRefused(str(exc)) from exc
    frame, note = rows.frame, ""
    cap = data_rules["max_training_rows"]
    if len(frame) > cap:
        # Deterministic for a version: the rows whose ids come first (ids are hashes, so a fair sample).
        frame = frame.iloc[np.sort(np.argsort(frame["row_id"].to_numpy(), kind="stable")[:cap])]
        note = (
            f"table v{rows.version} has {len(rows.frame)} rows; trained on a fixed sample of {cap} (max_training_rows)"
        )
    train_rows = int((frame["split"] == "train").sum())
    if train_rows < data_rules["min_training_rows"]:
        window = "" if history["last_versions"] is None and history["last_days"] is None else " in the history window"
        raise TableRefused(
            f"table v{rows.version} has {train_rows} train rows{window}; {data_rules['min_training_rows']} needed "
            "to train (configs/training.yaml data.min_training_rows): append more batches"
        )
    if frame[LABEL].nunique() < 2:
        raise TableRefused(f"table v{rows.version} holds only one label class: nothing to learn")
    return TrainingRows(rows.uri, rows.version, rows.digest, frame.reset_index(drop=True), rows.total_rows, note)


@task(name="seed-table", cache_policy=NO_CACHE)
def seed_table_task(table: TrainingTable, batch: Batch, frame: pd.DataFrame, settings: Settings) -> Appended:
    return seed_table(table, batch, frame, settings, "train-flow")


@task(name="check-labels", cache_policy=NO_CACHE)
def check_labels_task(table: TrainingTable, frame: pd.DataFrame, batch_sha256: str, settings: Settings) -> LabelReport:
    return check_batch_labels(table, frame, batch_sha256, settings)


@task(name="append-batch", cache_policy=NO_CACHE)
def append_batch_task(
    table: TrainingTable, batch: Batch, frame: pd.DataFrame, labels: str, settings: Settings
) -> Appended:
    return append_batch(table, batch, frame, labels, settings)


@task(name="read-table-version", cache_policy=NO_CACHE)
def read_training_rows_task(table: TrainingTable, version: int | None, data_rules: dict[str, Any]) -> TrainingRows:
    return read_training_rows(table, version, data_rules)


__all__ += ["BatchError", "TrainingRows", "split_rows", "training_table"]
