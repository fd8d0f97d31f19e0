"""Commands that read the records: the audit trail and governance reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from potable.cli.app import audit_app, governance_app
from potable.cli.common import fail, prepare_environment


@audit_app.command("verify")
def audit_verify(
    path: Annotated[
        Path | None,
        typer.Option(help="Audit file; default POTABLE_AUDIT_DATABASE_URL's table, else POTABLE_HOME/audit"),
    ] = None,
) -> None:
    """Check the chain; exit 1 naming the first entry that was edited, deleted, inserted or reordered."""
    from core.settings import get_settings
    from governance.audit import AuditLog, audit_log

    trail = AuditLog(path) if path else audit_log(get_settings())
    if not trail.exists():
        fail(f"no audit trail at {trail.where}")
    verdict = trail.verify()
    if not verdict.ok:
        fail(f"audit trail {trail.where} is broken at {trail.unit} {verdict.bad_line}: {verdict.reason}")
    typer.echo(f"audit trail {trail.where} intact: {verdict.entries} entries")


@audit_app.command("lineage")
def audit_lineage(version: Annotated[str, typer.Option(help="Model version")]) -> None:
    """Print the chain of a model version: table version → its batches → run → version → gate → approval."""
    prepare_environment()
    from core.settings import get_settings
    from core.table import TableError, TrainingTable, training_table
    from core.versions import ModelRegistry, UnknownVersion
    from governance.audit import audit_log

    settings = get_settings()
    try:
        record = ModelRegistry(settings).get(version)
    except UnknownVersion as exc:
        fail(str(exc))
    batches: list[tuple[str, str]] = []
    if record.dataset_version is not None:
        table = training_table(settings)
        if record.table_uri and record.table_uri != table.uri:
            table = TrainingTable(record.table_uri, table.decimals, table.evaluation_share, table.storage_options)
        try:
            commits = [c for c in table.log() if c.version <= record.dataset_version and c.batch_sha256]
        except TableError as exc:
            fail(f"v{version} was trained on table v{record.dataset_version}, which cannot be read: {exc}")
        typer.echo(f"v{version} was trained on training table {table.uri} v{record.dataset_version}:")
        for c in commits:
            typer.echo(f"  table v{c.version:<4} batch {c.batch_sha256[:12]}  +{c.rows_added} rows  {c.source}")
            batches.append((c.batch_sha256, str(c.version)))
    entries = audit_log(settings).lineage(version, batches)
    if not entries:
        fail(f"no audit entries for model version {version}")
    for e in entries:
        subject = ", ".join(f"{k}={v[:12] if k == 'data_sha256' else v}" for k, v in e["subject"].items())
        typer.echo(f"{e['timestamp']}  {e['action']:<20} {subject}  by {e['actor']}")


@governance_app.command("report")
def governance_report(
    version: Annotated[str, typer.Option(help="Model version")],
    out: Annotated[Path | None, typer.Option(help="HTML file; default POTABLE_HOME/reports/governance_vN.html")] = None,
) -> None:
    """One HTML page: model card, policy results, slice table and audit lineage of a version."""
    prepare_environment()
    from core.settings import get_settings
    from governance.report import write_governance_report

    try:
        path = write_governance_report(version, get_settings(), out)
    except LookupError as exc:
        fail(str(exc))
    typer.echo(str(path))
