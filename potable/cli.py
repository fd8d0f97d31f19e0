"""`potable`: one CLI whose subcommands call the flows."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from potable.prefect_api import prefect_api

app = typer.Typer(help="potable: a governed ML lifecycle for a water-potability classifier.", no_args_is_help=True)


def _prepare_environment() -> Path:
    """Keep Prefect's own state beside ours unless the user points Prefect elsewhere; return the home."""
    from potable.settings import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    os.environ.setdefault("PREFECT_HOME", str(settings.home_dir / "prefect"))
    # No phoning home: the platform runs on closed networks.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return settings.home_dir


def _fail(message: str) -> None:
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(code=1)


@app.command()
def train(
    data: Annotated[str | None, typer.Option(help="CSV path or s3://bucket/key; default: the bundled data")] = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Optuna trials (default from configs/training.yaml)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for split, CV and sampler")] = None,
) -> None:
    """Validate a batch, tune, evaluate and register a model; the last stdout line is a JSON summary."""
    home = _prepare_environment()
    with prefect_api(home) as server:
        from potable.expectations import start_prevalidation
        from potable.settings import BUNDLED_DATA, get_settings

        data = data or str(BUNDLED_DATA)
        start_prevalidation(data, get_settings())
        # Imported while the Prefect server and the validation worker start: ~10 s each, on two cores.
        from flows.training import BatchRejected
        from flows.training import train as train_flow
        from tasks.data import BatchError

        if server is not None:
            server.wait_healthy()
        try:
            summary = train_flow(data=data, trials=trials, seed=seed, show_progress=sys.stderr.isatty())
        except (BatchRejected, BatchError) as exc:
            _fail(f"training stopped, nothing registered: {exc}")
    print(json.dumps(summary, sort_keys=True))


@app.command()
def validate(
    path: Annotated[str, typer.Argument(help="CSV path or s3://bucket/key")],
    quarantine: Annotated[bool, typer.Option(help="Move a failing batch to quarantine")] = False,
) -> None:
    """Validate one batch with the Great Expectations suite (exit 0 valid, 1 rejected)."""
    _prepare_environment()
    from potable.settings import get_settings
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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
