"""Commands that run the platform: up, down, status, watch, monitor."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from potable.cli.app import app
from potable.cli.common import fail, prepare_environment, run_flow


@app.command()
def up() -> None:
    """Start Prefect server (UI), a worker, the MLflow UI and the data watcher; register the deployments."""
    from core.settings import get_settings
    from potable.platform import PlatformError
    from potable.platform import up as platform_up

    prepare_environment()
    try:
        report = platform_up(get_settings())
    except PlatformError as exc:
        fail(f"potable up failed (everything it started was stopped): {exc}")
    print_status(report)


@app.command()
def down() -> None:
    """Stop everything `potable up` started, and the router and slots releases started."""
    from core.settings import get_settings
    from potable.cli.release import blue_green
    from potable.platform import down as platform_down

    stopped = platform_down(get_settings())
    target = blue_green()
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
    print_status(report)
    if not all(s["running"] for s in report.values()):
        raise typer.Exit(code=1)


def print_status(report: dict[str, dict]) -> None:
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

    prepare_environment()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call would drown the arrivals
    settings = get_settings()
    where = source or settings.landing
    typer.echo(f"watching {where}", err=True)
    emitted = watch_loop(source_for(where, settings), interval or settings.watch_interval_seconds, once, backfill)
    if once:
        print(json.dumps({"watched": where, "events": emitted}))


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

    summary = run_flow("drift monitoring", load, window_hours=window_hours, retrain_on_drift=retrain)
    print(json.dumps(summary, sort_keys=True))
    if summary["drifted"]:
        raise typer.Exit(code=3)
