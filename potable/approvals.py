"""Answering a waiting promotion from the CLI: find the paused `promote` run, resume it with the input."""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from flows.promotion import PROMOTE_FLOW, ApprovalInput


def waiting_promotion(version: str) -> UUID:
    """The paused `promote` run of this version (the newest one if several wait)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[PROMOTE_FLOW])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            ),
        )
    waiting = [r for r in runs if str(r.parameters.get("version")) == str(version)]
    if not waiting:
        raise LookupError(f"no promotion of v{version} is waiting for approval")
    return max(waiting, key=lambda r: r.created).id


def answer_promotion(version: str, approver: str, decision: str, comment: str = "") -> UUID:
    answer = ApprovalInput(approver=approver, decision=decision, comment=comment)  # validated before sending
    run_id = waiting_promotion(version)
    resume_flow_run(run_id, run_input=answer.model_dump())
    return run_id


def evidence(version: str) -> str:
    """The same evidence the form in the Prefect UI shows (rendered from what the gate recorded)."""
    from core.settings import get_settings
    from tasks.governance import approval_description

    try:
        return approval_description(version, get_settings())
    except Exception as exc:  # noqa: BLE001 - a version gated before evidence was recorded still gets listed
        return f"(no recorded evidence: {exc})"


def pending_approvals() -> list[dict[str, str]]:
    """Every paused `promote` run: version, test metrics from the registry, since when, its UI page."""
    from core.alerts import flow_run_url
    from core.settings import get_settings
    from core.versions import ModelRegistry

    registry = ModelRegistry(get_settings())
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[PROMOTE_FLOW])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            ),
        )
    pending = []
    for run in sorted(runs, key=lambda r: r.created):
        version = str(run.parameters.get("version"))
        metrics = registry.get(version).metrics
        pending.append(
            {
                "version": version,
                "since": run.state.timestamp.isoformat(timespec="seconds") if run.state else "",
                "roc_auc": f"{metrics['roc_auc']:.4f}" if "roc_auc" in metrics else "?",
                "false_potable_rate": f"{metrics['false_potable_rate']:.4f}"
                if "false_potable_rate" in metrics
                else "?",
                "url": flow_run_url(run),
                "flow_run_id": str(run.id),
                "evidence": evidence(version),
            }
        )
    return pending
