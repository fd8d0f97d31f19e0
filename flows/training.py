"""The `train` flow: batch → validate (GX, labels) → append to the table → read a table version →
tune → threshold → refit → judge on evaluation rows → register → govern → package."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mlflow
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.runtime import deployment, flow_run
from prefect.states import Completed

from core import configs
from core.alerts import FLOW_ALERT_HOOKS
from core.batches import Batch
from core.landing import in_landing_area, landing_areas
from core.lineage import log_training_rows
from core.settings import EVENT_RESOURCE_PREFIX, FEATURES, MODEL_NAME, Settings, get_settings
from core.table import Appended, TrainingTable, training_table
from core.versions import ModelRegistry
from governance.audit import audit_log
from tasks.data import Split, load_batch, read_batch
from tasks.dataset import (
    TableRefused,
    TrainingRows,
    append_batch_task,
    check_labels_task,
    read_training_rows_task,
    seed_table_task,
)
from tasks.evaluation import Evaluation, choose_threshold_task, evaluate_model
from tasks.governance import GovernanceVerdict, govern_task
from tasks.onnx_export import BackgroundExport
from tasks.outcomes import refused
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


class SeedDataRejected(Exception):
    """The seed data for a new table failed validation: nothing was written."""


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
            f"- training table v{summary['dataset_version']} (`{summary['data']}`): {summary['rows']['train']} train "
            f"rows, judged on {summary['rows']['evaluation']} evaluation rows no version has trained on\n"
            f"- best family **{tuning.best_family}** {tuning.best_params}, CV ROC-AUC {tuning.best_value:.4f} "
            f"({tuning.n_trials} trials, {tuning.n_pruned} pruned, study `{tuning.study_name}`)\n"
            f"- threshold {evaluation.threshold:.3f} (chosen on out-of-fold train predictions)\n"
            f"- evaluation ROC-AUC **{m['roc_auc']:.4f}**, PR-AUC {m['pr_auc']:.4f}, F1 {m['f1']:.4f}, "
            f"recall {m['recall']:.4f}, false-potable rate {m['false_potable_rate']:.4f}\n"
            f"- MLflow run `{summary['mlflow_run_id']}`\n"
        ),
    )
    create_table_artifact(
        key="test-metrics",
        table=[{"metric": k, "value": round(v, 4)} for k, v in m.items()],
        description="Metrics on the table version's evaluation rows at the chosen threshold",
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
    data_sha256: str  # of the rows the run used, as logged with it


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


def validate_or_quarantine(batch: Batch, table: TrainingTable, settings: Settings) -> ValidationReport:
    """Validate (GX, then the labels against the table); a rejected batch is quarantined, audited and
    stops the flow before anything is appended or trained."""
    report = validate_batch_task(batch, settings)
    if report.success:
        labels = check_labels_task(table, read_batch(batch.path), batch.sha256, settings)
        report.failures.extend(labels.failures)
        report.success = labels.success
        report.labels = labels.summary()
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
        emit_event(
            "potable.batch.rejected",
            resource={"prefect.resource.id": f"potable.batch.{batch.sha256[:16]}", "prefect.resource.name": batch.uri},
            payload={"source": batch.uri, "quarantined_to": quarantined.where, "failures": report.failures[:20]},
        )
        raise BatchRejected(report, quarantined)
    audit.append(
        "train-flow",
        "batch_validated",
        {"data_sha256": batch.sha256},
        {"source": batch.uri, "rows": report.rows, "data_docs": str(report.data_docs), "labels": report.labels},
    )
    get_run_logger().info("%s; %s", report.summary(), report.labels)
    return report


def seed_if_new(table: TrainingTable, settings: Settings) -> Appended | None:
    """A new table's first version is the seed data (the bundled CSV unless POTABLE_SEED_DATA says
    otherwise, `none` to start empty), validated like any batch; an existing table is left alone."""
    if table.exists() or settings.seed_data.strip().lower() == "none":
        return None
    seed = load_batch(settings.seed_data, settings)
    report = validate_batch_task(seed, settings)
    if not report.success:
        raise SeedDataRejected(f"seed data {seed.uri} failed validation: " + "; ".join(report.failures))
    audit_log(settings).append(
        "train-flow",
        "batch_validated",
        {"data_sha256": seed.sha256},
        {"source": seed.uri, "rows": report.rows, "data_docs": str(report.data_docs), "seed": True},
    )
    appended = seed_table_task(table, seed, read_batch(seed.path), settings)
    get_run_logger().info("training table %s started from %s: v0, %s rows", table.uri, seed.uri, appended.rows_added)
    return appended


def take_batch(data: str, table: TrainingTable, settings: Settings) -> Appended:
    """Load, gate and append one batch: the version it made (or the latest, when nothing in it was new)."""
    batch = load_batch(data, settings)
    report = validate_or_quarantine(batch, table, settings)
    appended = append_batch_task(table, batch, read_batch(batch.path), report.labels, settings)
    logger = get_run_logger()
    if appended.committed:
        logger.info(
            "batch %s appended as table v%s: %s new rows, %s already in the table",
            batch.uri,
            appended.version,
            appended.rows_added,
            appended.duplicates,
        )
    else:
        logger.info(
            "batch %s added no new rows (%s already in the table): table stays v%s",
            batch.uri,
            appended.duplicates,
            appended.version,
        )
    return appended


def unchanged_since_champion(rows_version: int, table: TrainingTable, settings: Settings) -> str | None:
    """Why a scheduled run need not train: the champion was trained on this very table version."""
    champion = ModelRegistry(settings).champion()
    if champion is None or champion.dataset_version != rows_version or (champion.table_uri or table.uri) != table.uri:
        return None
    return (
        f"training table unchanged since champion v{champion.version} was trained on v{rows_version}: nothing to train"
    )


def tune_evaluate_register(
    parts: Split, rows: TrainingRows, config: dict[str, Any], settings: Settings, show_progress: bool
) -> Trained:
    """Tune → threshold → refit on train rows → judge once on evaluation rows → register, under one MLflow
    parent run."""
    setup_mlflow(settings)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    study_name = f"{MODEL_NAME}-{stamp}"
    with parent_run(f"train-{stamp}") as run:
        mlflow.set_tags({"dataset_version": str(rows.version), "prefect_flow_run_id": str(flow_run.id)})
        data_sha256 = log_training_rows(rows.frame, rows.uri, rows.version, rows.digest)
        mlflow.log_params(
            {
                "seed": config["seed"],
                "dataset_version": rows.version,
                "table_uri": rows.uri,
                "train_rows": len(parts.y_train),
                "evaluation_rows": len(parts.y_test),
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
            # Parity rows: the rows logged for lineage (what `potable package` checks later).
            onnx_export.convert(model, rows.frame.loc[:, list(FEATURES)].astype("float64"))
            plot_dir = settings.reports_dir / "runs" / run.info.run_id
            evaluation = evaluate_model(model, parts.X_test, parts.y_test, threshold, plot_dir)
            mlflow.log_metric("threshold", threshold)
            mlflow.log_metrics({f"test_{k}": v for k, v in evaluation.metrics.items()})
            mlflow.log_artifacts(str(plot_dir), artifact_path="plots")
            facts = {
                "data_sha256": data_sha256,
                "dataset_version": rows.version,
                "table_uri": rows.uri,
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
            "dataset_version": str(rows.version),
            "run_id": registered.run_id,
            "model_version": registered.version,
            "study": study_name,
        },
        {
            "alias": "candidate",
            "family": tuning.best_family,
            "threshold": threshold,
            "evaluation_roc_auc": evaluation.metrics["roc_auc"],
            "table": rows.uri,
            "rows": rows.counts(),
        },
    )
    return Trained(
        study_name, tuning, threshold, model, evaluation, registered, facts["git_commit"], onnx_export, data_sha256
    )


def govern_and_package(
    trained: Trained, parts: Split, rows: TrainingRows, config: dict[str, Any], settings: Settings
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
        "data_uri": f"{rows.uri}@v{rows.version}",
        "data_sha256": trained.data_sha256,
        "dataset_version": rows.version,
        "validation_summary": "each batch validated before it was appended",
        "validated": True,
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


def announce_gated(summary: dict[str, Any], event: str = "potable.model.gated") -> None:
    """`potable.model.gated`: the `promote` deployment's trigger, so the approval form waits in the UI at once
    (`potable.model.gate_failed` for a version the gate refused)."""
    emit_event(
        event,
        resource={
            "prefect.resource.id": f"{EVENT_RESOURCE_PREFIX}.{summary['model_version']}",
            "prefect.resource.name": f"{MODEL_NAME} v{summary['model_version']}",
        },
        payload={
            "version": str(summary["model_version"]),
            "bento_tag": summary["bento_tag"],
            "metrics": summary["metrics"],
            "data": summary["data"],
            "dataset_version": summary["dataset_version"],
            "gate_failures": summary["gate_failures"],
        },
    )


def summarise(
    t: Trained,
    rows: TrainingRows,
    appended: Appended | None,
    source: str | None,
    verdict: GovernanceVerdict,
    packaged: Packaged | None,
) -> dict[str, Any]:
    r = t.registered
    return {
        "model_name": r.name,
        "model_version": r.version,
        "alias": "candidate",
        "mlflow_run_id": r.run_id,
        "model_uri": f"models:/{r.name}/{r.version}",
        "data": rows.uri,
        "data_sha256": t.data_sha256,
        "dataset_version": rows.version,
        "rows": rows.counts(),
        "batch": None
        if appended is None
        else {
            "source": source,
            "rows": appended.batch_rows,
            "rows_added": appended.rows_added,
            "duplicates": appended.duplicates,
        },
        "champion_comparison": verdict.comparison.as_dict(),
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
    dataset_version: int | None = None,
    trials: int | None = None,
    seed: int | None = None,
    show_progress: bool = False,
    arrival: bool = False,
    only_if_changed: bool = False,
):
    """batch → validate → append → read a table version → tune → judge → register → govern → package.

    `data` (local path or s3:// URI) is a batch to gate and append first; without it the run trains on
    `dataset_version` of the training table, default the latest. `trials` and `seed` override
    configs/training.yaml. `arrival` is set by the train-on-arrival trigger: the batch must then lie in a
    landing area. `only_if_changed` (scheduled and drift runs) ends without training when the champion
    was already trained on that table version.
    """
    settings = get_settings()
    settings.ensure_dirs()
    try:
        if arrival:
            admit_arrival(data, settings)
        if data and dataset_version is not None:
            raise TableRefused("give a batch to append or a table version to train on, not both")
        config = training_config(settings, trials, seed)
        table = training_table(settings)
        seed_if_new(table, settings)
        appended = take_batch(data, table, settings) if data else None
        rows = read_training_rows_task(table, appended.version if appended else dataset_version, config["data"])
    except (ArrivalRefused, TableRefused, SeedDataRejected, BatchRejected) as refusal:
        return refused(refusal)  # the runs list names it (e.g. BatchRejected); one log line, no traceback
    if rows.note:
        get_run_logger().warning(rows.note)
    if only_if_changed and (why := unchanged_since_champion(rows.version, table, settings)):
        get_run_logger().info(why)
        return Completed(name="Unchanged", message=why, data={"trained": False, "dataset_version": rows.version})
    parts = rows.split()
    trained = tune_evaluate_register(parts, rows, config, settings, show_progress)
    try:
        verdict, packaged = govern_and_package(trained, parts, rows, config, settings)
    finally:
        trained.onnx_export.discard()  # idempotent: stops the conversion of a version that was not packaged
    summary = summarise(trained, rows, appended, data, verdict, packaged)
    publish_summary(summary, trained.tuning, trained.evaluation)
    if not verdict.passed:
        # A "no" is named as one: the runs list shows GateFailed, and the event says it too.
        announce_gated(summary, "potable.model.gate_failed")
        why = f"v{summary['model_version']} failed the policy gate: " + "; ".join(summary["gate_failures"])
        return Completed(name="GateFailed", message=why[:2000], data=summary)
    announce_gated(summary)
    # A deployed run hands over to the `promote` deployment through the event; a run started from the CLI
    # (private Prefect server, no deployments) with auto-approve promotes here instead.
    if settings.auto_approve and deployment.id is None:
        from flows.promotion import promote

        summary["promotion"] = promote(version=trained.registered.version)
    return summary
