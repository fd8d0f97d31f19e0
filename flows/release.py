"""The `release` flow: approved champion → idle slot → checks → switch → watch → keep or roll back."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.events import emit_event
from prefect.states import Failed

from core import configs
from core.alerts import FLOW_ALERT_HOOKS
from core.environment import child_env
from core.settings import MODEL_NAME, Settings, get_settings
from core.versions import CHAMPION, ModelRegistry, UnknownVersion, VersionRecord
from deployments.rollout import BlueGreen, Outcome, RolloutFailed, interval_words
from governance.audit import audit_log
from tasks.outcomes import refused
from tasks.packaging import PackagingRefused, local_bento
from tasks.release_evidence import judging_evidence
from tasks.retries import io_retries

RELEASE_LIMIT = "potable-release"  # Prefect global concurrency limit: one release at a time, queued


class ReleaseRefused(Exception):
    """The version may not go live: not the approved champion (and no override), or no Bento."""


class ReleaseRolledBack(Exception):
    """The new slot misbehaved after the switch; the live path is back on the previous slot."""


@task(cache_policy=NO_CACHE)
def releasable_version(version: str | None, override_reason: str | None, settings: Settings, actor: str):
    """The champion (default), or another gated version only with a stated, audited override."""
    registry = ModelRegistry(settings)
    champion = registry.champion()
    wanted = version or (champion.version if champion else None)
    if wanted is None:
        raise ReleaseRefused(f"no {MODEL_NAME} version has alias {CHAMPION!r}; approve one first (potable promote)")
    try:
        record = registry.get(wanted)
    except UnknownVersion as exc:
        raise ReleaseRefused(str(exc)) from None
    if not record.is_champion and not override_reason:
        raise ReleaseRefused(
            f"{MODEL_NAME} v{record.version} is not the approved champion "
            f"(champion: {f'v{champion.version}' if champion else 'none'}); pass an override reason to release it"
        )
    if not record.bento_tag:
        raise ReleaseRefused(
            f"{MODEL_NAME} v{record.version} has no Bento (potable package --version {record.version})"
        )
    # Who asked for which version and why; a non-champion release is an override, audited as such.
    action = "release_requested" if record.is_champion else "release_override"
    details = {"reason": override_reason or "approved champion", "champion": record.is_champion}
    audit_log(settings).append(actor, action, {"model_version": record.version}, details)
    return record


@task(cache_policy=NO_CACHE, **io_retries(ReleaseRefused, PackagingRefused))
def bento_here(record: VersionRecord, settings: Settings, actor: str) -> str:
    """The version's Bento in this worker's store: rebuilt from the registry when it was packaged elsewhere."""
    return local_bento(record, settings, actor)


@task(cache_policy=NO_CACHE, **io_retries(ReleaseRefused))
def publish_image(version: str, settings: Settings, actor: str) -> dict[str, str]:
    """The version's Bento as an OCI image in the registry; digest on the version record and in the audit trail.

    Tag = model version + short commit. For an ECR registry the repository is created if missing (scan on
    push, immutable tags) and the push uses get_authorization_token's credentials.
    """
    from deployments import image

    registry = ModelRegistry(settings)
    record = registry.get(version)
    if not record.bento_tag:
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
    tag = f"{version}-{(record.git_commit or 'nocommit')[:7]}"
    pushed = image.publish(
        local_bento(record, settings, actor),
        tag,
        settings.image_registry,
        settings.image_repository,
        tls_verify,
        credentials,
        child_env(settings),
    )
    registry.record(version, image=pushed.reference, image_digest=pushed.digest)
    subject = {"model_version": version, "bento_tag": record.bento_tag, "image_digest": pushed.digest}
    audit_log(settings).append(actor, "image_pushed", subject, {"image": pushed.reference})
    return {"image": pushed.reference, "digest": pushed.digest, "local": f"localhost/{settings.image_repository}:{tag}"}


def recorder(settings: Settings, version: str, actor: str):
    audit = audit_log(settings)

    def record(action: str, details: dict[str, Any]) -> None:
        audit.append(actor, action, {"model_version": version, "slot": str(details.get("slot", ""))}, details)

    return record


def local_target(settings: Settings, config: dict[str, Any], version: str, actor: str) -> BlueGreen:
    """The nginx + two-slot target; every slot gets the environment derived from the settings."""
    say = get_run_logger().info  # the release narrates itself in its run's log
    record, env = recorder(settings, version, actor), child_env(settings)
    return BlueGreen(settings.home_dir, config, record, env, say=say, image_tls_verify=settings.image_tls_verify)


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
    config = configs.release(settings).rules()
    audit = audit_log(settings)
    try:
        record = releasable_version(version, override_reason, settings, actor)
        with one_release_at_a_time(config.get("queue_timeout_seconds", 900)):
            return roll_out(record, config, settings, actor)
    except (ReleaseRefused, TimeoutError, RolloutFailed) as exc:
        # A refusal touches nothing live; it is audited like every release request.
        reason = {
            TimeoutError: "another release kept the target busy",
            RolloutFailed: f"a check before the switch failed, the live path is unchanged: {exc}",
        }.get(type(exc), str(exc))
        audit.append(actor, "release_refused", {"model_version": str(version)} if version else {}, {"reason": reason})
        if isinstance(exc, ReleaseRefused):
            return refused(exc)
        return refused(
            ReleaseRefused(f"{'v' + str(version) if version else 'the champion'} was not released: {reason}")
        )


def pushed_by_digest(record: VersionRecord) -> str:
    """registry/repository@sha256:…: the exact image the registry holds for the version, whatever its tag
    points at later."""
    return f"{record.image.rsplit(':', 1)[0]}@{record.image_digest}"


def roll_out(record: VersionRecord, config: dict[str, Any], settings: Settings, actor: str) -> dict:
    on_aws = config.get("target", "local") == "aws"
    from_image = bool(config.get("image", {}).get("build_local"))
    if (on_aws or from_image) and not record.image:
        publish_image(record.version, settings, actor)  # AWS runs the image; locally it is the setting's call
        record = ModelRegistry(settings).get(record.version)
    if on_aws:
        return report(release_on_aws(record, config, settings), settings, actor)
    target = local_target(settings, config, record.version, actor)
    judging = judging_evidence(record, config["smoke"]["golden_rows"], target.live_version(), settings)
    bento_tag = bento_here(record, settings, actor)
    outcome = target.release(
        record.version,
        bento_tag,
        judging.golden,
        judging.expected,
        record.image_digest,
        expected_share=judging.expected_share,
        previous_model=judging.replaced,
        expected_disagreement=judging.replaced.disagreement if judging.replaced else None,
        image=pushed_by_digest(record) if from_image else None,
    )
    return report(outcome, settings, actor)


def release_on_aws(record: VersionRecord, config: dict[str, Any], settings: Settings) -> Outcome:
    """The AWS target (configs/release.yaml `target: aws`): the version's pushed image onto the idle ECS service."""
    import boto3

    from deployments.aws import AwsBlueGreen

    if not record.image:
        raise ReleaseRefused(
            f"{MODEL_NAME} v{record.version} has no pushed image (potable image --version {record.version})"
        )
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
    result = target.release(record.image, aws["container"], aws["task_family"], aws["desired_count"], aws["rules"])
    return Outcome(
        result["status"],
        record.version,
        result["live"],
        result["previous"],
        result["seconds_ready_to_switched"],
        breach=result["breach"],
    )


RELEASE_WORDS = {"released": "released", "rolled_back": "ROLLED BACK"}


def report(outcome: Outcome, settings: Settings, actor: str) -> dict[str, Any] | Failed:
    """Record the outcome on MLflow, the audit trail and a Prefect artifact; a rollback fails the flow."""
    summary = asdict(outcome)
    emit_event(
        f"potable.release.{outcome.status}",
        resource={"prefect.resource.id": f"potable.model.{MODEL_NAME}.{outcome.version}"},
        payload={k: summary[k] for k in ("version", "slot", "previous_slot", "breach")},
    )
    ModelRegistry(settings).record(outcome.version, release=f"{outcome.status} ({outcome.slot})")
    audit_log(settings).append(
        actor, f"release_{outcome.status}", {"model_version": outcome.version, "slot": outcome.slot}, summary
    )
    intervals = "\n".join(f"| {n} | {interval_words(seen)} |" for n, seen in enumerate(outcome.watched, start=1))
    create_markdown_artifact(
        key="release",
        markdown=f"# Release of {MODEL_NAME} v{outcome.version}: {RELEASE_WORDS.get(outcome.status)}\n\n"
        f"live slot: **{outcome.slot}**; ready → switched {outcome.seconds_ready_to_switched:.2f} s"
        + (
            f"; breach {outcome.breach}, rolled back in {outcome.seconds_breach_to_rollback:.2f} s"
            if outcome.breach
            else ""
        )
        + (f"\n\n### Watch window\n\n| interval | figures |\n|---|---|\n{intervals}" if intervals else ""),
    )
    if outcome.status == "rolled_back":
        # A state named for what happened: the runs list says RolledBack, not a bare Failed; calling the flow
        # still raises ReleaseRolledBack (the state carries it).
        rolled_back = ReleaseRolledBack(
            f"v{outcome.version} rolled back to slot {outcome.slot}: {outcome.breach} "
            f"({outcome.seconds_breach_to_rollback:.2f} s after the breach was measured)"
        )
        return Failed(name="RolledBack", message=str(rolled_back), data=rolled_back)
    return summary
