"""The `train` flow: load → validate → split → tune → choose threshold → refit → evaluate → register."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mlflow
import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.runtime import deployment, flow_run

from core import configs
from core.alerts import FLOW_ALERT_HOOKS
from core.batches import Batch
from core.landing import in_landing_area, landing_areas
from core.lineage import log_training_batch
from core.settings import BUNDLED_DATA, EVENT_RESOURCE_PREFIX, FEATURES, MODEL_NAME, Settings, get_settings
from governance.audit import audit_log
from tasks.data import Split, load_batch, read_batch, split_batch_task
from tasks.evaluation import Evaluation, choose_threshold_task, evaluate_model
from tasks.governance import GovernanceVerdict, govern_task
from tasks.onnx_export import BackgroundExport
from tasks.packaging import Packaged, package_task
from tasks.registry import RegisteredVersion, git_commit, parent_run, register_model_task, setup_mlflow
from tasks.tuning import TuningResult, refit_best, tune_models
from tasks.validation import Quarantined, ValidationReport, quarantine_batch_task, validate_batch_task


class BatchRejected(Exception):
    """The batch failed validation; it was quarantined and nothing was trained or registered."""

    def __init__(self, report: ValidationReport, quarantined: Quarantined | None):
        self.report = report
        self.quarantined = quarantined
        where = f"; {quarantined}" if quarantined else ""
        details = "\n".join(f"  - {line}" for line in report.failures)
        super().__init__(f"batch rejected by validation{where}:\n{details}")


def training_config(settings: Settings, trials: int | None, seed: int | None) -> dict[str, Any]:
    """configs/training.yaml, validated, with this run's overrides applied (never mutating the cached copy)."""
    config = configs.training(settings)
    if trials is not None:
        if trials < 1:
            raise ValueError("--trials must be at least 1")
        config = config.model_copy(update={"tuning": config.tuning.model_copy(update={"n_trials": trials})})
    if seed is not None:
        config = config.model_copy(update={"seed": seed})
    return config.rules()


def publish_summary(summary: dict[str, Any], tuning: TuningResult, evaluation: Evaluation) -> None:
    """A Prefect artifact so the run page in the UI shows what was trained and how well it did."""
    m = evaluation.metrics
    create_markdown_artifact(
        key="training-summary",
        description="Model trained and registered by this run",
        markdown=(
            f"## {MODEL_NAME} v{summary['model_version']} registered as `candidate`\n\n"
            f"- data `{summary['data']}` (sha256 `{summary['data_sha256'][:12]}`)\n"
            f"- best family **{tuning.best_family}** {tuning.best_params}, CV ROC-AUC {tuning.best_value:.4f} "
            f"({tuning.n_trials} trials, {tuning.n_pruned} pruned, study `{tuning.study_name}`)\n"
            f"- threshold {evaluation.threshold:.3f} (chosen on train-split CV)\n"
            f"- test ROC-AUC **{m['roc_auc']:.4f}**, PR-AUC {m['pr_auc']:.4f}, F1 {m['f1']:.4f}, "
            f"recall {m['recall']:.4f}, false-potable rate {m['false_potable_rate']:.4f}\n"
            f"- MLflow run `{summary['mlflow_run_id']}`\n"
        ),
    )
    create_table_artifact(
        key="test-metrics",
        table=[{"metric": k, "value": round(v, 4)} for k, v in m.items()],
        description="Held-out test metrics at the chosen threshold",
    )


@dataclass
class Trained:
    """What tuning, evaluation and registration produced for one batch."""

    study_name: str
    tuning: TuningResult
    threshold: float
    model: Any
    evaluation: Evaluation
    registered: RegisteredVersion
    git_commit: str
    onnx_export: BackgroundExport  # converting `model` on the other core; packaging collects it


class ArrivalRefused(Exception):
    """An arrival event named something outside the landing area(s): nothing was read or moved."""


def admit_arrival(data: str | None, settings: Settings) -> None:
    """Refuse, before anything is read, an arrival that names a file or object outside the landing area(s)."""
    if data and in_landing_area(data, settings):
        return
    areas = ", ".join(landing_areas(settings)) or "none configured"
    details = {"source": str(data)[:500], "landing_areas": landing_areas(settings)}
    audit_log(settings).append("train-flow", "arrival_refused", {}, details)
    raise ArrivalRefused(f"arrival {str(data)[:200]!r} is outside the landing area(s) ({areas}); nothing was read")


def validate_or_quarantine(batch: Batch, settings: Settings) -> ValidationReport:
    """Validate; a rejected batch is quarantined, audited and stops the flow before any training."""
    report = validate_batch_task(batch, settings)
    audit = audit_log(settings)
    if not report.success:
        quarantined = quarantine_batch_task(batch, report, settings)
        audit.append(
            "train-flow",
            "batch_rejected",
            {"data_sha256": batch.sha256},
            {
                "source": batch.uri,
                "quarantined_to": quarantined.where,
                "moved": quarantined.moved,
                "failures": report.failures,
            },
        )
        raise BatchRejected(report, quarantined)
    audit.append(
        "train-flow",
        "batch_validated",
        {"data_sha256": batch.sha256},
        {"source": batch.uri, "rows": report.rows, "data_docs": str(report.data_docs)},
    )
    get_run_logger().info(report.summary())
    return report


def tune_evaluate_register(
    parts: Split, batch: Batch, frame: pd.DataFrame, config: dict[str, Any], settings: Settings, show_progress: bool
) -> Trained:
    """Tune → threshold → refit → evaluate once on test → register, all under one MLflow parent run."""
    setup_mlflow(settings)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    study_name = f"{MODEL_NAME}-{stamp}"
    with parent_run(f"train-{stamp}") as run:
        mlflow.set_tags({"data_sha256": batch.sha256, "prefect_flow_run_id": str(flow_run.id)})
        log_training_batch(batch, frame)
        mlflow.log_params(
            {
                "seed": config["seed"],
                "test_size": config["test_size"],
                "cv_folds": config["cv_folds"],
                "n_trials": config["tuning"]["n_trials"],
                "optuna_study": study_name,
            }
        )
        mlflow.log_dict(config, "config/training.json")
        onnx_export = BackgroundExport()  # its process starts while the flow tunes; the model comes later
        try:
            tuning = tune_models(
                parts.X_train, parts.y_train, config, settings.optuna_url, study_name, config["seed"], show_progress
            )
            mlflow.log_params({f"best_{k}": v for k, v in tuning.params_for_logging().items()})
            mlflow.log_metric("cv_roc_auc", tuning.best_value)
            threshold = choose_threshold_task(
                tuning.pipeline,
                parts.X_train,
                parts.y_train,
                config["cv_folds"],
                config["seed"],
                config["threshold"],
                tuning.oof_proba,
            )
            model = refit_best(tuning.pipeline, parts.X_train, parts.y_train)
            # Parity rows: the whole batch, as logged for lineage (what `potable package` checks later).
            onnx_export.convert(model, frame.loc[:, list(FEATURES)].astype("float64"))
            plot_dir = settings.reports_dir / "runs" / run.info.run_id
            evaluation = evaluate_model(model, parts.X_test, parts.y_test, threshold, plot_dir)
            mlflow.log_metric("threshold", threshold)
            mlflow.log_metrics({f"test_{k}": v for k, v in evaluation.metrics.items()})
            mlflow.log_artifacts(str(plot_dir), artifact_path="plots")
            facts = {
                "data_sha256": batch.sha256,
                "git_commit": git_commit(settings),
                "optuna_study": study_name,
                "threshold": threshold,
                "metrics": evaluation.metrics,
                "model_family": tuning.best_family,
                "cv_roc_auc": tuning.best_value,
            }
            registered = register_model_task(model, parts.X_train, facts, config, settings)
        except BaseException:
            onnx_export.discard()  # nothing will be packaged from this run
            raise
    audit_log(settings).append(
        "train-flow",
        "model_registered",
        {
            "data_sha256": batch.sha256,
            "run_id": registered.run_id,
            "model_version": registered.version,
            "study": study_name,
        },
        {
            "alias": "candidate",
            "family": tuning.best_family,
            "threshold": threshold,
            "test_roc_auc": evaluation.metrics["roc_auc"],
        },
    )
    return Trained(study_name, tuning, threshold, model, evaluation, registered, facts["git_commit"], onnx_export)


def govern_and_package(
    trained: Trained, parts: Split, batch: Batch, report: ValidationReport, config: dict[str, Any], settings: Settings
) -> tuple[GovernanceVerdict, Packaged | None]:
    """The policy gate; only a version that passes it becomes a deployable Bento."""
    t, registered = trained, trained.registered
    facts = {
        "model_name": registered.name,
        "model_version": registered.version,
        "model_family": t.tuning.best_family,
        "params": t.tuning.params_for_logging(),
        "git_commit": t.git_commit,
        "optuna_study": t.study_name,
        "cv_roc_auc": t.tuning.best_value,
        "threshold": t.threshold,
        "threshold_rule": config["threshold"]["strategy"],
        "run_id": registered.run_id,
        "metrics": t.evaluation.metrics,
        "data_uri": batch.uri,
        "data_sha256": batch.sha256,
        "validation_summary": report.summary(),
        "validated": report.success,
        "y_train": parts.y_train.to_numpy(),
        "y_test": parts.y_test.to_numpy(),
    }
    verdict = govern_task(t.model, registered, parts.X_test, parts.y_test, facts, settings)
    logger = get_run_logger()
    if not verdict.passed:
        logger.warning("v%s failed the policy gate, stays a candidate: %s", registered.version, verdict.reasons())
        return verdict, None
    packaged = package_task(registered.version, settings, t.onnx_export)
    logger.info(
        "v%s passed the policy gate, packaged as %s; promotion to champion needs approval",
        registered.version,
        packaged.bento_tag,
    )
    return verdict, packaged


def announce_gated(summary: dict[str, Any]) -> None:
    """`potable.model.gated`: the `promote` deployment's trigger, so the approval form waits in the UI at once."""
    emit_event(
        "potable.model.gated",
        resource={
            "prefect.resource.id": f"{EVENT_RESOURCE_PREFIX}.{summary['model_version']}",
            "prefect.resource.name": f"{MODEL_NAME} v{summary['model_version']}",
        },
        payload={
            "version": str(summary["model_version"]),
            "bento_tag": summary["bento_tag"],
            "metrics": summary["metrics"],
            "data": summary["data"],
        },
    )


def summarise(t: Trained, batch: Batch, verdict: GovernanceVerdict, packaged: Packaged | None) -> dict[str, Any]:
    r = t.registered
    return {
        "model_name": r.name,
        "model_version": r.version,
        "alias": "candidate",
        "mlflow_run_id": r.run_id,
        "model_uri": f"models:/{r.name}/{r.version}",
        "data": batch.uri,
        "data_sha256": batch.sha256,
        "optuna_study": t.study_name,
        "model_family": t.tuning.best_family,
        "cv_roc_auc": round(t.tuning.best_value, 6),
        "threshold": round(t.threshold, 6),
        "metrics": {k: round(v, 6) for k, v in t.evaluation.metrics.items()},
        "gate_passed": verdict.passed,
        "gate_failures": verdict.reasons(),
        "model_card": str(verdict.model_card),
        "bento_tag": packaged.bento_tag if packaged else None,
    }


@flow(name="train", log_prints=True, **FLOW_ALERT_HOOKS)
def train(
    data: str | None = None,
    trials: int | None = None,
    seed: int | None = None,
    show_progress: bool = False,
    arrival: bool = False,
) -> dict[str, Any]:
    """validate → tune → evaluate → register → govern → package, for one batch (local path or s3:// URI).

    `data` defaults to the bundled data set; `trials` and `seed` override configs/training.yaml.
    `arrival` is set by the train-on-arrival trigger: the batch must then lie in a landing area.
    """
    settings = get_settings()
    settings.ensure_dirs()
    if arrival:
        admit_arrival(data, settings)
    config = training_config(settings, trials, seed)
    batch = load_batch(data or str(BUNDLED_DATA), settings)
    report = validate_or_quarantine(batch, settings)
    frame = read_batch(batch.path)
    parts = split_batch_task(frame, config["test_size"], config["seed"])
    trained = tune_evaluate_register(parts, batch, frame, config, settings, show_progress)
    try:
        verdict, packaged = govern_and_package(trained, parts, batch, report, config, settings)
    finally:
        trained.onnx_export.discard()  # idempotent: stops the conversion of a version that was not packaged
    summary = summarise(trained, batch, verdict, packaged)
    publish_summary(summary, trained.tuning, trained.evaluation)
    if not verdict.passed:
        return summary
    announce_gated(summary)
    # A deployed run hands over to the `promote` deployment through the event; a run started from the CLI
    # (private Prefect server, no deployments) with auto-approve promotes here instead.
    if settings.auto_approve and deployment.id is None:
        from flows.promotion import promote

        summary["promotion"] = promote(version=trained.registered.version)
    return summary
