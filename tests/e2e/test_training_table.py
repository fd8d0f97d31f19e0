"""The `train` flow on the training table: seeded, small batches appended, bad labels refused before
training, past versions reproduced exactly, scheduled runs that find nothing new end without training."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow import MlflowClient

from core.settings import MODEL_NAME
from core.table import training_table
from core.versions import CHAMPION, ModelRegistry
from flows.training import BatchRejected, train
from governance.audit import audit_log
from tasks.dataset import TableRefused
from tests.batches import remeasured as noisy

pytestmark = pytest.mark.e2e


def _versions(settings) -> int:
    return len(MlflowClient(tracking_uri=settings.tracking_uri).search_model_versions(f"name='{MODEL_NAME}'"))


def test_the_table_grows_by_batches_and_runs_name_their_version(
    prefect_api, settings, reference_frame, write_csv
) -> None:
    first = train(trials=1)  # a new home: the bundled data becomes table version 0, and v1 trains on it
    assert first["dataset_version"] == 0 and first["batch"] is None
    assert first["rows"]["train"] + first["rows"]["evaluation"] == len(reference_frame)

    small = write_csv(noisy(reference_frame.sample(60, random_state=3), 3), "week-1.csv")
    second = train(data=str(small), trials=1)  # 60 rows: accepted and appended, then trained on
    assert second["dataset_version"] == 1 and second["batch"] == {
        "source": str(small),
        "rows": 60,
        "rows_added": 60,
        "duplicates": 0,
    }
    assert second["rows"]["train"] + second["rows"]["evaluation"] == len(reference_frame) + 60
    comparison = second["champion_comparison"]
    assert comparison["rows"] == second["rows"]["evaluation"] and comparison["dataset_version"] == 1

    inverted = write_csv(reference_frame.assign(Potability=1 - reference_frame["Potability"]), "inverted.csv")
    with pytest.raises(BatchRejected, match="come back with the other label"):
        train(data=str(inverted), trials=1)
    table = training_table(settings)
    assert table.latest_version() == 1 and _versions(settings) == 2  # nothing appended, nothing registered
    assert list(settings.quarantine_dir.glob("*/inverted.csv"))
    appended = [e for e in audit_log(settings).entries() if e["action"] == "batch_appended"]
    assert [e["subject"]["dataset_version"] for e in appended] == ["1"]

    # A past version reproduces: same rows, same split, same metrics.
    again = train(dataset_version=0, trials=1)
    assert again["dataset_version"] == 0 and again["data_sha256"] == first["data_sha256"]
    assert again["metrics"] == first["metrics"] and again["threshold"] == first["threshold"]
    with pytest.raises(TableRefused, match=r"no version 7: versions are 0\.\.1"):
        train(dataset_version=7, trials=1)

    # A scheduled run on a table the champion was already trained on ends, named, without training.
    ModelRegistry(settings).move_alias(CHAMPION, second["model_version"])
    state = train(only_if_changed=True, trials=1, return_state=True)
    assert state.name == "Unchanged" and "champion v2 was trained on v1" in state.message
    assert _versions(settings) == 3
    small_two = write_csv(noisy(reference_frame.sample(80, random_state=4), 4), "week-2.csv")
    trained = train(data=str(small_two), only_if_changed=True, trials=1)  # new rows: it trains
    assert trained["dataset_version"] == 2 and _versions(settings) == 4
    assert pd.Series([second["dataset_version"], trained["dataset_version"]]).is_monotonic_increasing
