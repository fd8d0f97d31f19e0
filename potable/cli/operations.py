"""Commands that run the platform: up, down, status, watch, monitor."""

from __future__ import annotations

import json
import signal
from typing import Annotated

import typer

from potable.cli.app import app
from potable.cli.common import fail, interrupt, prepare_environment, run_flow


@app.command()
def up() -> None:
    """Start Prefect server (UI), a worker, the MLflow UI, the reports server and the data watcher; register
    the deployments. Shows each step as it finishes, then where everything is."""
    from core.settings import get_settings
    from potable.platform import PlatformError
    from potable.platform import up as platform_up

    prepare_environment()
    settings = get_settings()
    typer.echo(f"starting potable in {settings.home_dir} ...", err=True)
    signal.signal(signal.SIGTERM, interrupt)  # SIGTERM stops what was started, as Ctrl-C does
    try:
        report = platform_up(settings, say=lambda line: typer.echo(f"  {line}", err=True))
    except PlatformError as exc:
        fail(f"potable up failed (everything it started was stopped): {exc}")
    except KeyboardInterrupt:
        typer.secho("potable up interrupted; everything it started was stopped", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=130) from None
    typer.echo(operator_screen(settings, report))


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
    """What runs where, with health: every service `up` started, the router and the live slot (exit 1 when a
    service `up` starts is down)."""
    from core.settings import get_settings
    from potable.platform import status as platform_status

    settings = get_settings()
    report = platform_status(settings)
    print_status(report)
    for name, state, url, where in release_rows():
        typer.echo(f"{name:<16}{state:<34}{url:<28}{where}")
    typer.echo(f"{'alerts':<16}{'; '.join(alert_destinations(settings))}")
    typer.echo(f"{'ports':<16}{port_settings(settings)}")
    if not all(s["running"] for s in report.values()):
        raise typer.Exit(code=1)


HEALTH_PATHS = {"prefect-server": "/api/health", "mlflow": "/health", "reports": "/"}


def print_status(report: dict[str, dict]) -> None:
    for name, s in report.items():
        state = f"running (pid {s['pid']})" if s["running"] else "stopped"
        if s["running"] and name in HEALTH_PATHS:
            state += " ok" if _answers(s["url"] + HEALTH_PATHS[name]) else " NOT ANSWERING"
        typer.echo(f"{name:<16}{state:<34}{s['url']:<28}{s['log']}")


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def release_rows() -> list[tuple[str, str, str, str]]:
    """The router and the live slot, each with health (what `potable rollout status` knows, checked now)."""
    from potable.cli.release import blue_green

    found = blue_green().status()
    live = found["slots"].get(found.get("live") or "")
    router_state = "running" if found["router_running"] else "not started (no release yet)"
    rows = [("router", router_state, found["router"], "edge of the prediction API (nginx)")]
    if live is None:
        return rows + [("live slot", "none (no version released yet)", "", "")]
    url = f"http://127.0.0.1:{live['port']}"
    health = "ready" if live["running"] and _answers(f"{url}/readyz") else "NOT ANSWERING"
    return rows + [("live slot", f"{found['live']}: v{live['version']} {health}", url, live.get("log", ""))]


def alert_destinations(settings) -> list[str]:
    from core.alerts import destinations

    return destinations(settings)


# Runs a person should look at: promotions waiting for approval, versions the gate refused, releases that
# rolled back, failures. The Prefect UI filters its runs list by state name from the URL.
NEEDS_A_PERSON = ("Paused", "Suspended", "GateFailed", "RolledBack", "Failed", "Crashed", "TimedOut")


def needs_a_person_url(ui: str) -> str:
    return f"{ui}/runs?" + "&".join(f"state={name}" for name in NEEDS_A_PERSON)


def port_settings(settings) -> str:
    """Every port `up` uses, and the setting that changes it."""
    ports = f"prefect {settings.prefect_port}, mlflow {settings.mlflow_port}, reports {settings.reports_port}"
    settings_named = "POTABLE_PREFECT_PORT, POTABLE_MLFLOW_PORT, POTABLE_REPORTS_PORT"
    return f"{ports} ({settings_named}); router and slots: {settings.release_config}"


def operator_screen(settings, report: dict[str, dict]) -> str:
    """What an operator needs after `up`: where to look, where to drop data, what is live, how to stop."""
    ui = report.get("prefect-server", {}).get("url", "")
    rows = [
        ("Prefect UI", ui),
        ("Needs a person", needs_a_person_url(ui)),
        ("MLflow UI", report.get("mlflow", {}).get("url", "")),
        ("Reports", f"{report.get('reports', {}).get('url', '')}  (model cards, Data Docs, drift reports)"),
        ("Landing folder", f"{settings.landing}  (drop lab CSVs here)"),
    ]
    for name, state, url, _ in release_rows():
        rows.append((name.capitalize(), f"{url}  {state}".strip()))
    rows += [("Alerts go to", "; ".join(alert_destinations(settings)))]
    rows += [("Ports", port_settings(settings))]
    rows += [("Logs", str(settings.home_dir / "logs")), ("Stop", "./dev potable down")]
    lines = ["", "potable is up", ""] + [f"  {name:<15} {value}" for name, value in rows] + ["", "services:"]
    lines += [
        f"  {name:<16}{'running (pid ' + str(s['pid']) + ')' if s['running'] else 'stopped':<24}{s['url']}"
        for name, s in report.items()
    ]
    return "\n".join(lines)


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


@app.command()
def alerts(
    last: Annotated[int, typer.Option(help="How many of the newest alerts to show")] = 20,
    follow: Annotated[bool, typer.Option("--follow", help="Keep printing alerts as they come (Ctrl-C stops)")] = False,
) -> None:
    """Alerts sent from this home, newest last: what happened, why, where to look (no set-up needed)."""
    import time

    from core.alerts import read_log
    from core.settings import get_settings

    prepare_environment()
    settings = get_settings()
    shown = read_log(settings)
    for alert in shown[-last:] if last > 0 else []:
        typer.echo(alert_line(alert))
    if not shown and not follow:
        typer.echo("no alerts yet")
    while follow:
        time.sleep(1)
        found = read_log(settings)
        for alert in found[len(shown) :]:
            typer.echo(alert_line(alert))
        shown = found


def alert_line(alert: dict) -> str:
    reason = (alert.get("reason") or "").strip().splitlines()
    parts = [alert["at"], f"{alert['status'].upper():<9}", alert["title"]]
    parts += [f"v{alert['model_version']}"] if alert.get("model_version") else []
    parts += [reason[0][:160]] if reason else []
    parts += [alert["run_url"]] if alert.get("run_url") else []
    return "  ".join(parts)
