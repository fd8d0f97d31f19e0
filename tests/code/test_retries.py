"""Retries: a fault of a store is tried again, a refusal is not (tasks/retries.py)."""

from __future__ import annotations

import pytest
from prefect.states import Failed

from core.lineage import LineageMissing
from flows.monitoring import training_reference
from flows.release import ReleaseRefused, publish_image
from tasks.data import BatchError, BatchUnreachable, load_batch
from tasks.registry import register_model_task
from tasks.release_evidence import judging_evidence
from tasks.retries import retry_unless


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (BatchUnreachable("s3 endpoint refused the connection"), True),
        (ConnectionError("connection reset"), True),
        (TimeoutError("read timed out"), True),
        (BatchError("input file not found"), False),
        (TypeError("not fields of a model version record"), False),
    ],
)
def test_only_faults_of_a_store_are_retried(error: Exception, retried: bool) -> None:
    assert retry_unless(BatchError)(None, None, Failed(data=error)) is retried


@pytest.mark.parametrize(
    ("task", "refusal"),
    [
        (load_batch, BatchError),
        (judging_evidence, LineageMissing),
        (publish_image, ReleaseRefused),
        (training_reference, None),
    ],
)
def test_io_tasks_carry_the_retry_policy(task, refusal) -> None:
    assert task.retries == 2 and task.retry_condition_fn is not None
    if refusal is not None:
        assert task.retry_condition_fn(None, None, Failed(data=refusal("no"))) is False
    assert task.retry_condition_fn(None, None, Failed(data=OSError("store unreachable"))) is True


def test_registration_is_retried_as_a_whole() -> None:
    assert register_model_task.retries == 2


def test_a_store_failure_names_the_store_without_its_password(monkeypatch) -> None:
    from core.settings import Settings
    from tasks.registry import store_name

    monkeypatch.delenv("POTABLE_MLFLOW_TRACKING_URI", raising=False)  # MLflow's own name wins over ours
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql+psycopg2://mlflow:s3cret@db.internal:5432/mlflow")
    assert store_name(Settings()) == "postgresql+psycopg2://mlflow:***@db.internal:5432/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://user:s3cret@mlflow.internal/")
    assert "s3cret" not in store_name(Settings()) and "mlflow.internal" in store_name(Settings())
