"""Alerts: what a person should know, sent where they will see it, from flow state hooks and flow outcomes.

Every alert lands, with no set-up at all, in two places a user already has open:
  - the alert log <home>/logs/alerts.jsonl, which `potable alerts` lists (`--follow` keeps a terminal on it);
  - the Prefect UI's event feed, as a `potable.alert` event (when a Prefect API is configured).
Destinations beyond those are notification URLs handed to Apprise (the library Prefect's own notification
blocks use), so Slack, Teams, e-mail or any webhook is a setting, not code of ours:
  POTABLE_ALERT_URLS  Apprise URLs, comma-separated: https://hooks.slack.com/services/…, slack://…, mailto://…,
                      msteams://…, json://host/path (any webhook; JSON with title, message, type)
  POTABLE_ALERT_URLS_SECRET  name of a Prefect Secret block holding them (production)
  POTABLE_SLACK_WEBHOOK_URL / POTABLE_SLACK_WEBHOOK_SECRET  a Slack incoming webhook (one more Apprise URL)
SNS is published with boto3: Apprise signs its SNS requests for AWS's own hosts only, and our tests and
LocalStack users point the endpoint elsewhere (POTABLE_SNS_TOPIC_ARN + POTABLE_SNS_ENDPOINT_URL).
An alert never fails the flow it reports on: every destination error is logged and swallowed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.settings import Settings, get_settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """One thing a human should know about: what happened, where to look, why."""

    title: str
    status: str  # failed | crashed | completed | warning (an outcome that means "no": GateFailed, Rejected)
    flow: str = ""
    run_url: str = ""
    reason: str = ""
    model_version: str = ""
    details: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"[{self.status.upper()}] {self.title}"]
        lines += [f"{k}: {v}" for k, v in self.fields().items()]
        return "\n".join(lines + ([f"reason: {self.reason}"] if self.reason else []))

    def body(self) -> str:
        """The text without its title line (notification services show the title apart)."""
        return self.text().split("\n", 1)[1] if "\n" in self.text() else ""

    def fields(self) -> dict[str, str]:
        known = {"flow": self.flow, "model version": self.model_version, "run": self.run_url}
        return {k: v for k, v in (known | self.details).items() if v}


def alert_log_path(settings: Settings) -> Path:
    return settings.home_dir / "logs" / "alerts.jsonl"


def write_to_log(alert: Alert, settings: Settings) -> bool:
    """One JSON line per alert, appended in one write (several processes alert at once)."""
    path = alert_log_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"at": datetime.now(UTC).isoformat(timespec="seconds"), **asdict(alert)}) + "\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line.encode("utf-8"))
    finally:
        os.close(descriptor)
    return True


def read_log(settings: Settings) -> list[dict[str, Any]]:
    path = alert_log_path(settings)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def emit_to_prefect(alert: Alert, settings: Settings) -> bool:
    """A `potable.alert` event: the Prefect UI's event feed shows it, automations can act on it."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return False
    from prefect.events import emit_event

    resource = {
        "prefect.resource.id": f"potable.alert.{alert.flow or 'platform'}",
        "prefect.resource.name": alert.title,
    }
    return emit_event(event="potable.alert", resource=resource, payload=asdict(alert)) is not None


def notification_urls(settings: Settings) -> list[str]:
    """Apprise URLs from the settings (or the Prefect Secret blocks they name), in the order given."""
    found: list[str] = []
    for value, secret in (
        (settings.alert_urls, settings.alert_urls_secret),
        (settings.slack_webhook_url, settings.slack_webhook_secret),
    ):
        if value is not None:
            found += value.get_secret_value().replace("\n", ",").split(",")
        elif secret:
            from prefect.blocks.system import Secret

            found += str(Secret.load(secret).get()).replace("\n", ",").split(",")
    return [url.strip() for url in found if url.strip()]


def destination_name(url: str) -> str:
    """What a URL is, without its secrets: its scheme (and host for web hooks)."""
    scheme, _, rest = url.partition("://")
    if scheme in ("http", "https"):
        return "slack" if ".slack" in rest.split("/", 1)[0] else "webhook"
    return scheme


def notify_with_apprise(alert: Alert, url: str, settings: Settings) -> bool:
    import apprise

    kind = {"failed": apprise.NotifyType.FAILURE, "crashed": apprise.NotifyType.FAILURE}
    kind |= {"completed": apprise.NotifyType.SUCCESS}
    # Apprise's connect/read timeouts are URL arguments (cto/rto); a URL that sets its own keeps them.
    timeout = f"cto={settings.alert_timeout_seconds:g}&rto={settings.alert_timeout_seconds:g}"
    url = url if "rto=" in url else f"{url}{'&' if '?' in url else '?'}{timeout}"
    sender = apprise.Apprise()
    if not sender.add(url):
        raise ValueError(f"not a notification URL Apprise knows ({destination_name(url)}://…)")
    return bool(
        sender.notify(
            title=f"[{alert.status.upper()}] {alert.title}",
            body=alert.body() or alert.title,
            notify_type=kind.get(alert.status, apprise.NotifyType.WARNING),
            body_format=apprise.NotifyFormat.TEXT,
        )
    )


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


def _attempt(sent: dict[str, bool], name: str, send, *args) -> None:
    try:
        sent[name] = bool(send(*args))
    except Exception as exc:  # an alert must never fail the flow it reports on
        logger.warning("alert to %s failed (%s: %s): %s", name, type(exc).__name__, exc, args[0].title)
        sent[name] = False


def send_alert(alert: Alert, settings: Settings | None = None) -> dict[str, bool]:
    """Send to the alert log, the Prefect event feed and every configured destination; returns which took
    it (a destination that answered with an error is logged, named, and False). Never raises."""
    settings = settings or get_settings()
    sent: dict[str, bool] = {}
    _attempt(sent, "log", write_to_log, alert, settings)
    _attempt(sent, "prefect", emit_to_prefect, alert, settings)
    try:
        urls = notification_urls(settings)
    except Exception as exc:  # a Secret block that cannot be read: the other destinations still get it
        logger.warning("alert destinations could not be read (%s: %s)", type(exc).__name__, exc)
        urls = []
    for url in urls:
        _attempt(sent, destination_name(url), notify_with_apprise, alert, url, settings)
        if not sent[destination_name(url)]:
            logger.warning("alert to %s was not accepted: %s", destination_name(url), alert.title)
    if settings.sns_topic_arn:
        _attempt(sent, "sns", publish_to_sns, alert, settings)
    return sent


def destinations(settings: Settings) -> list[str]:
    """Where alerts go, in words (for `potable up` and `potable status`); never prints a secret."""
    where = [f"alert log {alert_log_path(settings)} (`potable alerts`)", "Prefect UI event feed (potable.alert)"]
    try:
        where += [destination_name(url) for url in notification_urls(settings)]
    except Exception:  # noqa: BLE001 - an unreadable Secret block is named, not raised, here
        where.append("(notification URLs in a Prefect Secret block that could not be read)")
    return where + (["SNS " + settings.sns_topic_arn] if settings.sns_topic_arn else [])


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
    generic = (None, "Completed", "Failed", "Crashed")
    title = f"{flow.name} {named}" if named not in generic else f"{flow.name} {status}"
    return Alert(
        title=title,
        status="warning" if status == "completed" and named in NO_OUTCOMES else status,
        flow=flow.name,
        run_url=flow_run_url(flow_run),
        reason=(state.message or "") if status != "completed" else "",
        model_version=str(summary.get("model_version") or flow_run.parameters.get("version") or ""),
        details=details,
    )


# Completed runs whose outcome means "no": alerted as warnings, never in the green of a success.
NO_OUTCOMES = ("GateFailed", "Rejected", "RolledBack")


def alert_on_final_state(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect state hook (on_completion / on_failure / on_crashed)."""
    send_alert(alert_from_state(flow, flow_run, state))


FLOW_ALERT_HOOKS: dict[str, list] = {
    "on_completion": [alert_on_final_state],
    "on_failure": [alert_on_final_state],
    "on_crashed": [alert_on_final_state],
}
