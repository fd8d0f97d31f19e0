"""Commands along a model version's life: train, validate, package, serve, promote, approve, approvals."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from potable.cli.app import app
from potable.cli.common import fail, prepare_environment, run_flow, use_running_api


@app.command()
def train(
    data: Annotated[
        str | None,
        typer.Option(help="CSV path or s3://bucket/key: a batch to validate and append first; default none"),
    ] = None,
    dataset_version: Annotated[
        int | None,
        typer.Option(min=0, help="Training table version to train on (default the latest; `potable data log`)"),
    ] = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Optuna trials (default from configs/training.yaml)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for CV and sampler")] = None,
) -> None:
    """Append a batch (optional), then tune, judge and register a model on a training table version;
    the last stdout line is a JSON summary."""
    if data and dataset_version is not None:
        fail("give --data (a batch to append) or --dataset-version (a version to train on), not both")

    def load():
        from core.expectations import start_prevalidation
        from core.settings import get_settings
        from core.table import training_table

        settings = get_settings()
        if data:
            start_prevalidation(data, settings)
        if settings.seed_data.strip().lower() != "none" and not training_table(settings).exists():
            start_prevalidation(settings.seed_data, settings)  # a new table's first version is validated too
        # Imported while the Prefect server and the validation worker start.
        from flows.training import BatchRejected, SeedDataRejected
        from flows.training import train as train_flow
        from tasks.data import BatchError
        from tasks.dataset import TableRefused
        from tasks.registry import setup_mlflow

        # A new home's MLflow store is created (a copy of the blank one, else MLflow's migrations) while
        # the Prefect server still starts; the flow sets MLflow up itself as usual and finds the store there.
        setup_mlflow(get_settings())

        return train_flow, (BatchRejected, BatchError, TableRefused, SeedDataRejected)

    summary = run_flow(
        "training stopped, nothing registered",
        load,
        data=data,
        dataset_version=dataset_version,
        trials=trials,
        seed=seed,
        show_progress=sys.stderr.isatty(),
    )
    print(json.dumps(summary, sort_keys=True))


@app.command()
def validate(
    path: Annotated[str, typer.Argument(help="CSV path or s3://bucket/key")],
    quarantine: Annotated[bool, typer.Option(help="Move a failing batch to quarantine")] = False,
) -> None:
    """Validate one batch: the Great Expectations suite, then its labels against the training table
    (exit 0 valid, 1 rejected). Nothing is appended."""
    prepare_environment()
    from core.settings import get_settings
    from tasks.data import BatchError, fetch_batch, read_batch
    from tasks.dataset import check_batch_labels, training_table
    from tasks.validation import quarantine_batch, validate_batch

    settings = get_settings()
    try:
        batch = fetch_batch(path, settings)
    except BatchError as exc:
        fail(f"validation failed: {exc}")
    report = validate_batch(batch, settings)
    if report.success:
        labels = check_batch_labels(training_table(settings), read_batch(batch.path), batch.sha256, settings)
        report.failures.extend(labels.failures)
        report.success, report.labels = labels.success, labels.summary()
    if report.success:
        print(
            f"{report.summary()} ({Path(batch.path).name}, sha256 {batch.sha256[:12]}); {report.labels}; "
            f"data docs: {report.data_docs}"
        )
        return
    lines = [f"validation failed for {batch.uri} ({len(report.failures)} problem(s)):"]
    lines += [f"  - {line}" for line in report.failures]
    if report.data_docs:
        lines.append(f"data docs: {report.data_docs}")
    if quarantine:
        lines.append(str(quarantine_batch(batch, report, settings)))
    fail("\n".join(lines))


@app.command()
def package(version: Annotated[str, typer.Option(help="Model version that passed the policy gate")]) -> None:
    """Build a Bento for a governed model version (refused for versions that failed the gate)."""
    prepare_environment()
    from core.settings import get_settings
    from tasks.packaging import PackagingRefused, package_version

    try:
        packaged = package_version(version, get_settings(), actor="cli")
    except PackagingRefused as exc:
        fail(str(exc))
    print(
        json.dumps(
            {"model_version": packaged.version, "model_tag": packaged.model_tag, "bento_tag": packaged.bento_tag}
        )
    )


@app.command()
def serve(
    alias: Annotated[str, typer.Option(help="Serve the version behind this alias")] = "champion",
    version: Annotated[str | None, typer.Option(help="Serve this version instead of an alias")] = None,
    port: Annotated[int, typer.Option(help="HTTP port")] = 3000,
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
) -> None:
    """Serve a model version's Bento over HTTP (`champion`, falling back to `candidate` with a warning)."""
    prepare_environment()
    from potable.serving import ServingError, bento_for

    try:
        bento_tag = bento_for(alias, version)
    except ServingError as exc:
        fail(str(exc))
    bentoml_cli = Path(sys.executable).with_name("bentoml")
    os.execv(str(bentoml_cli), [str(bentoml_cli), "serve", bento_tag, "--host", host, "--port", str(port)])  # nosec B606 # our own bentoml CLI, fixed argv


@app.command()
def promote(version: Annotated[str, typer.Option(help="Model version that passed the policy gate")]) -> None:
    """Ask for approval of a version and, once approved, make it the champion (waits for the approver)."""

    def load():
        from flows.promotion import PromotionRefused
        from flows.promotion import promote as promote_flow

        return promote_flow, (PromotionRefused,)

    outcome = run_flow("promotion refused", load, version=version)
    print(json.dumps(outcome, sort_keys=True))


@app.command()
def approve(
    version: Annotated[str, typer.Option(help="Model version whose promotion waits for approval")],
    approver: Annotated[str, typer.Option(help="Your name, as it should appear in the audit trail")],
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approve")] = False,
    comment: Annotated[str, typer.Option(help="Why; kept in the audit trail")] = "",
) -> None:
    """Answer a waiting promotion (the same form the Prefect UI shows on the paused `promote` run)."""
    use_running_api("no Prefect API to answer: set PREFECT_API_URL, or run this while `potable promote` is waiting")
    from potable.approvals import answer_promotion

    try:
        run_id = answer_promotion(version, approver, "reject" if reject else "approve", comment)
    except LookupError as exc:
        fail(str(exc))
    typer.echo(f"{'rejected' if reject else 'approved'} v{version} (flow run {run_id})")


@app.command()
def approvals(
    brief: Annotated[
        bool, typer.Option("--brief", help="One line per waiting promotion, without the evidence")
    ] = False,
) -> None:
    """Promotions waiting for a person: version, metrics, since when, the run's page in the Prefect UI, and
    the evidence the approval form shows (gate rules, champion comparison with its interval, slices)."""
    use_running_api("no Prefect API to ask: start the platform (`potable up`) or set PREFECT_API_URL")
    from potable.approvals import pending_approvals

    pending = pending_approvals()
    if not pending:
        typer.echo("no promotion waits for approval")
    for p in pending:
        typer.echo(
            f"v{p['version']:<4} waiting since {p['since']}  roc_auc {p['roc_auc']}  "
            f"false-potable {p['false_potable_rate']}  {p['url']}"
        )
        if not brief:
            typer.echo(p["evidence"])
