"""The platform supervisor (`potable rollout supervise`, one of `potable up`'s services).

Outside a release, a dead live slot or router is restarted (BlueGreen.repair shares the release's file
lock, so the two never act at once); each repair is audited by the target and alerted here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from core.alerts import Alert, send_alert
from core.settings import Settings


def alert_for(repaired: dict[str, Any]) -> Alert:
    restarted = repaired.get("restarted", True)
    return Alert(
        title=f"live slot {repaired['slot']} {'restarted' if restarted else 'could not be restarted'}",
        status="warning" if restarted else "failed",
        model_version=str(repaired.get("version", "")),
        reason=json.dumps(repaired),
    )


def supervise(target: Any, settings: Settings, interval: float, once: bool, say: Callable[[str], None]) -> None:
    """Check every `interval` seconds (once: a single check) and repair what died."""
    while True:
        repaired = target.repair()
        if repaired:
            say(json.dumps(repaired))
            send_alert(alert_for(repaired), settings)
        if once:
            return
        time.sleep(interval)
