"""Flow state hooks alert every destination (a webhook through Apprise, SNS, the alert log, the Prefect event
feed); the alert names the failed expectation and links the run."""

from __future__ import annotations

import time

import httpx
import pytest
from prefect.settings import PREFECT_API_URL

from core.alerts import read_log
from flows.training import BatchRejected, train

pytestmark = pytest.mark.e2e


def test_rejected_batch_alerts_every_destination_naming_the_expectation(
    prefect_api, settings, reference_frame, write_csv, alert_receiver, sns_inbox
) -> None:
    bad = reference_frame.copy()
    bad.loc[3, "Turbidity"] = 99.0
    batch = str(write_csv(bad))
    state = train(data=batch, trials=1, return_state=True)
    assert state.name == "BatchRejected" and state.is_failed()  # the runs list says what happened
    with pytest.raises(BatchRejected):
        state.result()  # calling the flow raises it, as before
    lines = _run_log(state.state_details.flow_run_id, until="Finished in state BatchRejected")
    assert [line for line in lines if line.startswith("Finished in state BatchRejected")], lines
    assert [line for line in lines if line.startswith("batch rejected by validation") and "Turbidity" in line]
    assert not [line for line in lines if "Traceback" in line], lines  # an expected refusal: one line, no trace
    assert [line for line in lines if "moved to" in line or "copy kept" in line]
    (text,) = alert_receiver.texts()
    assert text.startswith("[FAILED] train BatchRejected") and "Turbidity" in text and "/runs/flow-run/" in text
    assert alert_receiver.received[0]["type"] == "failure"
    (message,) = sns_inbox()
    assert message["Subject"] == "[potable] failed: train BatchRejected" and "Turbidity" in message["Message"]
    (logged,) = read_log(settings)
    assert logged["title"] == "train BatchRejected" and "Turbidity" in logged["reason"]
    assert _wait_for_event("potable.alert", lambda e: e["payload"]["reason"].endswith("e.g. 99.0"))
    # The test server is shared by this process's tests: this batch's event is the one naming its file.
    (rejected,) = _wait_for_event("potable.batch.rejected", lambda e: e["payload"]["source"].endswith(batch))
    assert "quarantine" in rejected["payload"]["quarantined_to"] and "Turbidity" in rejected["payload"]["failures"][0]


def _wait_for_event(name: str, matches, timeout: float = 60) -> list[dict]:
    """Events reach the server's feed shortly after they are emitted (Prefect sends them in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = {"filter": {"event": {"name": [name]}}}
        events = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body, timeout=10).json()["events"]
        if found := [e for e in events if matches(e)]:
            return found
        time.sleep(0.5)
    return []


def _run_log(flow_run_id, until: str, timeout: float = 60) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), sort=LogSort.TIMESTAMP_DESC
            )
            lines = [log.message for log in logs]
            if [line for line in lines if line.startswith(until)] or time.monotonic() > deadline:
                return lines
            time.sleep(0.5)
