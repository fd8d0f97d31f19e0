"""`potable`: one CLI whose subcommands call the flows."""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from potable.prefect_api import prefect_api

app = typer.Typer(
    help="potable: a governed ML lifecycle for a water-potability classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _prepare_environment() -> Path:
    """This command's process gets the environment derived from the settings (core/environment.py)."""
    from core.environment import apply
    from core.settings import get_settings

    return apply(get_settings()).home_dir


def _fail(message: str) -> NoReturn:
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(code=1)


class _NoTraceback(logging.Formatter):
    """Formats a record as the wrapped formatter would, minus the traceback (the record itself is untouched,
    so the run's logs in the Prefect UI keep it)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text:
            record = copy.copy(record)
            record.exc_info, record.exc_text = None, None
        return self.inner.format(record)


def _quiet_tracebacks() -> None:
    """The terminal shows one line per problem; POTABLE_DEBUG=1 keeps Prefect's tracebacks on stderr."""
    if os.environ.get("POTABLE_DEBUG", "").lower() in ("1", "true", "yes"):
        return
    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                if not isinstance(handler.formatter, _NoTraceback):
                    handler.setFormatter(_NoTraceback(handler.formatter or logging.Formatter()))


def _use_running_api(missing: str) -> None:
    """Talk to the Prefect API that already runs for this home (never start one: there is nothing to ask)."""
    from potable.prefect_api import running_api_url

    api = running_api_url(_prepare_environment())
    if not api:
        _fail(missing)
    os.environ["PREFECT_API_URL"] = api


def _run_flow(what: str, load: Callable[[], tuple[Callable[..., Any], tuple[type[Exception], ...]]], **params) -> Any:
    """Run a flow against the Prefect API from a command: the API starts (or is found) first, the flow's
    imports run while it starts, and a refusal the flow raises on purpose becomes one readable line."""
    home = _prepare_environment()
    with prefect_api(home) as server:
        flow_fn, expected = load()
        _quiet_tracebacks()
        if server is not None:
            server.wait_healthy()
        try:
            return flow_fn(**params)
        except expected as exc:
            _fail(f"{what}: {exc}")


@app.command()
def train(
    data: Annotated[str | None, typer.Option(help="CSV path or s3://bucket/key; default: the bundled data")] = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Optuna trials (default from configs/training.yaml)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for split, CV and sampler")] = None,
) -> None:
    """Validate a batch, tune, evaluate and register a model; the last stdout line is a JSON summary."""
    from core.settings import BUNDLED_DATA

    data = data or str(BUNDLED_DATA)

    def load():
        from core.expectations import start_prevalidation
        from core.settings import get_settings

        start_prevalidation(data, get_settings())
        # Imported while the Prefect server and the validation worker start.
        from flows.training import BatchRejected
        from flows.training import train as train_flow
        from tasks.data import BatchError

        return train_flow, (BatchRejected, BatchError)

    summary = _run_flow(
        "training stopped, nothing registered",
        load,
        data=data,
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
    """Validate one batch with the Great Expectations suite (exit 0 valid, 1 rejected)."""
    _prepare_environment()
    from core.settings import get_settings
    from tasks.data import BatchError, fetch_batch
    from tasks.validation import quarantine_batch, validate_batch

    settings = get_settings()
    try:
        batch = fetch_batch(path, settings)
    except BatchError as exc:
        _fail(f"validation failed: {exc}")
    report = validate_batch(batch, settings)
    if report.success:
        print(
            f"{report.summary()} ({Path(batch.path).name}, sha256 {batch.sha256[:12]}); data docs: {report.data_docs}"
        )
        return
    lines = [f"validation failed for {batch.uri} ({len(report.failures)} problem(s)):"]
    lines += [f"  - {line}" for line in report.failures]
    if report.data_docs:
        lines.append(f"data docs: {report.data_docs}")
    if quarantine:
        lines.append(f"batch moved to {quarantine_batch(batch, report, settings)}")
    _fail("\n".join(lines))


@app.command()
def monitor(
    window_hours: Annotated[float | None, typer.Option(help="Live window (default configs/monitoring.yaml)")] = None,
    retrain: Annotated[
        bool | None, typer.Option("--retrain/--no-retrain", help="Emit the retraining event on drift")
    ] = None,
) -> None:
    """Compare live traffic (the prediction log) with the training data; exit 3 when drift is found."""

    def load():
        from flows.monitoring import monitor_drift

        return monitor_drift, ()

    summary = _run_flow("drift monitoring", load, window_hours=window_hours, retrain_on_drift=retrain)
    print(json.dumps(summary, sort_keys=True))
    if summary["drifted"]:
        raise typer.Exit(code=3)


@app.command()
def up() -> None:
    """Start Prefect server (UI), a worker, the MLflow UI and the data watcher; register the deployments."""
    from core.settings import get_settings
    from potable.platform import PlatformError
    from potable.platform import up as platform_up

    _prepare_environment()
    try:
        report = platform_up(get_settings())
    except PlatformError as exc:
        _fail(f"potable up failed (everything it started was stopped): {exc}")
    _print_status(report)


@app.command()
def down() -> None:
    """Stop everything `potable up` started, and the router and slots releases started."""
    from core.settings import get_settings
    from potable.platform import down as platform_down

    stopped = platform_down(get_settings())
    target = _blue_green()
    if target.state.load()["slots"] or target.router.pid() is not None:
        target.shutdown()  # what the chain took live goes too: down means nothing of potable keeps running
        stopped.append("router and slots")
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command()
def status() -> None:
    """What runs where (exit 1 when a service is down)."""
    from core.settings import get_settings
    from potable.platform import status as platform_status

    report = platform_status(get_settings())
    _print_status(report)
    if not all(s["running"] for s in report.values()):
        raise typer.Exit(code=1)


def _print_status(report: dict[str, dict]) -> None:
    for name, s in report.items():
        state = f"running (pid {s['pid']})" if s["running"] else "stopped"
        typer.echo(f"{name:<16}{state:<24}{s['url']:<28}{s['log']}")


@app.command()
def watch(
    source: Annotated[
        str | None,
        typer.Argument(
            help="s3://bucket/prefix, an SQS queue URL, or a folder (default POTABLE_WATCH or <home>/landing)"
        ),
    ] = None,
    interval: Annotated[float | None, typer.Option(help="Seconds between polls")] = None,
    once: Annotated[bool, typer.Option(help="Poll once and exit")] = False,
    backfill: Annotated[bool, typer.Option(help="On first start, announce objects already there")] = False,
) -> None:
    """Turn each new object in the landing area into one Prefect event `s3.object.created`."""
    import logging

    from core.settings import get_settings
    from potable.watcher import source_for
    from potable.watcher import watch as watch_loop

    _prepare_environment()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call would drown the arrivals
    settings = get_settings()
    where = source or settings.landing
    typer.echo(f"watching {where}", err=True)
    emitted = watch_loop(source_for(where, settings), interval or settings.watch_interval_seconds, once, backfill)
    if once:
        print(json.dumps({"watched": where, "events": emitted}))


@app.command()
def promote(version: Annotated[str, typer.Option(help="Model version that passed the policy gate")]) -> None:
    """Ask for approval of a version and, once approved, make it the champion (waits for the approver)."""

    def load():
        from flows.promotion import PromotionRefused
        from flows.promotion import promote as promote_flow

        return promote_flow, (PromotionRefused,)

    outcome = _run_flow("promotion refused", load, version=version)
    print(json.dumps(outcome, sort_keys=True))


@app.command()
def approve(
    version: Annotated[str, typer.Option(help="Model version whose promotion waits for approval")],
    approver: Annotated[str, typer.Option(help="Your name, as it should appear in the audit trail")],
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approve")] = False,
    comment: Annotated[str, typer.Option(help="Why; kept in the audit trail")] = "",
) -> None:
    """Answer a waiting promotion (the same form the Prefect UI shows on the paused `promote` run)."""
    _use_running_api("no Prefect API to answer: set PREFECT_API_URL, or run this while `potable promote` is waiting")
    from potable.approvals import answer_promotion

    try:
        run_id = answer_promotion(version, approver, "reject" if reject else "approve", comment)
    except LookupError as exc:
        _fail(str(exc))
    typer.echo(f"{'rejected' if reject else 'approved'} v{version} (flow run {run_id})")


@app.command()
def package(version: Annotated[str, typer.Option(help="Model version that passed the policy gate")]) -> None:
    """Build a Bento for a governed model version (refused for versions that failed the gate)."""
    _prepare_environment()
    from core.settings import get_settings
    from tasks.packaging import PackagingRefused, package_version

    try:
        packaged = package_version(version, get_settings(), actor="cli")
    except PackagingRefused as exc:
        _fail(str(exc))
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
    _prepare_environment()
    from potable.serving import ServingError, bento_for

    try:
        bento_tag = bento_for(alias, version)
    except ServingError as exc:
        _fail(str(exc))
    bentoml_cli = Path(sys.executable).with_name("bentoml")
    os.execv(str(bentoml_cli), [str(bentoml_cli), "serve", bento_tag, "--host", host, "--port", str(port)])  # nosec B606 # our own bentoml CLI, fixed argv


audit_app = typer.Typer(help="The hash-chained audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    path: Annotated[Path | None, typer.Option(help="Audit file; default POTABLE_HOME/audit")] = None,
) -> None:
    """Check the chain; exit 1 naming the first line that was edited, deleted, inserted or reordered."""
    from core.settings import get_settings
    from governance.audit import AuditLog, audit_log

    log = AuditLog(path) if path else audit_log(get_settings())
    if not log.path.exists():
        _fail(f"no audit trail at {log.path}")
    verdict = log.verify()
    if not verdict.ok:
        _fail(f"audit trail {log.path} is broken at line {verdict.bad_line}: {verdict.reason}")
    typer.echo(f"audit trail {log.path} intact: {verdict.entries} entries")


@audit_app.command("lineage")
def audit_lineage(version: Annotated[str, typer.Option(help="Model version")]) -> None:
    """Print the chain of a model version: data → validation → study → run → version → gate → approval."""
    from core.settings import get_settings
    from governance.audit import audit_log

    entries = audit_log(get_settings()).lineage(version)
    if not entries:
        _fail(f"no audit entries for model version {version}")
    for e in entries:
        subject = ", ".join(f"{k}={v[:12] if k == 'data_sha256' else v}" for k, v in e["subject"].items())
        typer.echo(f"{e['timestamp']}  {e['action']:<20} {subject}  by {e['actor']}")


governance_app = typer.Typer(help="Governance reports.", no_args_is_help=True)
app.add_typer(governance_app, name="governance")


@governance_app.command("report")
def governance_report(
    version: Annotated[str, typer.Option(help="Model version")],
    out: Annotated[Path | None, typer.Option(help="HTML file; default POTABLE_HOME/reports/governance_vN.html")] = None,
) -> None:
    """One HTML page: model card, policy results, slice table and audit lineage of a version."""
    _prepare_environment()
    from core.settings import get_settings
    from governance.report import write_governance_report

    try:
        path = write_governance_report(version, get_settings(), out)
    except LookupError as exc:
        _fail(str(exc))
    typer.echo(str(path))


@app.command()
def release(
    version: Annotated[str | None, typer.Option(help="Version to release (default: the champion)")] = None,
    override_reason: Annotated[
        str | None, typer.Option(help="Release a version that is not the champion; recorded in the audit trail")
    ] = None,
) -> None:
    """Blue-green release of the champion behind nginx; rolls back by itself if the new slot misbehaves."""

    def load():
        from flows.release import ReleaseRefused, ReleaseRolledBack
        from flows.release import release as release_flow

        return release_flow, (ReleaseRefused, ReleaseRolledBack)

    summary = _run_flow("release", load, version=version, override_reason=override_reason, actor=_actor())
    print(json.dumps(summary, sort_keys=True))


@app.command()
def image(version: Annotated[str, typer.Option(help="Gated version whose Bento becomes the image")]) -> None:
    """Build the version's OCI image with buildah (no Docker daemon) and push it to POTABLE_IMAGE_REGISTRY."""

    def load():
        from core.settings import get_settings
        from deployments.image import ImageError
        from flows.release import ReleaseRefused, publish_image

        return (lambda: publish_image(version, get_settings(), _actor())), (ImageError, ReleaseRefused)

    pushed = _run_flow("image", load)
    print(json.dumps(pushed, sort_keys=True))


def _actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


rollout_app = typer.Typer(help="The local blue-green target (nginx + two BentoML slots).", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")


def _blue_green(actor: str | None = None):
    from core.environment import apply, child_env
    from core.settings import get_settings, load_config
    from deployments.rollout import BlueGreen
    from governance.audit import audit_log

    settings = apply(get_settings())
    audit = audit_log(settings)

    def record(action: str, details: dict) -> None:
        subject = {"slot": str(details.get("slot", ""))}
        if details.get("version"):
            subject["model_version"] = str(details["version"])
        audit.append(actor or _actor(), action, subject, details)

    return BlueGreen(settings.home_dir, load_config(settings.release_config), record, child_env(settings))


@rollout_app.command("status")
def rollout_status() -> None:
    """Which slot is live, with which version, Bento and digest."""
    print(json.dumps(_blue_green().status(), indent=2, sort_keys=True))


@rollout_app.command("rollback")
def rollout_rollback() -> None:
    """Back to the previous version: a switch while its slot still runs, else a release of that version."""
    from deployments.rollout import RolloutFailed

    target = _blue_green()
    state = target.state.load()
    previous = state.get("previous")
    if previous and previous in state["slots"]:
        try:
            target.roll_back_to(previous, reason="manual rollback")
        except RolloutFailed as exc:
            _fail(str(exc))
        typer.echo(f"live slot: {previous}")
        return
    retired = (state.get("retired") or {}).get("version")
    if not retired:
        _fail("nothing to roll back to: no earlier version has been live on this target")
    release(version=retired, override_reason=f"manual rollback to v{retired}")


@rollout_app.command("stop")
def rollout_stop() -> None:
    """Stop the router and both slots."""
    from deployments.rollout import RolloutFailed

    try:
        _blue_green().shutdown()
    except RolloutFailed as exc:
        _fail(str(exc))
    typer.echo("router and slots stopped")


@rollout_app.command("history")
def rollout_history(as_json: Annotated[bool, typer.Option("--json", help="JSON, for machines")] = False) -> None:
    """What served when: each switch, rollback, restart and stop as an interval (version, Bento, digest, slot)."""
    from core.settings import get_settings
    from deployments.history import served_intervals
    from governance.audit import audit_log

    intervals = served_intervals(audit_log(get_settings()).entries())
    if as_json:
        print(json.dumps(intervals, indent=2))
        return
    if not intervals:
        typer.echo("nothing has been live on this target yet")
    for i in intervals:
        until = i["to"] or "now (live)"
        digest = (i["digest"] or "no image")[:19]
        typer.echo(f"{i['from']}  →  {until:<32}  v{i['version']:<4} {i['slot']:<6} {digest:<20} {i['because']}")


@rollout_app.command("supervise")
def rollout_supervise(
    interval: Annotated[float, typer.Option(help="Seconds between checks")] = 2.0,
    once: Annotated[bool, typer.Option(help="Check once and exit")] = False,
) -> None:
    """Keep the live slot and the router up (started by `potable up`): restart what died, audit and alert."""
    import time

    from core.alerts import Alert, send_alert
    from core.settings import get_settings

    target = _blue_green(actor="supervisor")
    while True:
        repaired = target.repair()
        if repaired:
            typer.echo(json.dumps(repaired), err=True)
            restarted = repaired.get("restarted", True)
            send_alert(
                Alert(
                    title=f"live slot {repaired['slot']} {'restarted' if restarted else 'could not be restarted'}",
                    status="warning" if restarted else "failed",
                    model_version=str(repaired.get("version", "")),
                    reason=json.dumps(repaired),
                ),
                get_settings(),
            )
        if once:
            return
        time.sleep(interval)


@app.command()
def approvals() -> None:
    """Promotions waiting for a person: version, test metrics, since when, and the run's page in the Prefect UI."""
    _use_running_api("no Prefect API to ask: start the platform (`potable up`) or set PREFECT_API_URL")
    from potable.approvals import pending_approvals

    pending = pending_approvals()
    if not pending:
        typer.echo("no promotion waits for approval")
    for p in pending:
        typer.echo(
            f"v{p['version']:<4} waiting since {p['since']}  roc_auc {p['roc_auc']}  "
            f"false-potable {p['false_potable_rate']}  {p['url']}"
        )


def main() -> None:  # pragma: no cover - console entry point
    """The console entry point: an error a user can meet is one readable line (POTABLE_DEBUG=1: traceback)."""
    try:
        app()
    except Exception as exc:  # noqa: BLE001 - the last line of defence between a user and a traceback
        if os.environ.get("POTABLE_DEBUG", "").lower() in ("1", "true", "yes"):
            raise
        typer.secho(f"error: {exc} ({type(exc).__name__}; POTABLE_DEBUG=1 shows the traceback)", err=True, fg="red")
        raise SystemExit(1) from None


if __name__ == "__main__":  # pragma: no cover
    main()


@app.command("rollback")
def rollback() -> None:
    """Same as `potable rollout rollback`: back to the previous version on the local blue-green target."""
    rollout_rollback()
