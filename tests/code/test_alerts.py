"""Alerts: every destination says what happened (alert log, webhook through Apprise, SNS); with nothing set up
they still land in the alert log; a broken destination never raises."""

from __future__ import annotations

from types import SimpleNamespace

from core.alerts import Alert, alert_from_state, destinations, notification_urls, read_log, send_alert
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


def test_alert_reaches_the_log_a_webhook_and_sns(alert_receiver, sns_inbox, settings) -> None:
    sent = send_alert(ALERT, Settings())
    sent.pop("prefect")  # the Prefect event feed is asserted where a Prefect server runs (tests/e2e)
    assert sent == {"log": True, "json": True, "sns": True}
    (posted,) = alert_receiver.received
    assert posted["title"] == "[FAILED] train failed" and posted["type"] == "failure"
    assert "ph: values outside [0, 14]" in posted["message"] and "flow-run/abc" in posted["message"]
    (message,) = sns_inbox()
    assert message["Subject"] == "[potable] failed: train failed"
    assert "ph: values outside [0, 14]" in message["Message"]
    (logged,) = read_log(Settings())
    assert logged["title"] == "train failed" and logged["status"] == "failed" and logged["at"]


def test_with_nothing_set_up_alerts_still_land_in_the_alert_log(settings, monkeypatch) -> None:
    for name in (
        "POTABLE_ALERT_URLS",
        "POTABLE_SLACK_WEBHOOK_URL",
        "POTABLE_SLACK_WEBHOOK_SECRET",
        "POTABLE_SNS_TOPIC_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    sent = send_alert(ALERT, Settings())
    assert sent["log"] and set(sent) == {"log", "prefect"}
    assert [a["title"] for a in read_log(Settings())] == ["train failed"]
    assert destinations(Settings())[0].startswith("alert log ")


def test_a_slack_webhook_setting_is_one_more_apprise_url_and_never_printed(settings, monkeypatch) -> None:
    hook = "https://hooks.slack.com/services/T000/B000/SECRETTOKEN"
    monkeypatch.setenv("POTABLE_SLACK_WEBHOOK_URL", hook)
    monkeypatch.setenv("POTABLE_ALERT_URLS", "mailto://ops:pw@example.org, json://127.0.0.1:9/x")
    assert notification_urls(Settings()) == ["mailto://ops:pw@example.org", "json://127.0.0.1:9/x", hook]
    where = " ".join(destinations(Settings()))
    assert "mailto" in where and "slack" in where and "SECRETTOKEN" not in where and "pw" not in where


def test_broken_destinations_are_logged_never_raised(alert_receiver, settings, monkeypatch, caplog) -> None:
    alert_receiver.status = 500
    monkeypatch.setenv("POTABLE_ALERT_URLS", f"{alert_receiver.url},notaservice://nowhere")
    monkeypatch.setenv("POTABLE_SNS_TOPIC_ARN", "arn:aws:sns:us-east-1:000000000000:missing")
    monkeypatch.setenv("POTABLE_SNS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("POTABLE_ALERT_TIMEOUT_SECONDS", "2")
    sent = send_alert(ALERT, Settings())
    sent.pop("prefect")
    assert sent == {"log": True, "json": False, "notaservice": False, "sns": False}
    assert "alert to json was not accepted" in caplog.text and "alert to sns failed" in caplog.text
    assert "not a notification URL Apprise knows (notaservice://" in caplog.text


def test_state_becomes_an_alert_with_gate_outcome_and_version() -> None:
    summary = {"model_version": "7", "gate_passed": False, "gate_failures": ["min_test_roc_auc"]}
    state = SimpleNamespace(
        is_crashed=lambda: False, is_failed=lambda: False, message="", result=lambda raise_on_failure: summary
    )
    run = SimpleNamespace(id="r1", name="calm-otter", parameters={})
    alert = alert_from_state(SimpleNamespace(name="train"), run, state)
    assert alert.status == "completed" and alert.model_version == "7"
    assert alert.details["policy gate"] == "FAILED: ['min_test_roc_auc']"
