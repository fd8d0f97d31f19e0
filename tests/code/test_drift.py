"""Drift statistics: a shifted feature is flagged, a fresh sample of the same data is not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core import configs
from core.settings import CONFIG_DIR, FEATURES
from tasks.drift import compare, psi, read_prediction_log, sample_per_client

RULES = configs.load(CONFIG_DIR / "monitoring.yaml", configs.MonitoringRules).rules()


@pytest.fixture(scope="module")
def reference(reference_frame):
    return reference_frame[list(FEATURES)]


def test_an_unshifted_sample_is_not_flagged(reference) -> None:
    live = reference.sample(600, random_state=1).assign(prediction=0)
    report = compare(reference, live, RULES, reference_positive_rate=0.0)
    assert not report.drifted, [(f.feature, f.psi, f.ks_pvalue) for f in report.features]


def test_ph_shifted_by_two_is_flagged_and_only_ph(reference) -> None:
    live = reference.sample(600, random_state=2)
    live = live.assign(ph=live["ph"] + 2, prediction=0)
    report = compare(reference, live, RULES, reference_positive_rate=0.0)
    assert report.drifted_features == ["ph"]
    ph = next(f for f in report.features if f.feature == "ph")
    assert ph.psi >= RULES["psi_threshold"] and ph.ks_pvalue < RULES["ks_alpha"]
    assert ph.live_mean == pytest.approx(ph.reference_mean + 2, abs=0.3)


def test_a_jump_in_missing_values_counts_as_drift(reference) -> None:
    live = reference.sample(600, random_state=3).copy()
    live.loc[live.index[:300], "Sulfate"] = np.nan
    assert "Sulfate" in compare(reference, live, RULES).drifted_features


def test_predicted_positive_rate_is_compared_with_the_models_own_baseline(reference) -> None:
    live = reference.sample(600, random_state=4).assign(prediction=1)
    report = compare(reference, live, RULES, reference_positive_rate=0.35)
    assert report.positive_rate_drifted and report.live_positive_rate == 1.0 and report.drifted


def test_too_little_traffic_judges_nothing(reference) -> None:
    report = compare(reference, reference.head(RULES["min_samples"] - 1), RULES)
    assert not report.enough_traffic and not report.drifted and report.features == []


def test_psi_is_zero_for_identical_samples_and_grows_with_the_shift() -> None:
    values = np.random.default_rng(0).normal(size=5000)
    assert psi(values, values, 10) == pytest.approx(0.0, abs=1e-9)
    assert psi(values, values + 0.1, 10) < psi(values, values + 1.0, 10)


def test_prediction_log_is_read_across_workers_rotations_and_window(tmp_path) -> None:
    now = datetime.now(UTC)
    old, new = (now - timedelta(hours=48)).isoformat(), now.isoformat()
    for name, stamp in (("predictions-1.jsonl", new), ("predictions-2.jsonl.1", new), ("predictions-2.jsonl", old)):
        record = {"timestamp": stamp, "model_version": "3", "inputs": dict.fromkeys(FEATURES, 1.0)}
        (tmp_path / name).write_text(json.dumps(record | {"prediction": 1, "probability": 0.7}) + "\n")
    frame = read_prediction_log(tmp_path, since=now - timedelta(hours=24))
    assert len(frame) == 2 and set(FEATURES) <= set(frame.columns) and frame["model_version"].eq("3").all()


def test_one_client_flooding_extreme_valid_rows_does_not_rewrite_the_picture(reference) -> None:
    """Six clients send ordinary samples; a seventh loops 20,000 valid rows with pH at the top of its
    range. Sampled per client it weighs as one of seven: no drift. The same rows from all clients drift."""
    genuine = [reference.sample(300, random_state=i).assign(client=f"c{i}") for i in range(6)]
    flood = reference.sample(20_000, replace=True, random_state=9).assign(ph=13.5, client="flooder")
    live = pd.concat([*genuine, flood]).assign(timestamp=datetime.now(UTC))
    assert compare(reference, live, RULES).drifted_features == ["ph"]  # unsampled, the flood is the picture
    sampled = sample_per_client(live, RULES["max_rows_per_client"])
    assert sampled["client"].value_counts().max() == 300
    report = compare(reference, sampled, RULES)
    assert not report.drifted and report.clients == 7
    everyone = pd.concat([g.assign(ph=13.5) for g in genuine]).assign(timestamp=datetime.now(UTC))
    assert compare(reference, sample_per_client(everyone, RULES["max_rows_per_client"]), RULES).drifted


def test_a_single_client_is_sampled_only_down_to_the_cap(reference) -> None:
    live = reference.assign(client="only", timestamp=datetime.now(UTC))
    assert len(sample_per_client(live, 1000)) == 1000
    assert len(sample_per_client(live.head(400), 1000)) == 400
