"""The monitor-drift flow on a real Prefect server: shifted live traffic alerts and asks for retraining."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import mlflow
import pytest

from core.settings import FEATURES, MODEL_NAME, Settings
from flows.monitoring import monitor_drift
from flows.training import train

pytestmark = pytest.mark.e2e


def log_traffic(settings: Settings, frame, version: str, threshold: float) -> None:
    """Write predictions exactly as the service logs them (one JSON line per prediction)."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{version}")
    proba = model.predict_proba(frame[list(FEATURES)])[:, 1]
    folder = settings.home_dir / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat()
    with open(folder / "predictions-1.jsonl", "w", encoding="utf-8") as fh:
        for (_, row), p in zip(frame.iterrows(), proba, strict=True):
            inputs = {k: (None if v != v else float(v)) for k, v in row[list(FEATURES)].items()}
            record = {"timestamp": now, "model_version": version, "inputs": inputs, "prediction": int(p >= threshold)}
            fh.write(json.dumps(record | {"probability": float(p)}) + "\n")


def test_shifted_traffic_is_flagged_alerted_and_unshifted_is_not(
    prefect_api, settings, reference_frame, alert_receiver
) -> None:
    summary = train(trials=1)
    version, threshold = summary["model_version"], summary["threshold"]

    log_traffic(settings, reference_frame.sample(500, random_state=7), version, threshold)
    calm = monitor_drift()
    assert calm["model_version"] == version and calm["live_rows"] == 500
    assert not calm["drifted"] and calm["drifted_features"] == []
    completion_alerts = len(alert_receiver.texts())

    shifted = reference_frame.sample(500, random_state=8)
    log_traffic(settings, shifted.assign(ph=shifted["ph"] + 2), version, threshold)
    alarmed = monitor_drift(retrain_on_drift=True)
    assert alarmed["drifted"] and "ph" in alarmed["drifted_features"] and alarmed["retrain_requested"]
    drift_alerts = [t for t in alert_receiver.texts()[completion_alerts:] if "drift detected" in t]
    assert len(drift_alerts) == 1 and "ph" in drift_alerts[0]
    assert "Drift report" in open(alarmed["report"], encoding="utf-8").read()
