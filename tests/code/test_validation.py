"""The Great Expectations suite on bad batches: each problem named, with column and examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.data import fetch_batch
from tasks.validation import quarantine_batch, validate_batch


def _validate(frame_or_text, write_csv, settings):
    return validate_batch(fetch_batch(str(write_csv(frame_or_text)), settings), settings)


def _corrupt(frame: pd.DataFrame, column: str, row: int, value) -> pd.DataFrame:
    bad = frame.copy()
    if isinstance(value, str):
        bad[column] = bad[column].astype(object)
    bad.loc[row, column] = value
    return bad


def test_reference_data_passes_and_writes_data_docs(reference_frame, write_csv, settings) -> None:
    report = _validate(reference_frame, write_csv, settings)
    assert report.success, report.failures
    assert report.rows == 3276 and report.evaluated >= 30
    assert report.data_docs.exists() and report.data_docs.read_text().lower().startswith("<!doctype html")


def test_data_docs_need_nothing_from_the_internet(reference_frame, write_csv, settings) -> None:
    """GX's pages load Bootstrap, jQuery and bootstrap-table from CDNs; offline its index showed nothing."""
    site = _validate(reference_frame.head(200), write_csv, settings).data_docs.parent
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 3  # the index, the suite, this batch's result
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"<(script|link|img)[^>]*(src|href)=[\"']https?://", text, re.IGNORECASE), page
        assert "potable-offline.css" in text, page
    (result,) = (site / "validations").rglob("*.html")
    assert "Expectation Validation Result" in result.read_text(encoding="utf-8")
    assert result.relative_to(site).as_posix() in (site / "index.html").read_text(encoding="utf-8")
    assert "table{" in (site / "static" / "styles" / "potable-offline.css").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("column", "value", "expectation", "example"),
    [
        ("ph", 14.7, "expect_column_values_to_be_between [ph]", "14.7"),
        ("ph", -0.5, "expect_column_values_to_be_between [ph]", "-0.5"),
        ("Sulfate", -12.0, "expect_column_values_to_be_between [Sulfate]", "-12.0"),
        ("Turbidity", -1.0, "expect_column_values_to_be_between [Turbidity]", "-1.0"),
        ("Potability", 2, "expect_column_values_to_be_in_set [Potability]", "2"),
        ("Hardness", "hard", "expect_column_values_to_be_in_type_list [Hardness]", "'hard'"),
    ],
)
def test_bad_value_is_named_with_column_and_example(
    reference_frame, write_csv, settings, column, value, expectation, example
) -> None:
    report = _validate(_corrupt(reference_frame, column, 10, value), write_csv, settings)
    assert not report.success
    line = next(f for f in report.failures if f.startswith(expectation))
    assert example in line


def test_missing_extra_and_renamed_columns(reference_frame, write_csv, settings) -> None:
    bad = reference_frame.drop(columns=["Turbidity"]).rename(columns={"Solids": "TDS"}).assign(extra=1)
    report = _validate(bad, write_csv, settings)
    assert not report.success
    assert len(report.failures) == 1, report.failures  # one line, not one per check on absent columns
    assert "missing columns ['Solids', 'Turbidity']" in report.failures[0]
    assert "unexpected columns ['TDS', 'extra']" in report.failures[0]


def test_mostly_missing_column(reference_frame, write_csv, settings) -> None:
    bad = reference_frame.copy()
    bad.loc[: len(bad) // 2, "Sulfate"] = np.nan
    report = _validate(bad, write_csv, settings)
    assert [f for f in report.failures if "expect_column_values_to_not_be_null [Sulfate]" in f and "missing" in f]


def test_too_many_duplicate_rows(reference_frame, write_csv, settings) -> None:
    bad = pd.concat([reference_frame, reference_frame.head(100)], ignore_index=True)
    report = _validate(bad, write_csv, settings)
    assert any("rows are duplicated" in f for f in report.failures)


def test_header_only_fails_on_row_count(reference_frame, write_csv, settings) -> None:
    report = _validate(reference_frame.head(0), write_csv, settings)
    assert report.failures == ["expect_table_row_count_to_be_between: 0 rows, need at least 1"]


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "is empty"), (b"\x89PNG\r\n\x1a\n\x00\x00binary", "not a"), ('{"ph": [7.0]}\n', "not a comma-separated CSV")],
)
def test_unreadable_or_non_csv_files(write_csv, settings, content, message) -> None:
    report = _validate(content, write_csv, settings)
    assert not report.success and any(message in f for f in report.failures)


def test_quarantine_moves_a_batch_out_of_the_landing_area_with_a_reason_file(reference_frame, settings) -> None:
    landing = Path(settings.landing)
    landing.mkdir(parents=True)
    _corrupt(reference_frame, "ph", 3, 99.0).to_csv(landing / "arrived.csv", index=False)
    batch = fetch_batch(str(landing / "arrived.csv"), settings)
    report = validate_batch(batch, settings)
    quarantined = quarantine_batch(batch, report, settings)
    assert quarantined.moved and not batch.path.exists() and Path(quarantined.where).exists()
    assert Path(quarantined.where).is_relative_to(settings.quarantine_dir)
    reason = json.loads((Path(quarantined.where).parent / "reason.json").read_text())
    assert reason["sha256"] == batch.sha256 and reason["failures"] == report.failures


def test_quarantine_only_copies_a_file_a_person_named_elsewhere(reference_frame, write_csv, settings) -> None:
    path = write_csv(_corrupt(reference_frame, "ph", 3, 99.0))  # outside POTABLE_HOME and the landing area
    before = path.read_bytes()
    batch = fetch_batch(str(path), settings)
    quarantined = quarantine_batch(batch, validate_batch(batch, settings), settings)
    assert not quarantined.moved and path.read_bytes() == before  # the user's file stays where it is
    assert Path(quarantined.where).read_bytes() == before and "original left in place" in str(quarantined)


def test_worker_result_is_used_for_the_same_bytes(reference_frame, write_csv, settings, monkeypatch) -> None:
    from core import expectations

    path = write_csv(reference_frame.assign(Turbidity=-2.0))
    assert expectations.start_prevalidation(str(path), settings)

    def no_in_process_run(*args, **kwargs):
        raise AssertionError("validated in-process although a worker result was ready")

    monkeypatch.setattr(expectations, "run_expectations", no_in_process_run)
    report = validate_batch(fetch_batch(str(path), settings), settings)
    assert not report.success and any("[Turbidity]" in f and "-2.0" in f for f in report.failures)


def test_worker_result_is_ignored_when_the_bytes_changed(reference_frame, write_csv, settings) -> None:
    from core import expectations

    path = write_csv(reference_frame)
    assert expectations.start_prevalidation(str(path), settings)
    reference_frame.assign(ph=20.0).to_csv(path, index=False)  # the batch changed after the worker started
    report = validate_batch(fetch_batch(str(path), settings), settings)
    assert not report.success and any("[ph]" in f for f in report.failures)
    for stale in expectations._started.values():  # let the unused worker finish before the test ends
        stale.result(timeout=300)
    expectations._started.clear()


def test_no_worker_for_s3_or_absent_files(settings, tmp_path) -> None:
    from core import expectations

    assert not expectations.start_prevalidation("s3://bucket/key.csv", settings)
    assert not expectations.start_prevalidation(str(tmp_path / "absent.csv"), settings)


def test_an_absurd_header_is_refused_before_parsing(write_csv, settings) -> None:
    """A million-column header used to take minutes and gigabytes; the bounded header check refuses it at once."""
    import time

    header = ",".join(f"c{i}" for i in range(1_000_000))
    path = write_csv(header + "\n" + ",".join("1" for _ in range(1_000_000)) + "\n")
    started = time.monotonic()
    report = validate_batch(fetch_batch(str(path), settings), settings)
    assert not report.success and time.monotonic() - started < 10
    assert any("header row longer than 64 KB" in f for f in report.failures)
    assert sum(len(f) for f in report.failures) < 500  # the message does not list a million names
    wide = write_csv(",".join(f"c{i}" for i in range(5_000)) + "\n" + ",".join("1" for _ in range(5_000)) + "\n")
    report = validate_batch(fetch_batch(str(wide), settings), settings)
    assert any("header has 5000 columns" in f for f in report.failures)


def test_a_batch_over_the_size_limits_is_refused_before_parsing(
    reference_frame, write_csv, settings, tmp_path, monkeypatch
) -> None:
    """Row and byte limits are checked on the raw file, so the parse (and its memory) never happens."""
    import yaml

    from core.settings import CONFIG_DIR

    rules = yaml.safe_load((CONFIG_DIR / "validation.yaml").read_text(encoding="utf-8"))
    rules.update(max_rows=1000, max_bytes=10_000_000)
    (tmp_path / "validation.yaml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    monkeypatch.setenv("POTABLE_VALIDATION_CONFIG", str(tmp_path / "validation.yaml"))
    from core.settings import Settings

    settings = Settings()
    many = fetch_batch(str(write_csv(reference_frame.head(1500), "many.csv")), settings)
    report = validate_batch(many, settings)
    assert not report.success and report.failures == [
        "batch too large: many.csv: more than 1,000 rows, over the limit (configs/validation.yaml max_rows)"
    ]
    rules.update(max_bytes=50_000)
    (tmp_path / "small-files.yaml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    monkeypatch.setenv("POTABLE_VALIDATION_CONFIG", str(tmp_path / "small-files.yaml"))
    settings = Settings()
    big = fetch_batch(str(write_csv(reference_frame.head(900), "big.csv")), settings)
    report = validate_batch(big, settings)
    assert not report.success and "over the limit of 50,000 (configs/validation.yaml max_bytes)" in report.failures[0]
    assert report.rows == 0 and report.data_docs is None  # refused before GX read a row
