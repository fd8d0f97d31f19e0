"""`potable up` as a user runs it: a CSV dropped into the landing folder goes live by itself (arrival → train →
gated → promote → promoted → release), a run started through the API as the UI's "Run" button does follows
the same chain, and a live slot that dies is brought back by the supervisor."""

from __future__ import annotations

import json
import shutil
import signal
import time

import httpx
import psutil
import pytest
import yaml

from core.settings import BUNDLED_DATA, CONFIG_DIR
from tests.conftest import AlertReceiver, free_port
from tests.figures import figure
from tests.journey.conftest import User, release_config, router_version, user_environment

pytestmark = pytest.mark.journey
CHAIN = ("s3.object.created", "potable.model.gated", "potable.model.promoted", "potable.release.released")


def _wait(condition, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = condition()
        except (httpx.HTTPError, AssertionError, OSError, KeyError):
            found = None
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _events(api: str, names: tuple[str, ...]) -> list[dict]:
    body = {"filter": {"event": {"name": list(names)}}, "limit": 50}
    return httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"]


def _click_run(api: str, deployment: str) -> str:
    """What the UI's "Run" button does; a busy SQLite-backed server answers 503 now and then, as a user would
    see and click again."""
    found = httpx.get(f"{api}/deployments/name/{deployment}", timeout=10).json()
    for _ in range(10):
        started = httpx.post(f"{api}/deployments/{found['id']}/create_flow_run", json={"parameters": {}}, timeout=30)
        if started.status_code != 503:
            break
        time.sleep(3)
    assert started.status_code == 201, started.text
    return started.json()["id"]


def _run_states(api: str, flow: str) -> list[str]:
    body = {"flows": {"name": {"any_": [flow]}}}
    return [r["state_type"] for r in httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()]


@pytest.fixture
def platform(fresh_home, tmp_path):
    config = release_config(tmp_path, window_seconds=6)
    training = yaml.safe_load((CONFIG_DIR / "training.yaml").read_text())
    training["tuning"]["n_trials"] = 2
    (tmp_path / "training.yaml").write_text(yaml.safe_dump(training))
    prefect_port = free_port()
    alerts = AlertReceiver()
    env = user_environment(
        POTABLE_HOME=str(fresh_home),
        POTABLE_AUTO_APPROVE="1",  # the README's development setting: the chain runs without a person
        POTABLE_RELEASE_CONFIG=str(config),
        POTABLE_TRAINING_CONFIG=str(tmp_path / "training.yaml"),
        POTABLE_PREFECT_PORT=str(prefect_port),
        POTABLE_MLFLOW_PORT=str(free_port()),
        POTABLE_REPORTS_PORT=str(free_port()),
        POTABLE_WATCH_INTERVAL_SECONDS="1",
        POTABLE_WORKER_POLL_SECONDS="1",
        POTABLE_START_TIMEOUT_SECONDS="300",
        POTABLE_ALERT_URLS=alerts.url,  # a documented setting: alerts also go to this (local) webhook
    )
    user = User(env)
    user.run("potable", "up")
    try:
        api = f"http://127.0.0.1:{prefect_port}/api"
        yield {"user": user, "home": fresh_home, "config": config, "api": api, "alerts": alerts}
    finally:
        user.run("potable", "down")
        alerts.stop()


def test_a_dropped_csv_goes_live_and_a_killed_slot_comes_back(platform) -> None:
    home, config, api = platform["home"], platform["config"], platform["api"]
    _wait(lambda: (home / "run" / "watcher-state.json").exists(), 120, "the watcher's first poll")
    dropped = time.monotonic()
    shutil.copy(BUNDLED_DATA, home / "landing" / "lab-batch-1.csv")
    _wait(lambda: router_version(config) == "1", 600, "v1 live through the router")
    figure(f"\nCSV dropped → v1 answering through the router: {time.monotonic() - dropped:.0f} s")
    _wait(lambda: _run_states(api, "release") == ["COMPLETED"], 120, "the release run to pass its watch window")
    assert "COMPLETED" in _run_states(api, "promote")
    names = _wait(lambda: {e["event"] for e in _events(api, CHAIN)} >= set(CHAIN) and CHAIN, 30, "the chain's events")
    assert names == CHAIN

    # The UI's "Run" button: a flow run of deployment train/train created through the API.
    _click_run(api, "train/train")
    _wait(lambda: router_version(config) == "2", 600, "v2 live through the router")
    both = ["COMPLETED", "COMPLETED"]
    _wait(lambda: _run_states(api, "release") == both, 120, "v2's release to pass its watch window")

    # A real fault outside a release: the live slot's server and workers are killed.
    state = json.loads((home / "release" / "state.json").read_text())
    live = state["slots"][state["live"]]
    root = psutil.Process(live["pid"])
    for process in [root, *root.children(recursive=True)]:
        process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    _wait(lambda: router_version(config) == "2", 300, "the supervisor bringing the live slot back", interval=0.5)
    figure(f"live slot killed → answering again: {time.monotonic() - killed:.1f} s")
    audit = home / "audit" / "audit.jsonl"
    _wait(lambda: "slot_restarted" in audit.read_text(), 30, "the restart in the audit trail", interval=0.2)
    restarted = f"live slot {state['live']} restarted"
    _wait(lambda: [t for t in platform["alerts"].texts() if restarted in t], 30, "the restart alert", interval=0.2)
    assert "intact" in platform["user"].run("potable", "audit", "verify").stdout


def test_the_release_deployment_run_from_the_api_in_a_fresh_process(platform) -> None:
    """What failed last round: `release` started from the UI on the worker, after a CLI train and promotion."""
    user, config, api = platform["user"], platform["config"], platform["api"]
    first = user.json("train", "--trials", "2")  # under `potable up`: reports to its server
    _wait(lambda: router_version(config) == first["model_version"], 600, "the chain releasing the CLI's version")
    run_id = _click_run(api, "release/release")

    def final() -> str | None:
        state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state_type"]
        return state if state in ("COMPLETED", "FAILED", "CRASHED") else None

    assert _wait(final, 400, "the release run started through the API") == "COMPLETED"
    assert router_version(config) == first["model_version"]
