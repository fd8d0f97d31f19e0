"""Runs whose process died with its machine: marked Crashed by a Prefect automation, alerted by the supervisor.

A flow run's own `on_crashed` hook only runs while its process lives. When the worker (and the run with it)
is killed, nothing in the run can report: Prefect's flow-run heartbeats and a proactive automation that
expects the next beat turn silence into a Crashed state (Prefect's documented zombie detection), and the
supervisor, which outlives workers, sends the alert the dead hook could not.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from core.alerts import Alert
from core.settings import Settings

AUTOMATION_NAME = "potable: crash silent flow runs"
SILENT_MESSAGE = "no heartbeat from the flow run's process"


def silence_window(settings: Settings) -> int:
    """Two missed beats and a margin: a busy machine delays a beat, it does not drop two."""
    return 2 * settings.flow_heartbeat_seconds + 15


def crash_automation(settings: Settings) -> dict[str, Any]:
    window = silence_window(settings)
    return {
        "name": AUTOMATION_NAME,
        "description": "Marks a flow run Crashed when its heartbeats stop (worker or machine gone).",
        "enabled": True,
        "trigger": {
            "type": "event",
            "posture": "Proactive",
            "after": ["prefect.flow-run.heartbeat"],
            "expect": ["prefect.flow-run.heartbeat"]
            + [f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed", "Paused")],
            "match": {"prefect.resource.id": ["prefect.flow-run.*"]},
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": window,
        },
        "actions": [
            {"type": "change-flow-run-state", "state": "CRASHED", "message": f"{SILENT_MESSAGE} for {window} s"}
        ],
    }


def ensure_crash_automation(settings: Settings) -> None:
    """Create or update the automation (idempotent: `potable up` runs this every start)."""
    from prefect.automations import Automation

    wanted = Automation.model_validate(crash_automation(settings))
    try:
        existing = Automation.read(name=AUTOMATION_NAME)
    except ValueError:  # not found
        wanted.create()
        return
    wanted.id = existing.id
    wanted.update()


def silent_crashes(since: datetime, known: set[str]) -> list[dict[str, Any]]:
    """Flow runs the automation marked Crashed since `since` (not those whose own hook already reported),
    leaving out the `known` ones before asking the API for their flow's name."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    crashed = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED])))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=crashed, limit=50)
        found = []
        for run in runs:
            state = run.state
            if state is None or SILENT_MESSAGE not in (state.message or "") or state.timestamp < since:
                continue
            if str(run.id) in known:
                continue
            flow = client.read_flow(run.flow_id)
            found.append({"flow_run_id": str(run.id), "flow": flow.name, "run": run.name, "message": state.message})
        return found


def crash_alert(crash: dict[str, Any]) -> Alert:
    return Alert(
        title=f"{crash['flow']} crashed",
        status="crashed",
        flow=crash["flow"],
        reason=f"flow run {crash['run']} ({crash['flow_run_id']}): {crash['message']}",
    )


def recent(minutes: float = 30) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


def load_alerted(path) -> set[str]:
    try:
        return set(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return set()
