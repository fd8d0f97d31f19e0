"""Policy rules, slice computation and champion-vs-challenger decisions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import configs
from core.settings import CONFIG_DIR
from governance.champion import compare_with_champion
from governance.policy import evaluate_policy
from governance.slices import assess_slices, slice_labels

POLICY = configs.load(CONFIG_DIR / "policy.yaml", configs.Policy).rules()
GOOD = {
    "roc_auc": 0.70,
    "false_potable_rate": 0.20,
    "brier": 0.21,
    "slice_roc_auc_gap": 0.10,
    "data_validation_passed": True,
    "model_card_present": True,
}
BAD = {
    "roc_auc": 0.52,
    "false_potable_rate": 0.45,
    "brier": 0.30,
    "slice_roc_auc_gap": 0.40,
    "data_validation_passed": False,
    "model_card_present": False,
}


def test_all_rules_pass_on_good_measurements() -> None:
    report = evaluate_policy(POLICY, GOOD)
    assert report.passed and len(report.results) == len(POLICY["rules"])


@pytest.mark.parametrize("rule", [r["name"] for r in POLICY["rules"]])
def test_each_rule_fails_alone_with_value_and_limit(rule) -> None:
    measure = next(r["measure"] for r in POLICY["rules"] if r["name"] == rule)
    report = evaluate_policy(POLICY, {**GOOD, measure: BAD[measure]})
    assert not report.passed and [r.name for r in report.failed] == [rule]
    line = report.failed[0].line()
    assert line.startswith(f"FAIL {rule}") and str(BAD[measure])[:4] in line


@pytest.mark.parametrize("value", [None, float("nan")])
def test_a_measure_that_could_not_be_taken_fails(value) -> None:
    report = evaluate_policy(POLICY, {**GOOD, "roc_auc": value})
    assert [r.name for r in report.failed] == ["min_test_roc_auc"]


def test_unknown_operator_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown operator"):
        evaluate_policy({"rules": [{"name": "x", "measure": "roc_auc", "op": "~", "limit": 1}]}, GOOD)


def test_slice_labels_on_a_known_frame() -> None:
    X = pd.DataFrame({"ph": [5.0, 6.5, 7.0, 8.5, 9.0, np.nan], "Sulfate": [1.0, np.nan, 2.0, 3.0, np.nan, 4.0]})
    ph = slice_labels(X, {"column": "ph", "bins": [6.5, 8.5], "labels": ["acid", "ok", "alk"]})
    assert ph.tolist() == ["acid", "acid", "ok", "ok", "alk", "missing"]
    sulfate = slice_labels(X, {"column": "Sulfate", "missing": True})
    assert sulfate.tolist() == ["measured", "missing", "measured", "measured", "missing", "measured"]


def test_slice_metrics_support_and_gap_on_a_known_frame() -> None:
    # slice "a": perfectly ranked; slice "b": perfectly reversed; slice "c": too small to judge
    X = pd.DataFrame({"Turbidity": [1.0] * 4 + [9.0] * 4 + [np.nan]})
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1, 1])
    proba = np.array([0.1, 0.2, 0.8, 0.9, 0.9, 0.8, 0.2, 0.1, 0.5])
    config = {
        "min_support": 3,
        "dimensions": {"turbidity": {"column": "Turbidity", "bins": [5.0], "labels": ["a", "b"]}},
    }
    report = assess_slices(X, y, proba, 0.5, config)
    rows = report.table.set_index("slice")
    assert rows.loc["a", "roc_auc"] == 1.0 and rows.loc["b", "roc_auc"] == 0.0
    assert rows.loc["a", "recall"] == 1.0 and rows.loc["b", "recall"] == 0.0
    assert rows.loc["a", "false_potable_rate"] == 0.0 and rows.loc["b", "false_potable_rate"] == 1.0
    assert rows["support"].to_dict() == {"a": 4, "b": 4, "missing": 1}
    assert not rows.loc["missing", "judged"] and rows.loc["a", "judged"]
    assert report.gap() == 1.0
    assert "not judged" not in report.markdown() and "no (< 3 samples)" in report.markdown()


def test_first_model_is_judged_by_the_policy_alone() -> None:
    c = compare_with_champion("roc_auc", 0.01, "1", 0.65, None, None)
    assert c.passed and "no champion" in c.reason


@pytest.mark.parametrize(("challenger", "passed"), [(0.70, True), (0.695, True), (0.689, False)])
def test_challenger_may_be_at_most_margin_worse(challenger, passed) -> None:
    c = compare_with_champion("roc_auc", 0.01, "2", challenger, "1", 0.70)
    assert c.passed is passed and "champion v1" in c.reason
