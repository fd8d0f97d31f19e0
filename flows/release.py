"""The `release` flow: approved champion → idle slot → checks → switch → watch → keep or roll back."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect import flow, get_client, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.events import emit_event

from core.alerts import FLOW_ALERT_HOOKS
from core.batches import read_batch
from core.environment import child_env
from core.settings import BUNDLED_DATA, MODEL_NAME, Settings, get_settings, load_config
from deployments.rollout import BlueGreen, Outcome, RolloutFailed
from governance.audit import audit_log
from tasks.data import split_batch
from tasks.registry import setup_mlflow

CHAMPION = "champion"
RELEASE_LIMIT = "potable-release"  # Prefect global concurrency limit: one release at a time, queued


class ReleaseRefused(Exception):
    """The version may not go live: not the approved champion (and no override), or no Bento."""


class ReleaseRolledBack(Exception):
    """The new slot misbehaved after the switch; the live path is back on the previous slot."""


@task(cache_policy=NO_CACHE)
def releasable_version(version: str | None, override_reason: str | None, settings: Settings, actor: str):
    """The champion (default), or another gated version only with a stated, audited override."""
    setup_mlflow(settings)
    client = MlflowClient()
    try:
        champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except MlflowException:
        champion = None
    wanted = version or (champion.version if champion else None)
    if wanted is None:
        raise ReleaseRefused(f"no {MODEL_NAME} version has alias {CHAMPION!r}; approve one first (potable promote)")
    try:
        mv = client.get_model_version(MODEL_NAME, str(wanted))
    except MlflowException:
        raise ReleaseRefused(f"{MODEL_NAME} v{wanted} does not exist") from None
    is_champion = champion is not None and str(champion.version) == str(mv.version)
    if not is_champion and not override_reason:
        raise ReleaseRefused(
            f"{MODEL_NAME} v{mv.version} is not the approved champion "
            f"(champion: {f'v{champion.version}' if champion else 'none'}); pass an override reason to release it"
        )
    if not mv.tags.get("bento_tag"):
        raise ReleaseRefused(f"{MODEL_NAME} v{mv.version} has no Bento (potable package --version {mv.version})")
    # Who asked for which version and why; a non-champion release is an override, audited as such.
    action = "release_requested" if is_champion else "release_override"
    details = {"reason": override_reason or "approved champion", "champion": is_champion}
    audit_log(settings).append(actor, action, {"model_version": str(mv.version)}, details)
    return mv


@task(cache_policy=NO_CACHE)
def golden_set(version: str, rows: int, training: dict[str, Any]) -> tuple[pd.DataFrame, np.ndarray, float]:
    """Held-out rows, the registered model's own answers on them, and its share called potable on the hold-out."""
    hold_out = split_batch(read_batch(BUNDLED_DATA), training["test_size"], training["seed"]).X_test
    model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{version}")
    threshold = float(MlflowClient().get_model_version(MODEL_NAME, version).tags.get("threshold", 0.5))
    proba = model.predict_proba(hold_out)[:, 1]
    return hold_out.head(rows), proba[:rows], float(np.mean(proba >= threshold))


@task(cache_policy=NO_CACHE)
def publish_image(version: str, settings: Settings, actor: str) -> dict[str, str]:
    """The version's Bento as an OCI image in the registry; digest on the MLflow version and in the audit trail.

    Tag = model version + short commit. For an ECR registry the repository is created if missing (scan on
    push, immutable tags) and the push uses get_authorization_token's credentials.
    """
    from deployments import image

    setup_mlflow(settings)
    client = MlflowClient()
    mv = client.get_model_version(MODEL_NAME, version)
    if not mv.tags.get("bento_tag"):
        raise ReleaseRefused(f"{MODEL_NAME} v{version} has no Bento (potable package --version {version})")
    if settings.image_base == image.LOCAL_BASE:
        image.ensure_base_image(settings.debian_mirror, settings.image_ca_dir)
    credentials, tls_verify = None, settings.image_tls_verify
    if image.is_ecr(settings.image_registry):
        import boto3

        from deployments.aws import ensure_repository, registry_login

        ecr = boto3.client("ecr", region_name=settings.aws_region, endpoint_url=settings.aws_endpoint_url)
        ensure_repository(ecr, settings.image_repository)
        login = registry_login(ecr)
        credentials, tls_verify = f"{login.username}:{login.password}", True
    tag = f"{version}-{(mv.tags.get('git_commit') or 'nocommit')[:7]}"
    pushed = image.publish(
        mv.tags["bento_tag"],
        tag,
        settings.image_registry,
        settings.image_repository,
        tls_verify,
        credentials,
        child_env(settings),
    )
    client.set_model_version_tag(MODEL_NAME, version, "image", pushed.reference)
    client.set_model_version_tag(MODEL_NAME, version, "image_digest", pushed.digest)
    subject = {"model_version": version, "bento_tag": mv.tags["bento_tag"], "image_digest": pushed.digest}
    audit_log(settings).append(actor, "image_pushed", subject, {"image": pushed.reference})
    return {"image": pushed.reference, "digest": pushed.digest, "local": f"localhost/{settings.image_repository}:{tag}"}


def recorder(settings: Settings, version: str, actor: str):
    audit = audit_log(settings)

    def record(action: str, details: dict[str, Any]) -> None:
        audit.append(actor, action, {"model_version": version, "slot": str(details.get("slot", ""))}, details)

    return record


def local_target(settings: Settings, config: dict[str, Any], version: str, actor: str) -> BlueGreen:
    """The nginx + two-slot target; every slot gets the environment derived from the settings."""
    return BlueGreen(settings.home_dir, config, recorder(settings, version, actor), child_env(settings))


def one_release_at_a_time(timeout_seconds: float):
    """Prefect's global concurrency limit `potable-release` (created with one slot): a second release queues."""
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(RELEASE_LIMIT, 1)
    return concurrency(RELEASE_LIMIT, occupy=1, timeout_seconds=timeout_seconds, strict=True)


@flow(name="release", log_prints=True, **FLOW_ALERT_HOOKS)
def release(version: str | None = None, override_reason: str | None = None, actor: str = "release-flow") -> dict:
    """champion → (image) → idle slot → ready → smoke → latency → switch → watch → keep, or roll back."""
    settings = get_settings()
    settings.ensure_dirs()
    config = load_config(settings.release_config)
    audit = audit_log(settings)
    try:
        mv = releasable_version(version, override_reason, settings, actor)
        with one_release_at_a_time(config.get("queue_timeout_seconds", 900)):
            return roll_out(mv, config, settings, actor)
    except (ReleaseRefused, TimeoutError, RolloutFailed) as exc:
        # A refusal touches nothing live; it is audited like every release request.
        reason = {
            TimeoutError: "another release kept the target busy",
            RolloutFailed: f"a check before the switch failed, the live path is unchanged: {exc}",
        }.get(type(exc), str(exc))
        audit.append(actor, "release_refused", {"model_version": str(version)} if version else {}, {"reason": reason})
        if isinstance(exc, ReleaseRefused):
            raise
        raise ReleaseRefused(f"{'v' + str(version) if version else 'the champion'} was not released: {reason}") from exc


def roll_out(mv, config: dict[str, Any], settings: Settings, actor: str) -> dict:
    on_aws = config.get("target", "local") == "aws"
    if (on_aws or config.get("image", {}).get("build_local")) and not mv.tags.get("image"):
        publish_image(str(mv.version), settings, actor)  # AWS runs the image; locally it is the setting's call
        mv = MlflowClient().get_model_version(MODEL_NAME, str(mv.version))
    if on_aws:
        return report(release_on_aws(mv, config, settings), settings, actor)
    golden, expected, share = golden_set(
        str(mv.version), config["smoke"]["golden_rows"], load_config(settings.training_config)
    )
    target = local_target(settings, config, str(mv.version), actor)
    outcome = target.release(
        str(mv.version), mv.tags["bento_tag"], golden, expected, mv.tags.get("image_digest"), expected_share=share
    )
    return report(outcome, settings, actor)


def release_on_aws(mv, config: dict[str, Any], settings: Settings) -> Outcome:
    """The AWS target (configs/release.yaml `target: aws`): the version's pushed image onto the idle ECS service."""
    import boto3

    from deployments.aws import AwsBlueGreen

    if not mv.tags.get("image"):
        raise ReleaseRefused(f"{MODEL_NAME} v{mv.version} has no pushed image (potable image --version {mv.version})")
    aws = config["aws"]

    def client(name: str):
        return boto3.client(name, region_name=settings.aws_region, endpoint_url=settings.aws_endpoint_url)

    target = AwsBlueGreen(
        client("ecs"),
        client("elbv2"),
        client("cloudwatch"),
        aws["cluster"],
        aws["service_prefix"],
        aws["listener_arn"],
        aws["target_groups"],
        aws["load_balancer"],
    )
    result = target.release(mv.tags["image"], aws["container"], aws["task_family"], aws["desired_count"], aws["rules"])
    return Outcome(
        result["status"],
        str(mv.version),
        result["live"],
        result["previous"],
        result["seconds_ready_to_switched"],
        breach=result["breach"],
    )


def report(outcome: Outcome, settings: Settings, actor: str) -> dict[str, Any]:
    """Record the outcome on MLflow, the audit trail and a Prefect artifact; a rollback fails the flow."""
    summary = asdict(outcome)
    emit_event(
        f"potable.release.{outcome.status}",
        resource={"prefect.resource.id": f"potable.model.{MODEL_NAME}.{outcome.version}"},
        payload={k: summary[k] for k in ("version", "slot", "previous_slot", "breach")},
    )
    MlflowClient().set_model_version_tag(MODEL_NAME, outcome.version, "release", f"{outcome.status} ({outcome.slot})")
    audit_log(settings).append(
        actor, f"release_{outcome.status}", {"model_version": outcome.version, "slot": outcome.slot}, summary
    )
    create_markdown_artifact(
        key="release",
        markdown=f"# Release of {MODEL_NAME} v{outcome.version}: {outcome.status}\n\n"
        f"live slot: **{outcome.slot}**; ready → switched {outcome.seconds_ready_to_switched:.2f} s"
        + (
            f"; breach {outcome.breach}, rolled back in {outcome.seconds_breach_to_rollback:.2f} s"
            if outcome.breach
            else ""
        ),
    )
    if outcome.status == "rolled_back":
        raise ReleaseRolledBack(
            f"v{outcome.version} rolled back to slot {outcome.slot}: {outcome.breach} "
            f"({outcome.seconds_breach_to_rollback:.2f} s after the breach was measured)"
        )
    return summary
