"""The `monitor-drift` flow: read live traffic → compare with the training data → report → alert / retrain."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from core import configs
from core.alerts import FLOW_ALERT_HOOKS, Alert, send_alert
from core.lineage import LineageMissing, training_batch
from core.settings import FEATURES, MODEL_NAME, Settings, get_settings
from core.versions import ModelRegistry, UnknownVersion
from governance.audit import audit_log
from tasks.drift import (
    DriftReport,
    compare,
    read_prediction_log,
    read_prediction_table,
    sample_per_client,
    window_start,
)
from tasks.reports import keep_report, report_links
from tasks.retries import io_retries

DRIFT_EVENT = "potable.drift.detected"


@task(cache_policy=NO_CACHE, **io_retries())  # the shared log's database may be briefly out of reach
def live_traffic(settings: Settings, window_hours: float, max_rows_per_client: int) -> pd.DataFrame:
    """The service's logged predictions from the last `window_hours`, at most so many per client: from the
    Postgres table every slot ships to when POTABLE_PREDICTION_LOG_DATABASE_URL is set, else this home's files."""
    since = window_start(window_hours)
    if settings.prediction_log_database_url is not None:
        logged = read_prediction_table(settings.prediction_log_database_url.get_secret_value(), since)
    else:
        logged = read_prediction_log(settings.home_dir / "predictions", since)
    return sample_per_client(logged, max_rows_per_client)


@task(cache_policy=NO_CACHE, **io_retries(LineageMissing, UnknownVersion))
def training_reference(settings: Settings, version: str | None) -> tuple[pd.DataFrame, float | None]:
    """The served version's own training rows (its run's `training` input) and the share it calls potable there.

    Without traffic naming a version, the champion's; with no version at all, nothing to compare with.
    """
    registry = ModelRegistry(settings)
    record = registry.get(version) if version else registry.champion()
    if record is None:
        return pd.DataFrame(columns=list(FEATURES)), None
    reference = training_batch(record.run_id).features
    proba = registry.load_model(record.version).predict_proba(reference)[:, 1]
    return reference, float((proba >= record.decision_threshold).mean())


def served_version(live: pd.DataFrame) -> str | None:
    """The model version that answered most of the window's traffic."""
    if live.empty or "model_version" not in live:
        return None
    return str(live["model_version"].astype(str).mode().iloc[0])


def report_rows(report: DriftReport) -> list[dict[str, Any]]:
    return [
        {
            "feature": f.feature,
            "reference mean": round(f.reference_mean, 3),
            "live mean": round(f.live_mean, 3),
            "PSI": round(f.psi, 4),
            "KS": round(f.ks_statistic, 4),
            "p-value (KS or missing share)": f"{f.ks_pvalue:.2e}",
            "drifted": "YES" if f.drifted else "no",
        }
        for f in report.features
    ]


def verdict_text(report: DriftReport, version: str | None) -> str:
    if not report.enough_traffic:
        return f"not enough traffic: {report.live_rows} predictions in the window; nothing judged"
    rate = ""
    if report.live_positive_rate is not None:
        rate = (
            f"; predicted potable {report.live_positive_rate:.1%} live vs "
            f"{report.reference_positive_rate:.1%} on the training data"
            + (" (DRIFTED)" if report.positive_rate_drifted else "")
        )
    drifted = ", ".join(report.drifted_features) or "none"
    traffic = f"{report.live_rows} live predictions from {report.clients} client(s)"
    return f"model v{version}: {traffic}; drifted features: {drifted}{rate}"


@task(cache_policy=NO_CACHE, **io_retries())
def publish_report(report: DriftReport, version: str | None, settings: Settings) -> Path:
    """HTML report under POTABLE_HOME/reports (and POTABLE_REPORTS_URI) plus Prefect artifacts (verdict, table)."""
    text = verdict_text(report, version)
    table = pd.DataFrame(report_rows(report))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = settings.reports_dir / f"drift-{stamp}.html"
    body = table.to_html(index=False) if not table.empty else "<p>No feature judged.</p>"
    path.write_text(f"<html><body><h1>Drift report</h1><p>{text}</p>{body}</body></html>", encoding="utf-8")
    kept = keep_report(path, settings)
    link = report_links(path, settings, kept)
    create_markdown_artifact(key="drift-verdict", markdown=f"# Drift\n\n{text}\n\nReport: {link}")
    if not table.empty:
        create_table_artifact(key="drift-features", table=table.to_dict("records"))
    return path


def act_on_drift(report: DriftReport, version: str | None, text: str, retrain: bool) -> None:
    """Alert always; ask for retraining with an event the train deployment's trigger listens for."""
    send_alert(Alert("drift detected", "warning", "monitor-drift", reason=text, model_version=version or ""))
    if retrain:
        emit_event(
            DRIFT_EVENT,
            resource={"prefect.resource.id": f"potable.model.{MODEL_NAME}"},
            payload={"model_version": version, "features": report.drifted_features},
        )


@flow(name="monitor-drift", log_prints=True, **FLOW_ALERT_HOOKS)
def monitor_drift(window_hours: float | None = None, retrain_on_drift: bool | None = None) -> dict[str, Any]:
    """read live traffic → compare with the training data → report → alert (and retrain event) on drift."""
    settings = get_settings()
    settings.ensure_dirs()
    rules = configs.monitoring(settings).rules()
    live = live_traffic(settings, window_hours or rules["window_hours"], rules["max_rows_per_client"])
    version = served_version(live)
    reference, reference_rate = training_reference(settings, version)
    report = compare(reference, live, rules, reference_rate)
    path = publish_report(report, version, settings)
    text = verdict_text(report, version)
    print(text)
    subject, details = {"model_version": version or "none"}, {"drifted": report.drifted, "report": str(path)}
    audit_log(settings).append("monitor-drift", "drift_checked", subject, details)
    retrain = rules["retrain_on_drift"] if retrain_on_drift is None else retrain_on_drift
    if report.drifted:
        act_on_drift(report, version, text, retrain)
    return {
        "model_version": version,
        "live_rows": report.live_rows,
        "clients": report.clients,
        "drifted": report.drifted,
        "drifted_features": report.drifted_features,
        "positive_rate_drifted": report.positive_rate_drifted,
        "report": str(path),
        "retrain_requested": bool(report.drifted and retrain),
    }
