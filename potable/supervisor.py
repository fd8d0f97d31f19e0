"""The platform supervisor (`potable rollout supervise`, one of `potable up`'s services).

Outside a release, a dead live slot or router is restarted (BlueGreen.repair shares the release's file
lock, so the two never act at once); each repair is audited by the target and alerted here. A dead
worker, watcher or MLflow UI is started again, and a flow run that died with its process (marked Crashed
by the heartbeat automation, see potable/crashes.py) is alerted, since its own hook could not run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from core.alerts import Alert, send_alert
from core.settings import Settings
from potable.crashes import crash_alert, load_alerted, recent, silent_crashes
from potable.platform import restart_dead


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
    crashes = CrashWatch(settings, say)
    while True:
        repaired = target.repair()
        if repaired:
            say(json.dumps(repaired))
            send_alert(alert_for(repaired), settings)
        for name in restart_dead(settings):
            say(json.dumps({"restarted": name}))
            send_alert(Alert(f"{name} restarted", "warning", reason=f"the {name} process had died"), settings)
        crashes.check()
        if once:
            return
        time.sleep(interval)


class CrashWatch:
    """Alerts each silently crashed flow run once (remembered under POTABLE_HOME/run, across restarts)."""

    def __init__(self, settings: Settings, say: Callable[[str], None], every_seconds: float = 5.0) -> None:
        self.settings, self.say, self.every = settings, say, every_seconds
        self.path = settings.home_dir / "run" / "crashes-alerted.json"
        self.alerted, self.last = load_alerted(self.path), 0.0

    def check(self) -> None:
        if time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        try:
            found = silent_crashes(recent(), self.alerted)
        except Exception as exc:  # noqa: BLE001 - the API may be restarting; the next check tries again
            self.say(f"crash check skipped: {type(exc).__name__}: {exc}")
            return
        for crash in found:
            self.say(json.dumps({"crashed": crash}))
            send_alert(crash_alert(crash), self.settings)
            self.alerted.add(crash["flow_run_id"])
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(sorted(self.alerted)), encoding="utf-8")
