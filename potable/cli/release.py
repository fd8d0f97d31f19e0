"""Commands that take a version live and keep it there: release, image, rollout …, rollback."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from potable.cli.app import app, rollout_app
from potable.cli.common import actor, fail, run_flow


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

    summary = run_flow("release", load, version=version, override_reason=override_reason, actor=actor())
    print(json.dumps(summary, sort_keys=True))


@app.command()
def image(version: Annotated[str, typer.Option(help="Gated version whose Bento becomes the image")]) -> None:
    """Build the version's OCI image with buildah (no Docker daemon) and push it to POTABLE_IMAGE_REGISTRY."""

    def load():
        from core.settings import get_settings
        from deployments.image import ImageError
        from flows.release import ReleaseRefused, publish_image

        return (lambda: publish_image(version, get_settings(), actor())), (ImageError, ReleaseRefused)

    pushed = run_flow("image", load)
    print(json.dumps(pushed, sort_keys=True))


def blue_green(who: str | None = None):
    """The local target, with this process's environment derived from the settings and an audit recorder."""
    from core import configs
    from core.environment import apply, child_env
    from core.settings import get_settings
    from deployments.rollout import BlueGreen
    from governance.audit import audit_log

    settings = apply(get_settings())
    audit = audit_log(settings)

    def record(action: str, details: dict) -> None:
        subject = {"slot": str(details.get("slot", ""))}
        if details.get("version"):
            subject["model_version"] = str(details["version"])
        audit.append(who or actor(), action, subject, details)

    return BlueGreen(settings.home_dir, configs.release(settings).rules(), record, child_env(settings))


@rollout_app.command("status")
def rollout_status() -> None:
    """Which slot is live, with which version, Bento and digest."""
    print(json.dumps(blue_green().status(), indent=2, sort_keys=True))


@rollout_app.command("rollback")
def rollout_rollback() -> None:
    """Back to the previous version: a switch while its slot still runs, else a release of that version."""
    from deployments.rollback import roll_back
    from deployments.rollout import RolloutFailed

    try:
        typer.echo(roll_back(blue_green(), lambda version, reason: release(version=version, override_reason=reason)))
    except RolloutFailed as exc:
        fail(str(exc))


@app.command("rollback")
def rollback() -> None:
    """Same as `potable rollout rollback`: back to the previous version on the local blue-green target."""
    rollout_rollback()


@rollout_app.command("stop")
def rollout_stop() -> None:
    """Stop the router and both slots."""
    from deployments.rollout import RolloutFailed

    try:
        blue_green().shutdown()
    except RolloutFailed as exc:
        fail(str(exc))
    typer.echo("router and slots stopped")


@rollout_app.command("history")
def rollout_history(as_json: Annotated[bool, typer.Option("--json", help="JSON, for machines")] = False) -> None:
    """What served when: each switch, rollback, restart and stop as an interval (version, slot, what ran it)."""
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
        runs = i["runs"] if "@" not in i["runs"] else f"image {i['runs'].rsplit('@', 1)[-1][:19]}"
        typer.echo(f"{i['from']}  →  {until:<32}  v{i['version']:<4} {i['slot']:<6} {runs:<40} {i['because']}")


@rollout_app.command("supervise")
def rollout_supervise(
    interval: Annotated[float, typer.Option(help="Seconds between checks")] = 2.0,
    once: Annotated[bool, typer.Option(help="Check once and exit")] = False,
) -> None:
    """Keep the live slot and the router up (started by `potable up`): restart what died, audit and alert."""
    from core.settings import get_settings
    from potable.supervisor import supervise

    supervise(blue_green(who="supervisor"), get_settings(), interval, once, lambda line: typer.echo(line, err=True))
