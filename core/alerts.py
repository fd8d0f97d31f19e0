"""Alerts to Slack (incoming-webhook JSON) and SNS, from flow state hooks and flow outcomes.

An alert never fails the flow it reports on: every destination error is logged and swallowed.
Destinations come from settings (env) or Prefect Secret blocks, never from code:
  POTABLE_SLACK_WEBHOOK_URL, or POTABLE_SLACK_WEBHOOK_SECRET = name of a Prefect Secret holding the URL
  POTABLE_SNS_TOPIC_ARN (+ POTABLE_SNS_ENDPOINT_URL / AWS_ENDPOINT_URL for moto or LocalStack)
Prefect's SlackWebhook block only posts to hooks.slack.com, so the webhook JSON is posted with httpx:
any Slack-compatible receiver (Mattermost, a test server) works the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from core.settings import Settings, get_settings

logger = logging.getLogger(__name__)
ICONS = {"failed": ":red_circle:", "crashed": ":boom:", "completed": ":large_green_circle:"}


@dataclass(frozen=True)
class Alert:
    """One thing a human should know about: what happened, where to look, why."""

    title: str
    status: str  # failed | crashed | completed | warning
    flow: str = ""
    run_url: str = ""
    reason: str = ""
    model_version: str = ""
    details: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"[{self.status.upper()}] {self.title}"]
        lines += [f"{k}: {v}" for k, v in self.fields().items()]
        return "\n".join(lines + ([f"reason: {self.reason}"] if self.reason else []))

    def fields(self) -> dict[str, str]:
        known = {"flow": self.flow, "model version": self.model_version, "run": self.run_url}
        return {k: v for k, v in (known | self.details).items() if v}


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack incoming-webhook JSON: `text` for notifications, `blocks` for the message itself."""
    icon = ICONS.get(alert.status, ":warning:")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in alert.fields().items()][:10],
        },
    ]
    if alert.reason:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*reason*\n```{alert.reason[:2900]}```"}})
    if alert.run_url:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{alert.run_url}|open the run in Prefect>"}]}
        )
    return {"text": f"{icon} {alert.text()}"[:3000], "blocks": blocks}


def slack_webhook_url(settings: Settings) -> str | None:
    if settings.slack_webhook_url:
        return settings.slack_webhook_url.get_secret_value()
    if settings.slack_webhook_secret:
        from prefect.blocks.system import Secret

        return str(Secret.load(settings.slack_webhook_secret).get())
    return None


def post_to_slack(alert: Alert, settings: Settings) -> bool:
    url = slack_webhook_url(settings)
    if not url:
        return False
    response = httpx.post(url, json=slack_payload(alert), timeout=settings.alert_timeout_seconds)
    response.raise_for_status()
    return True


def publish_to_sns(alert: Alert, settings: Settings) -> bool:
    if not settings.sns_topic_arn:
        return False
    import boto3
    from botocore.config import Config

    timeout = settings.alert_timeout_seconds
    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2})
    sns = boto3.client("sns", region_name=settings.aws_region, endpoint_url=settings.sns_endpoint_url, config=config)
    subject = f"[potable] {alert.status}: {alert.title}"
    # SNS subjects: ASCII, no newlines, at most 100 characters.
    subject = subject.encode("ascii", "replace").decode().replace("\n", " ")[:100]
    sns.publish(TopicArn=settings.sns_topic_arn, Subject=subject, Message=alert.text())
    return True


def send_alert(alert: Alert, settings: Settings | None = None) -> dict[str, bool]:
    """Send to every configured destination; returns which ones took it. Never raises."""
    settings = settings or get_settings()
    sent: dict[str, bool] = {}
    for name, send in (("slack", post_to_slack), ("sns", publish_to_sns)):
        try:
            sent[name] = send(alert, settings)
        except Exception as exc:  # an alert must never fail the flow it reports on
            logger.warning("alert to %s failed (%s: %s): %s", name, type(exc).__name__, exc, alert.title)
            sent[name] = False
    return sent


def flow_run_url(flow_run: Any) -> str:
    """Deep link to the run in the Prefect UI (PREFECT_UI_URL, else derived from the API URL)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    ui = PREFECT_UI_URL.value() or (PREFECT_API_URL.value() or "").removesuffix("/api")
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run.id}" if ui else str(flow_run.id)


def _summary(state: Any) -> dict[str, Any]:
    try:
        result = state.result(raise_on_failure=False)
    except Exception:  # result not retrievable (not persisted): the alert goes out without it
        return {}
    return result if isinstance(result, dict) else {}


def alert_from_state(flow: Any, flow_run: Any, state: Any) -> Alert:
    """What a flow run's final state says, in words: status, reason, model version and gate outcome."""
    status = "crashed" if state.is_crashed() else "failed" if state.is_failed() else "completed"
    summary = _summary(state) if status == "completed" else {}
    details = {"run name": flow_run.name}
    if "gate_passed" in summary:
        details["policy gate"] = "passed" if summary["gate_passed"] else f"FAILED: {summary.get('gate_failures')}"
    for key in ("bento_tag", "data"):
        if summary.get(key):
            details[key.replace("_", " ")] = str(summary[key])
    if isinstance(summary.get("batch"), dict) and summary["batch"].get("source"):
        details["batch"] = str(summary["batch"]["source"])
    if summary.get("dataset_version") is not None:
        details["table version"] = str(summary["dataset_version"])
    named = getattr(state, "name", None)  # GateFailed, Rejected, Unchanged: an outcome that says "no" says it
    title = (
        f"{flow.name} {named}"
        if status == "completed" and named not in (None, "Completed")
        else f"{flow.name} {status}"
    )
    return Alert(
        title=title,
        status=status,
        flow=flow.name,
        run_url=flow_run_url(flow_run),
        reason=(state.message or "") if status != "completed" else "",
        model_version=str(summary.get("model_version") or flow_run.parameters.get("version") or ""),
        details=details,
    )


def alert_on_final_state(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect state hook (on_completion / on_failure / on_crashed)."""
    send_alert(alert_from_state(flow, flow_run, state))


FLOW_ALERT_HOOKS: dict[str, list] = {
    "on_completion": [alert_on_final_state],
    "on_failure": [alert_on_final_state],
    "on_crashed": [alert_on_final_state],
}
