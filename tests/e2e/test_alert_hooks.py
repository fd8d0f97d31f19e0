"""Flow state hooks alert Slack and SNS; the alert names the failed expectation."""

from __future__ import annotations

import pytest

from flows.training import BatchRejected, train

pytestmark = pytest.mark.e2e


def test_rejected_batch_alerts_slack_and_sns_naming_the_expectation(
    prefect_api, settings, reference_frame, write_csv, slack_receiver, sns_inbox
) -> None:
    bad = reference_frame.copy()
    bad.loc[3, "Turbidity"] = 99.0
    with pytest.raises(BatchRejected):
        train(data=str(write_csv(bad)), trials=1)
    (text,) = slack_receiver.texts()
    assert text.startswith(":red_circle: [FAILED] train failed") and "Turbidity" in text
    assert "/runs/flow-run/" in slack_receiver.received[0]["blocks"][-1]["elements"][0]["text"]
    (message,) = sns_inbox()
    assert message["Subject"] == "[potable] failed: train failed" and "Turbidity" in message["Message"]
