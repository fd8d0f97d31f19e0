"""The label check (core/labels.py): careless and hostile batches refused, honest ones accepted."""

from __future__ import annotations

import numpy as np
import pytest

from core import configs
from core.labels import check_labels, wilson_bounds
from core.settings import FEATURES
from core.table import TrainingTable
from tests.batches import remeasured as noisy
from tests.code.test_table import DECIMALS


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, reference_frame):
    table = TrainingTable(str(tmp_path_factory.mktemp("labels") / "table"), DECIMALS, 0.2)
    table.append(reference_frame, "s" * 64, "bundled.csv")
    return table, table.read().frame


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    from core.settings import Settings

    return configs.validation(Settings()).label_quality.rules()


def judge(seeded, rules, batch):
    table, frame = seeded
    return check_labels(table.rows_for(batch, "b" * 64), frame, rules)


def test_honest_small_batches_are_accepted(seeded, rules, reference_frame) -> None:
    for seed in range(3):
        report = judge(seeded, rules, noisy(reference_frame.sample(60, random_state=seed), seed))
        assert report.success, report.failures
        assert report.figures["batch_rows"] == 60 and 0.1 < report.figures["table_issue_share"] < 0.45


def test_inverted_labels_are_refused_in_a_copy_and_in_new_rows(seeded, rules, reference_frame) -> None:
    copy = reference_frame.assign(Potability=1 - reference_frame["Potability"])
    report = judge(seeded, rules, copy)
    assert not report.success
    assert any("3276 of 3276 rows already in the table come back with the other label" in f for f in report.failures)
    small = noisy(reference_frame.sample(60, random_state=9), 9)
    small["Potability"] = 1 - small["Potability"]
    report = judge(seeded, rules, small)
    assert not report.success and any("contradicted by the table" in f for f in report.failures)
    assert "e.g. Potability=" in " ".join(report.failures)  # example rows are quoted


def test_forty_percent_flipped_and_all_zero_labels_are_refused(seeded, rules, reference_frame) -> None:
    rng = np.random.default_rng(4)
    flipped = reference_frame.copy()
    flip = rng.random(len(flipped)) < 0.4
    flipped.loc[flip, "Potability"] = 1 - flipped.loc[flip, "Potability"]
    assert not judge(seeded, rules, flipped).success
    assert not judge(seeded, rules, noisy(flipped, 5)).success  # the same with new content: cleanlab sees it
    zeros = noisy(reference_frame.sample(60, random_state=2), 2).assign(Potability=0)
    report = judge(seeded, rules, zeros)
    assert not report.success and any("0.0% of the batch is labelled potable" in f for f in report.failures)


def test_a_new_table_has_nothing_to_compare_with(rules, reference_frame) -> None:
    table = TrainingTable("unused", DECIMALS, 0.2)
    rows = table.rows_for(reference_frame.head(60), "x")
    report = check_labels(rows, rows.iloc[:0], rules)
    assert report.success and "labels not compared" in report.summary()


def test_wilson_bounds() -> None:
    low, high = wilson_bounds(0, 60, 0.99)
    assert low == 0.0 and 0.05 < high < 0.1
    assert wilson_bounds(30, 60, 0.95)[0] == pytest.approx(1 - wilson_bounds(30, 60, 0.95)[1])
    assert FEATURES
