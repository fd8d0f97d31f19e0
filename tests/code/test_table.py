"""The training table (core/table.py) on a real Delta Lake table: versions, dedup, splits, tampering, S3."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from core.settings import BUNDLED_DATA, FEATURES, PROJECT_ROOT
from core.table import TableDamaged, TableVersionMissing, TrainingTable
from tests.batches import remeasured as noisy

DECIMALS = {name: 2 for name in FEATURES}


@pytest.fixture
def table(tmp_path: Path) -> TrainingTable:
    return TrainingTable(str(tmp_path / "table"), DECIMALS, 0.2)


def test_a_re_export_with_other_rounding_adds_only_the_new_rows(table, reference_frame) -> None:
    first = reference_frame.sample(frac=0.75, random_state=1)
    assert table.append(first, "a" * 64, "first.csv").rows_added == len(first)
    re_export = reference_frame.copy()
    re_export[list(FEATURES)] = re_export[list(FEATURES)].round(2)  # the same results, rounded by the exporter
    appended = table.append(re_export, "b" * 64, "all-rounded.csv")
    assert (appended.version, appended.rows_added) == (1, len(reference_frame) - len(first))
    assert appended.duplicates == len(first) and appended.conflicts == 0

    log = [c.as_dict() for c in table.log()]
    assert [(c["version"], c["rows_added"], c["rows_total"]) for c in log] == [
        (0, len(first), len(first)),
        (1, len(reference_frame) - len(first), len(reference_frame)),
    ]
    assert log[1]["batch_sha256"] == "b" * 64 and log[1]["source"] == "all-rounded.csv" and log[1]["duplicates"]
    again = table.append(re_export, "b" * 64, "all-rounded.csv")  # the same batch twice: nothing new, no version
    assert not again.committed and again.version == 1 and table.latest_version() == 1


def test_each_row_keeps_its_side_whichever_batch_brings_it(tmp_path, reference_frame) -> None:
    one, two = (TrainingTable(str(tmp_path / n), DECIMALS, 0.2) for n in ("one", "two"))
    one.append(reference_frame, "a" * 64, "all.csv")
    shuffled = reference_frame.sample(frac=1, random_state=3)
    for start in range(0, len(shuffled), 900):
        two.append(shuffled.iloc[start : start + 900], "c" * 64, "part.csv")
    left, right = one.read().frame, two.read().frame
    assert list(left["row_id"]) == list(right["row_id"]) and list(left["split"]) == list(right["split"])
    assert one.read().digest == two.read().digest  # same content, same digest, however it arrived
    share = (left["split"] == "evaluation").mean()
    assert 0.17 < share < 0.23


def test_time_travel_window_and_a_missing_version(table, reference_frame) -> None:
    table.append(reference_frame.iloc[:2000], "a" * 64, "a.csv")
    for n in range(3):
        table.append(noisy(reference_frame.iloc[2000 + 100 * n : 2100 + 100 * n], n), f"{n}" * 64, f"b{n}.csv")
    assert len(table.read(0).frame) == 2000 and len(table.read(2).frame) == 2200 and table.read().version == 3
    window = table.read(3, last_versions=2)
    assert len(window.frame) == 200 and set(window.frame["batch_sha256"]) == {"1" * 64, "2" * 64}
    with pytest.raises(TableVersionMissing, match=r"no version 9: versions are 0\.\.3"):
        table.read(9)
    shown = table.show(1)
    assert shown["rows"] == 2100 and [b["rows"] for b in shown["batches"]] == [2000, 100]
    assert table.diff(1, 3)["rows_added"] == 200


def test_files_edited_or_deleted_outside_the_platform_are_named(table, reference_frame) -> None:
    table.append(reference_frame, "a" * 64, "a.csv")
    table.append(noisy(reference_frame.head(100), 1), "b" * 64, "b.csv")
    files = sorted(Path(table.uri).glob("*.parquet"), key=lambda p: p.stat().st_mtime)
    edited = pq.read_table(files[0]).to_pandas()
    edited["Potability"] = 1 - edited["Potability"]  # someone "fixes" the labels by hand
    pq.write_table(pq.read_table(files[0]).from_pandas(edited, preserve_index=False), files[0])
    with pytest.raises(TableDamaged, match="table version 1 at .*(do not match their hashes|holds|cannot be read)"):
        table.read(1)
    files[-1].unlink()
    with pytest.raises(TableDamaged, match="table version 1"):
        table.read(1)


def test_two_processes_appending_at_once_make_two_commits_and_lose_nothing(table, reference_frame, tmp_path) -> None:
    table.append(reference_frame.iloc[:1000], "a" * 64, "seed.csv")
    script = (
        "import sys, pandas as pd\n"
        "from core.table import TrainingTable\n"
        "from core.settings import FEATURES\n"
        "t = TrainingTable(sys.argv[1], {f: 2 for f in FEATURES}, 0.2)\n"
        "a = t.append(pd.read_csv(sys.argv[2]), sys.argv[3], sys.argv[2])\n"
        "print(a.version, a.rows_added)\n"
    )
    batches = []
    for n in range(2):
        path = tmp_path / f"batch{n}.csv"
        noisy(reference_frame.iloc[1000 + 150 * n : 1150 + 150 * n], n).to_csv(path, index=False)
        batches.append(path)
    procs = [
        subprocess.Popen(  # noqa: S603 - our interpreter, fixed argv
            [sys.executable, "-c", script, table.uri, str(p), f"{n}" * 64],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n, p in enumerate(batches)
    ]
    outputs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(int(o[0]) for o in outputs) == [1, 2] and all(int(o[1]) == 150 for o in outputs)
    assert len(table.read().frame) == 1300 and [c.rows_total for c in table.log()] == [1000, 1150, 1300]


@pytest.fixture
def moto_process(settings, monkeypatch):
    """moto in server mode in its own process: delta-rs calls S3 while holding the GIL, so an in-process
    (threaded) moto server could never answer it."""
    import boto3

    from tests.conftest import free_port
    from tests.processes import stop_group

    port = free_port()
    server = subprocess.Popen(  # noqa: S603 - moto's own server script from this venv
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POTABLE_S3_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        for _ in range(100):
            try:
                client.create_bucket(Bucket="training-tables")
                break
            except Exception:  # noqa: BLE001 - not listening yet
                import time

                time.sleep(0.1)
        yield endpoint
    finally:
        stop_group(server, grace=5)


def test_the_same_code_path_on_s3(moto_process, reference_frame, monkeypatch) -> None:
    from core.settings import get_settings
    from core.table import storage_options, training_table

    monkeypatch.setenv("POTABLE_TABLE_URI", "s3://training-tables/tables/water")
    s3_settings = get_settings()
    assert storage_options(s3_settings)["AWS_ENDPOINT_URL"] == moto_process
    table = training_table(s3_settings)
    table.append(reference_frame.iloc[:500], "a" * 64, "a.csv")
    table.append(noisy(reference_frame.iloc[500:560], 2), "b" * 64, "b.csv")
    assert [c.rows_total for c in table.log()] == [500, 560] and len(table.read(1).frame) == 560


def test_bundled_data_has_no_duplicate_rows_at_measurement_precision() -> None:
    frame = pd.read_csv(BUNDLED_DATA)
    rows = TrainingTable("unused", DECIMALS, 0.2).rows_for(frame, "x")
    assert len(rows) == len(frame)
