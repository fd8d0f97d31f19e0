"""Alerts: Slack webhook JSON and SNS messages say what happened; a broken destination never raises."""

from __future__ import annotations

from types import SimpleNamespace

from core.alerts import Alert, alert_from_state, send_alert, slack_payload
from core.settings import Settings

ALERT = Alert(
    title="train failed",
    status="failed",
    flow="train",
    run_url="http://127.0.0.1:4200/runs/flow-run/abc",
    reason="batch rejected by validation:\n  - ph: values outside [0, 14], e.g. 15.2",
    model_version="",
    details={"run name": "calm-otter"},
)


def test_slack_payload_has_text_and_blocks_naming_flow_reason_and_link() -> None:
    payload = slack_payload(ALERT)
    assert payload["text"].startswith(":red_circle: [FAILED] train failed") and "15.2" in payload["text"]
    kinds = [block["type"] for block in payload["blocks"]]
    assert kinds == ["header", "section", "section", "context"]
    assert "ph: values outside" in payload["blocks"][2]["text"]["text"]
    assert "http://127.0.0.1:4200/runs/flow-run/abc" in payload["blocks"][3]["elements"][0]["text"]


def test_alert_reaches_slack_and_sns(slack_receiver, sns_inbox, settings) -> None:
    sent = send_alert(ALERT, Settings())
    assert sent == {"slack": True, "sns": True}
    assert "ph: values outside [0, 14]" in slack_receiver.texts()[0]
    (message,) = sns_inbox()
    assert message["Subject"] == "[potable] failed: train failed"
    assert "ph: values outside [0, 14]" in message["Message"]


def test_unconfigured_destinations_are_skipped(settings, monkeypatch) -> None:
    for name in ("POTABLE_SLACK_WEBHOOK_URL", "POTABLE_SLACK_WEBHOOK_SECRET", "POTABLE_SNS_TOPIC_ARN"):
        monkeypatch.delenv(name, raising=False)
    assert send_alert(ALERT, Settings()) == {"slack": False, "sns": False}


def test_broken_destinations_are_logged_never_raised(slack_receiver, settings, monkeypatch, caplog) -> None:
    slack_receiver.status = 500
    monkeypatch.setenv("POTABLE_SNS_TOPIC_ARN", "arn:aws:sns:us-east-1:000000000000:missing")
    monkeypatch.setenv("POTABLE_SNS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("POTABLE_ALERT_TIMEOUT_SECONDS", "2")
    assert send_alert(ALERT, Settings()) == {"slack": False, "sns": False}
    assert "alert to slack failed" in caplog.text and "alert to sns failed" in caplog.text


def test_state_becomes_an_alert_with_gate_outcome_and_version() -> None:
    summary = {"model_version": "7", "gate_passed": False, "gate_failures": ["min_test_roc_auc"]}
    state = SimpleNamespace(
        is_crashed=lambda: False, is_failed=lambda: False, message="", result=lambda raise_on_failure: summary
    )
    run = SimpleNamespace(id="r1", name="calm-otter", parameters={})
    alert = alert_from_state(SimpleNamespace(name="train"), run, state)
    assert alert.status == "completed" and alert.model_version == "7"
    assert alert.details["policy gate"] == "FAILED: ['min_test_roc_auc']"
