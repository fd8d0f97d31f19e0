"""Commands on the training table: start it from your own history, and read its versions."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from potable.cli.app import data_app
from potable.cli.common import actor, fail, prepare_environment


def _table():
    prepare_environment()
    from core.settings import get_settings
    from core.table import TableError, training_table

    settings = get_settings()
    table = training_table(settings)
    if not table.exists():
        fail(
            f"no training table at {table.uri} yet: `potable train` starts it from the seed data, "
            "`potable data init FILE` from yours"
        )
    return settings, table, TableError


@data_app.command("init")
def data_init(
    path: Annotated[str, typer.Argument(help="CSV path or s3://bucket/key: your own history of lab results")],
) -> None:
    """Start a new training table from your own data (instead of the bundled sample), validated first."""
    prepare_environment()
    from core.settings import get_settings
    from tasks.data import BatchError, fetch_batch, read_batch
    from tasks.dataset import TableRefused, seed_table, training_table
    from tasks.validation import validate_batch

    settings = get_settings()
    table = training_table(settings)
    if table.exists():
        fail(
            f"the training table at {table.uri} already has versions 0..{table.latest_version()}: "
            "new data goes in as batches (`potable train --data FILE` or the landing folder)"
        )
    try:
        batch = fetch_batch(path, settings)
    except BatchError as exc:
        fail(f"data init failed: {exc}")
    report = validate_batch(batch, settings)
    if not report.success:
        fail("\n".join([f"data init refused: {batch.uri} failed validation:", *(f"  - {f}" for f in report.failures)]))
    try:
        appended = seed_table(table, batch, read_batch(batch.path), settings, actor())
    except TableRefused as exc:
        fail(str(exc))
    typer.echo(
        f"training table {table.uri} started from {batch.uri}: v{appended.version}, {appended.rows_added} rows"
        + (f" ({appended.duplicates} duplicate rows dropped)" if appended.duplicates else "")
    )


@data_app.command("log")
def data_log(as_json: Annotated[bool, typer.Option("--json", help="One JSON list")] = False) -> None:
    """One entry per table version: when, which batch, from where, rows added and in total."""
    _, table, _ = _table()
    commits = [c.as_dict() for c in table.log()]
    if as_json:
        typer.echo(json.dumps(commits, indent=2))
        return
    for c in commits:
        typer.echo(
            f"v{c['version']:<4} {c['time']}  +{c['rows_added']:<6} = {c['rows_total']:<7} "
            f"batch {str(c['batch_sha256'])[:12]}  {c['source']}"
            + (f"  ({c['duplicates']} already present)" if c.get("duplicates") else "")
        )


@data_app.command("show")
def data_show(
    version: Annotated[int | None, typer.Option(help="Table version (default the latest)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of text")] = False,
) -> None:
    """Rows of a version: counts per label and split, and per batch."""
    _, table, table_error = _table()
    try:
        shown = table.show(version)
    except table_error as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    labels, splits = shown["labels"], shown["splits"]
    typer.echo(
        f"table {table.uri} v{shown['version']}: {shown['rows']} rows "
        f"(potable {labels.get('1', 0)}, not potable {labels.get('0', 0)}; train {splits.get('train', 0)}, "
        f"evaluation {splits.get('evaluation', 0)}), digest {shown['digest'][:12]}"
    )
    for b in shown["batches"]:
        typer.echo(
            f"  v{b['version']:<4} batch {b['batch_sha256'][:12]}  {b['rows']:>7} rows  potable {b['potable']:>6}  "
            f"not potable {b['not_potable']:>6}  evaluation {b['evaluation_rows']:>6}  {b['source']}"
        )


@data_app.command("diff")
def data_diff(
    a: Annotated[int, typer.Argument(help="From table version")],
    b: Annotated[int, typer.Argument(help="To table version")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of text")] = False,
) -> None:
    """Rows in one version and not the other, their labels, and the batches that brought them."""
    _, table, table_error = _table()
    try:
        diff = table.diff(a, b)
    except table_error as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(diff, indent=2))
        return
    typer.echo(
        f"v{a} -> v{b}: +{diff['rows_added']} rows (labels {diff['labels_added']}), -{diff['rows_removed']} rows; "
        f"batches added: {', '.join(s[:12] for s in diff['batches_added']) or 'none'}"
    )
