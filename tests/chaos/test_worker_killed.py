"""A Prefect worker killed mid-training, with the flow run it started (a machine gone), under `potable up`.

Nothing in the dead run can report, so this is where Prefect's heartbeats, the crash automation `potable up`
registers and the supervisor must do the work: the run ends Crashed, the alert fires, nothing is
half-registered, the worker comes back, and the next run completes.
"""

from __future__ import annotations

import json
import signal
import time

import httpx
import psutil
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import AlertReceiver, free_port
from tests.figures import figure
from tests.journey.conftest import User, user_environment
from tests.journey.test_platform_loop import _wait

pytestmark = pytest.mark.journey


@pytest.fixture
def platform(tmp_path):
    fresh_home = tmp_path / "potable-home"
    receiver = AlertReceiver()
    prefect_port = free_port()
    env = user_environment(
        POTABLE_HOME=str(fresh_home),
        POTABLE_PREFECT_PORT=str(prefect_port),
        POTABLE_MLFLOW_PORT=str(free_port()),
        POTABLE_REPORTS_PORT=str(free_port()),
        POTABLE_WORKER_POLL_SECONDS="1",
        POTABLE_START_TIMEOUT_SECONDS="300",
        POTABLE_ALERT_URLS=receiver.url,
    )
    user = User(env)
    user.run("potable", "up")
    try:
        yield {"user": user, "home": fresh_home, "api": f"http://127.0.0.1:{prefect_port}/api", "alerts": receiver}
    finally:
        user.run("potable", "down")
        receiver.stop()


def _start_train(api: str, trials: int) -> str:
    deployment = httpx.get(f"{api}/deployments/name/train/train", timeout=10).json()
    body = {"parameters": {"trials": trials}}
    for _ in range(5):  # 503 while the server's SQLite is busy: retried, as Prefect's own client does
        started = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run", json=body, timeout=30)
        if started.status_code != 503:
            break
        time.sleep(2)
    assert started.status_code == 201, started.text
    return started.json()["id"]


def _state(api: str, run_id: str) -> str:
    return httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state_type"]


def _heartbeats(api: str, run_id: str) -> int:
    body = {
        "filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "any_resource": {"id": [f"prefect.flow-run.{run_id}"]},
        }
    }
    return len(httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"])


def _kill_tree(pid: int) -> None:
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        process.send_signal(signal.SIGKILL)


def test_a_worker_killed_mid_training_crashes_the_run_alerts_and_the_next_run_completes(platform) -> None:
    api, home, alerts = platform["api"], platform["home"], platform["alerts"]
    run_id = _start_train(api, trials=500)  # long enough to be mid-tuning when the machine "dies"
    _wait(lambda: _state(api, run_id) == "RUNNING" and _heartbeats(api, run_id) > 0, 300, "a running, beating run")
    time.sleep(5)
    worker = json.loads((home / "run" / "worker.json").read_text())
    _kill_tree(worker["pid"])  # the worker and the flow run it started, as when its machine goes
    killed = time.monotonic()

    assert _wait(lambda: _state(api, run_id) == "CRASHED", 300, "the run marked Crashed", interval=2)
    crashed_after = time.monotonic() - killed
    alert = _wait(lambda: [t for t in alerts.texts() if "train crashed" in t], 60, "the crash alert")
    alerted_after = time.monotonic() - killed
    assert run_id in alert[0] and "heartbeat" in alert[0]
    tracking = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    assert tracking.search_model_versions() == []  # nothing half-registered

    restarted = _wait(
        lambda: (r := json.loads((home / "run" / "worker.json").read_text()))["pid"] != worker["pid"] and r,
        60,
        "the supervisor restarting the worker",
    )
    assert psutil.pid_exists(restarted["pid"])
    assert [t for t in alerts.texts() if "worker restarted" in t]
    next_run = _start_train(api, trials=2)
    final = _wait(lambda: (s := _state(api, next_run)) in ("COMPLETED", "FAILED", "CRASHED") and s, 600, "next run")
    assert final == "COMPLETED"
    assert len(tracking.search_model_versions()) == 1
    assert "intact" in platform["user"].run("potable", "audit", "verify").stdout
    figure(
        f"\nworker killed mid-training: Crashed after {crashed_after:.0f} s, alert after {alerted_after:.0f} s, "
        f"worker back, next run completed"
    )
