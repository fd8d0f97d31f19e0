"""Data tests: the bundled reference batch meets the GX suite and matches its documented profile."""

from __future__ import annotations

import re

import pytest

from core import configs
from core.settings import BUNDLED_DATA, COLUMNS
from tasks.data import fetch_batch, file_sha256
from tasks.validation import validate_batch


def test_bundled_data_meets_the_expectation_suite(settings) -> None:
    report = validate_batch(fetch_batch(str(BUNDLED_DATA), settings), settings)
    assert report.success, report.failures


def test_bundled_data_matches_its_readme(reference_frame) -> None:
    readme = (BUNDLED_DATA.parent / "README.md").read_text()
    assert re.search(r"sha256 `([0-9a-f]{64})`", readme).group(1) == file_sha256(BUNDLED_DATA)
    assert "CC0" in readme
    assert tuple(reference_frame.columns) == COLUMNS and len(reference_frame) == 3276
    assert reference_frame["Potability"].value_counts().to_dict() == {0: 1998, 1: 1278}


@pytest.mark.parametrize(("column", "share"), [("ph", 0.15), ("Sulfate", 0.24), ("Trihalomethanes", 0.05)])
def test_missing_shares_sit_inside_the_configured_bounds(reference_frame, settings, column, share) -> None:
    observed = reference_frame[column].isna().mean()
    allowed = configs.validation(settings).columns[column].max_missing
    assert observed == pytest.approx(share, abs=0.01)
    assert observed < allowed - 0.05, "margin between the reference and the bound has shrunk"


def test_physical_bounds_hold_with_margin(reference_frame, settings) -> None:
    rules = configs.validation(settings).rules()["columns"]
    for column, bounds in rules.items():
        values = reference_frame[column].dropna()
        assert values.min() >= bounds["min"] and values.max() <= bounds["max"], column
    assert reference_frame.duplicated().sum() == 0
