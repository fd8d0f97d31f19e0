"""The `promote` flow: a version that passed the policy gate waits for an approver, then becomes champion.

The wait is Prefect's `pause_flow_run(wait_for_input=ApprovalInput)`: the Prefect UI shows it as a form
on the paused run, and `potable approve` answers the same request from the CLI (`resume_flow_run`).
"""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Completed
from pydantic import Field

from core import configs
from core.alerts import FLOW_ALERT_HOOKS
from core.settings import EVENT_RESOURCE_PREFIX, MODEL_NAME, get_settings
from core.versions import CHAMPION, ModelRegistry, NotGated, UnknownVersion
from governance.audit import audit_log
from tasks.outcomes import refused

PROMOTE_FLOW = "promote"


class PromotionRefused(Exception):
    """The version may not be promoted (unknown, or it did not pass the policy gate)."""


class ApprovalInput(RunInput):
    """The approval form: who decides, what, and why."""

    approver: str = Field(min_length=1, description="Name of the person taking the decision")
    decision: Literal["approve", "reject"] = Field(description="Promote this version to champion, or not")
    comment: str = Field(default="", description="Why (kept in the audit trail)")


def check_promotable(registry: ModelRegistry, version: str) -> bool:
    """True when there is a decision to ask for; False when the version already is the champion.

    Refused: unknown versions, versions that failed the gate, and versions already decided (a decision is
    final; a new version is trained and gated instead).
    """
    try:
        record = registry.gated(version)
    except (UnknownVersion, NotGated) as exc:
        raise PromotionRefused(f"{exc}; not promoted") from exc
    if record.is_champion:
        return False
    if record.approval:
        raise PromotionRefused(f"{MODEL_NAME} v{version} was already decided ({record.approval}); not asked again")
    return True


def champion_version(registry: ModelRegistry) -> str | None:
    champion = registry.champion()
    return champion.version if champion else None


def announce(decision: str, version: str, approver: str) -> None:
    """`potable.model.promoted` (the `release` deployment's trigger) or `potable.model.rejected`."""
    emit_event(
        f"potable.model.{decision}",
        resource={"prefect.resource.id": f"{EVENT_RESOURCE_PREFIX}.{version}"},
        payload={"version": version, "approver": approver},
    )


@flow(name=PROMOTE_FLOW, log_prints=True, **FLOW_ALERT_HOOKS)
def promote(version: str):
    """Wait for an approval of `version`, then move alias `champion` to it (or leave aliases untouched)."""
    logger = get_run_logger()
    settings = get_settings()
    registry = ModelRegistry(settings)
    version = str(version)
    try:
        asked = check_promotable(registry, version)
    except PromotionRefused as exc:
        audit_log(settings).append(
            "promote-flow", "promotion_refused", {"model_version": version}, {"reason": str(exc)}
        )
        return refused(exc)
    if not asked:
        logger.info("v%s already is the champion; nothing to decide", version)
        return {"version": version, "decision": "already champion", "champion": version}
    audit = audit_log(settings)
    if settings.auto_approve:
        approval = ApprovalInput(
            approver="auto-approve (POTABLE_AUTO_APPROVE, dev setting)",
            decision="approve",
            comment="approved without a person: development setting",
        )
    else:
        logger.info(
            "v%s waits for approval: answer the form on this run in the Prefect UI, or run "
            "`potable approve --version %s --approver NAME [--reject]`",
            version,
            version,
        )
        timeout = configs.policy(settings).approval.timeout_seconds
        from tasks.governance import approval_description  # here: `potable approve` imports this module too

        # The form carries the decision's evidence (Prefect shows the description above it).
        form = ApprovalInput.with_initial_data(description=approval_description(version, settings))
        approval = pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=2, key=f"approval-v{version}")
    subject = {"model_version": version}
    details = {"approver": approval.approver, "comment": approval.comment}
    if approval.decision == "reject":
        audit.append(approval.approver, "promotion_rejected", subject, details)
        registry.record(version, approval=f"rejected by {approval.approver}")
        announce("rejected", version, approval.approver)
        outcome = {
            "version": version,
            "decision": "reject",
            "approver": approval.approver,
            "champion": champion_version(registry),
        }
        get_run_logger().warning("v%s rejected by %s: %s", version, approval.approver, approval.comment or "no comment")
        create_markdown_artifact(
            key="promotion",
            markdown=f"## v{version} rejected\n\nRejected by **{approval.approver}** "
            f"({approval.comment or 'no comment'}); champion stays "
            f"{'v' + str(outcome['champion']) if outcome['champion'] else 'none'}.",
        )
        return Completed(name="Rejected", message=f"rejected by {approval.approver}", data=outcome)
    previous = champion_version(registry)
    audit.append(approval.approver, "promotion_approved", subject, details)
    registry.move_alias(CHAMPION, version)
    registry.record(version, approval=f"approved by {approval.approver}")
    audit.append(
        approval.approver,
        "alias_moved",
        subject,
        {"alias": CHAMPION, "from_version": previous, "to_version": version},
    )
    announce("promoted", version, approval.approver)
    create_markdown_artifact(
        key="promotion",
        markdown=f"## v{version} is champion\n\nApproved by "
        f"**{approval.approver}** ({approval.comment or 'no comment'}); previous champion: "
        f"{'v' + previous if previous else 'none'}.",
    )
    return {
        "version": version,
        "decision": "approve",
        "approver": approval.approver,
        "champion": version,
        "previous_champion": previous,
    }
